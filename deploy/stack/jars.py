"""The Cassandra jar cache: fetched once with Maven, reused by every clone on this machine."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from deploy.stack import proc
from deploy.stack.config import POM_PATH, StackConfig
from deploy.stack.errors import StackError
from deploy.stack.proc import Progress

MARKER = ".complete.json"


def _pom_digest(pom: Path) -> str:
    return hashlib.sha256(pom.read_bytes()).hexdigest()


def cached_jars(lib_dir: Path, pom: Path = POM_PATH) -> list[Path] | None:
    """The jars in ``lib_dir`` if a complete fetch for this pom is recorded there, else None."""
    try:
        marker = json.loads((lib_dir / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("pom_sha256") != _pom_digest(pom):
        return None
    names = marker.get("jars")
    if not isinstance(names, list) or not names:
        return None
    jars = [lib_dir / str(name) for name in names]
    if not all(j.is_file() for j in jars):
        return None
    return jars


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock, so two clones fetching at once do not trample each other."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_jars(cfg: StackConfig, progress: Progress, pom: Path = POM_PATH) -> list[Path]:
    """Return the Cassandra classpath jars, fetching them with Maven if the cache is incomplete."""
    lib_dir = cfg.cassandra_lib_dir
    jars = cached_jars(lib_dir, pom)
    if jars is not None:
        return jars
    with _locked(lib_dir.parent / ".fetch.lock"):
        jars = cached_jars(lib_dir, pom)  # another process may have finished meanwhile
        if jars is not None:
            return jars
        return _fetch(cfg, lib_dir, pom, progress)


def _fetch(cfg: StackConfig, lib_dir: Path, pom: Path, progress: Progress) -> list[Path]:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(
            "Maven (mvn) is needed once to fetch the Cassandra jars, and it is not on PATH",
            hint="install it: apt-get install maven (Java 17 is needed too)",
        )
    progress(
        f"cassandra: fetching Cassandra {cfg.cassandra_version} jars from Maven Central "
        f"(first run only) into {lib_dir}…"
    )
    tmp = lib_dir.parent / f"lib.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    mvn_log = lib_dir.parent / "mvn.log"
    started = time.monotonic()
    with mvn_log.open("wb") as log:
        result = subprocess.run(
            [
                mvn,
                "-B",
                "-q",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={tmp}",
                "-DincludeScope=runtime",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if result.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StackError(
            f"cassandra: `mvn dependency:copy-dependencies` failed (exit {result.returncode})",
            details=f"--- tail of {mvn_log} ---\n{proc.tail(mvn_log, 30)}\n---",
            hint=(
                "Maven must reach Maven Central (check network/proxy and ~/.m2/settings.xml); "
                "then run `python -m deploy.stack up` again"
            ),
        )
    names = sorted(p.name for p in tmp.iterdir() if p.suffix == ".jar")
    main_jar = f"cassandra-all-{cfg.cassandra_version}.jar"
    if main_jar not in names:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StackError(
            f"cassandra: Maven finished but {main_jar} is not among the fetched jars",
            details=f"--- tail of {mvn_log} ---\n{proc.tail(mvn_log, 30)}\n---",
            hint=f"check {pom} and {mvn_log}",
        )
    marker = {
        "pom_sha256": _pom_digest(pom),
        "cassandra_version": cfg.cassandra_version,
        "jars": names,
        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (tmp / MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
    shutil.rmtree(lib_dir, ignore_errors=True)
    tmp.rename(lib_dir)
    progress(
        f"cassandra: fetched {len(names)} jars in {time.monotonic() - started:.1f}s "
        f"(cached for later runs)"
    )
    jars = cached_jars(lib_dir, pom)
    if jars is None:  # pragma: no cover - we just wrote it
        raise StackError(f"cassandra: jar cache in {lib_dir} is unreadable after fetching")
    return jars
