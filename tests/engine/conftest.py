"""Import paths of the engine tests: `reference` (tests/reference, the pure-Python
reference model), `engine_helpers` (this folder) and `workloads` (bench/)."""

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[1]
_ROOT = _TESTS.parent
for _p in (str(_TESTS), str(_ROOT), str(_ROOT / "bench")):
    if _p not in sys.path:
        sys.path.insert(0, _p)
