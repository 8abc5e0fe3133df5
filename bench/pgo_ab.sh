#!/usr/bin/env bash
# What the profile-guided build (`make build`, deploy/build_engine.sh) buys: builds the
# same engine plainly (`cargo rustc --crate-type cdylib`, as `make build PGO=0` builds
# it) and compares it with the built server._engine by bench/batch_ab.py (both modes).
#
#   make build && bash bench/pgo_ab.sh        (~5 minutes; bench/results/pgo_ab.json)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
WORK=.state/pgo
grep -q "^profile-guided" target/engine-build.txt 2>/dev/null || {
  echo "pgo_ab: server._engine is not the profile-guided build: run make build first" >&2
  exit 1
}
echo "pgo_ab: building the engine plainly" >&2
CARGO_TARGET_DIR="$WORK/target-plain" cargo rustc --quiet --release \
  -p core_rs --lib --features python --crate-type cdylib
cp "$WORK/target-plain/release/lib_engine.so" "$WORK/engine-plain.so"
BUILT=$($PY -c 'import server._engine as e; print(e.__file__)')
$PY bench/batch_ab.py "$WORK/engine-plain.so" "$BUILT" --out bench/results/pgo_ab.json
