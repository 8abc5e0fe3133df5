"""Which build of the engine extension `import server._engine` loads.

`make build` builds the engine twice: for the x86-64 baseline (maturin's build, which
runs on any x86-64 CPU) and for x86-64-v4 (AVX-512), which applies the standard
benchmark's batches 3-4 % faster (docs/engine.md, Performance) but faults with an
illegal instruction on CPUs without AVX-512 (AMD Zen 2 and 3, many Intel client
parts). So the choice is made when the engine is first imported, from the CPU's flags:
the v4 build when the CPU has every feature it was compiled for and the file is there,
else the baseline. `ORDERS_ENGINE_BUILD` overrides it: `baseline` (always the portable
build, e.g. to compare builds like with like), `x86-64-v4` (that build or an error),
`auto` (the default).

`server/__init__.py` installs `EngineBuildFinder`, so both `import server._engine` and
`from server import _engine` go through the choice.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

ENV_VAR = "ORDERS_ENGINE_BUILD"
MODULE = "server._engine"
BASELINE = "baseline"
WIDE = "x86-64-v4"
AUTO = "auto"
CHOICES = (AUTO, BASELINE, WIDE)
# Where `make build` puts the v4 build: not a module file name Python would import.
WIDE_PATH = Path(__file__).resolve().parent / "_engine-x86-64-v4.so"
# Where maturin puts the portable build: the module file Python's own search finds.
BASELINE_PATH = (
    Path(__file__).resolve().parent / f"_engine{importlib.machinery.EXTENSION_SUFFIXES[0]}"
)
# /proc/cpuinfo flags of every feature -C target-cpu=x86-64-v4 may use: the v2, v3 and
# v4 levels of the x86-64 psABI ("abm" is how Linux names LZCNT).
WIDE_CPU_FLAGS = frozenset(
    {
        "cx16",
        "lahf_lm",
        "popcnt",
        "sse4_1",
        "sse4_2",
        "ssse3",
        "avx",
        "avx2",
        "bmi1",
        "bmi2",
        "f16c",
        "fma",
        "abm",
        "movbe",
        "xsave",
        "avx512f",
        "avx512bw",
        "avx512cd",
        "avx512dq",
        "avx512vl",
    }
)


class EngineBuildError(RuntimeError):
    """ORDERS_ENGINE_BUILD asks for something this machine or checkout cannot give."""


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags of the first processor listed in /proc/cpuinfo's text."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def choose(requested: str, machine: str, flags: frozenset[str], wide_built: bool) -> str:
    """BASELINE or WIDE, for ORDERS_ENGINE_BUILD=`requested` on this CPU."""
    if requested not in CHOICES:
        raise EngineBuildError(f"{ENV_VAR}={requested!r}: expected one of {', '.join(CHOICES)}")
    if requested == BASELINE:
        return BASELINE
    supported = machine == "x86_64" and WIDE_CPU_FLAGS.issubset(flags)
    if requested == WIDE:
        if not supported:
            missing = sorted(WIDE_CPU_FLAGS - flags) if machine == "x86_64" else [machine]
            raise EngineBuildError(
                f"{ENV_VAR}={WIDE}: this CPU cannot run it (lacks {', '.join(missing)})"
            )
        if not wide_built:
            raise EngineBuildError(f"{ENV_VAR}={WIDE}: {WIDE_PATH} is missing: run `make build`")
        return WIDE
    return WIDE if supported and wide_built else BASELINE


def _read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: the flags are unknown, so the baseline is chosen
        return ""


def chosen_build() -> str:
    """The build `import server._engine` loads in this environment."""
    return choose(
        os.environ.get(ENV_VAR, AUTO).strip() or AUTO,
        platform.machine(),
        cpu_flags(_read_cpuinfo()),
        WIDE_PATH.is_file(),
    )


def loaded_build(module: ModuleType) -> str:
    """Which build a loaded engine module is, as it says itself (builds older than that
    attribute were all baseline builds)."""
    return str(getattr(module, "BUILD_CPU_LEVEL", BASELINE))


class EngineBuildFinder(importlib.abc.MetaPathFinder):
    """Resolves `server._engine` to the v4 build when `chosen_build()` says so; leaves
    the baseline to the normal search (the maturin-built file next to this one)."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != MODULE or chosen_build() != WIDE:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(WIDE_PATH))
        return importlib.util.spec_from_file_location(fullname, WIDE_PATH, loader=loader)
