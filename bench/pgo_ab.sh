#!/usr/bin/env bash
# What the profile buys: `make build`'s profile-guided engine (its portable build,
# deploy/build_engine.sh) against the same tree built without a profile, batch by
# batch with bench/batch_ab.py (docs/engine.md, Performance; docs/design.md, "The
# engine is built profile-guided").
#
#   make bench-pgo-ab        (~3 minutes; bench/results/pgo_ab.json)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

read -r profiled profile < <(ORDERS_ENGINE_BUILD=baseline "$PY" -c \
  'import server._engine as e; print(e.__file__, e.BUILD_PROFILE)')
if [[ $profile == none ]]; then
  echo "pgo_ab: $profiled was built without a profile (ENGINE_PGO=0?): run make build" >&2
  exit 1
fi
# The same tree without a profile, as the A/B tools build it (bench/core_ab.py).
plain=$("$PY" -c 'import sys; sys.path.insert(0, "bench"); import core_ab
print(core_ab.plain_build_of_this_tree())')
"$PY" bench/batch_ab.py "$plain" "$profiled" --out bench/results/pgo_ab.json
