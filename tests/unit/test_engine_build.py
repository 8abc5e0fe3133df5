"""The choice of engine build (server/engine_build.py): portable, or x86-64-v4 where
the CPU can run it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.engine_build import (
    AUTO,
    BASELINE,
    WIDE,
    WIDE_CPU_FLAGS,
    EngineBuildError,
    choose,
    cpu_flags,
)

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu sse2 avx2 avx512f
bugs\t\t: sysret_ss_attrs

processor\t: 1
flags\t\t: fpu
"""
ALL = frozenset(WIDE_CPU_FLAGS | {"fpu", "sse2", "sha_ni"})


def test_cpu_flags_are_the_first_processors() -> None:
    assert cpu_flags(CPUINFO) == {"fpu", "sse2", "avx2", "avx512f"}
    assert cpu_flags("") == frozenset()


def test_auto_takes_the_wide_build_only_when_it_can_run() -> None:
    assert choose(AUTO, "x86_64", ALL, wide_built=True) == WIDE
    assert choose(AUTO, "x86_64", ALL, wide_built=False) == BASELINE
    assert choose(AUTO, "x86_64", ALL - {"avx512bw"}, wide_built=True) == BASELINE
    assert choose(AUTO, "aarch64", ALL, wide_built=True) == BASELINE
    assert choose(BASELINE, "x86_64", ALL, wide_built=True) == BASELINE


def test_asking_for_what_cannot_run_is_an_error_that_says_why() -> None:
    with pytest.raises(EngineBuildError, match="lacks avx512vl"):
        choose(WIDE, "x86_64", ALL - {"avx512vl"}, wide_built=True)
    with pytest.raises(EngineBuildError, match="missing"):
        choose(WIDE, "x86_64", ALL, wide_built=False)
    with pytest.raises(EngineBuildError, match="expected one of auto, baseline, x86-64-v4"):
        choose("native", "x86_64", ALL, wide_built=True)
    assert choose(WIDE, "x86_64", ALL, wide_built=True) == WIDE


@given(st.frozensets(st.sampled_from(sorted(ALL))), st.booleans())
def test_auto_never_picks_a_build_the_cpu_lacks_a_feature_for(
    flags: frozenset[str], wide_built: bool
) -> None:
    chosen = choose(AUTO, "x86_64", flags, wide_built)
    assert (chosen == WIDE) == (wide_built and WIDE_CPU_FLAGS.issubset(flags))
