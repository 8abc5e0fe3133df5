"""What fresh memory costs on this machine: the system time of faulting pages in.

    python bench/vm_memory.py [--mb 800]

Maps `--mb` MB of anonymous memory, touches every 4 KB page and reports the system CPU
time it took, in this order: with transparent huge pages (`MADV_HUGEPAGE`, as mimalloc
requests for the engine's memory), the same again at once, again after 3 s and after
10 s, then with 4 KB pages (`MADV_NOHUGEPAGE`). On the development VM the huge-page runs
show the host's free-page reporting: memory freed and touched again within a second is
cheap, memory the VM has had time to give back is not (docs/engine.md, Performance).
Bounded: five mappings of `--mb` MB and 13 s of sleep.
"""

from __future__ import annotations

import argparse
import mmap
import resource
import sys
import time

PAGE = 4096


def fault_in(megabytes: int, huge: bool) -> tuple[float, float]:
    """(wall, system CPU) seconds to touch every page of a fresh mapping."""
    size = megabytes << 20
    mapping = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        mapping.madvise(mmap.MADV_HUGEPAGE if huge else mmap.MADV_NOHUGEPAGE)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_stime
        started = time.perf_counter()
        for offset in range(0, size, PAGE):
            mapping[offset] = 1
        wall = time.perf_counter() - started
        system = resource.getrusage(resource.RUSAGE_SELF).ru_stime - before
        return wall, system
    finally:
        mapping.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--mb", type=int, default=800, help="size of each mapping (MB)")
    args = parser.parse_args(argv)
    if not 1 <= args.mb <= 8192:
        parser.error("--mb must be between 1 and 8192")
    steps = [
        ("huge pages, first touch", True, 0.0),
        ("huge pages, again at once", True, 0.0),
        ("huge pages, again after 3 s", True, 3.0),
        ("huge pages, again after 10 s", True, 10.0),
        ("4 KB pages", False, 0.0),
    ]
    print(f"faulting in {args.mb} MB of fresh anonymous memory, page by page")
    for label, huge, pause in steps:
        time.sleep(pause)
        wall, system = fault_in(args.mb, huge)
        print(f"  {label:30} wall {wall:.3f} s, system CPU {system:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
