#!/usr/bin/env bash
# Generate the Go stubs for the public contract (proto/orders/v1) into gen/orders/v1.
#
#   clients/go/generate.sh           # (re)write gen/orders/v1/*.pb.go
#   clients/go/generate.sh --check   # regenerate into a temp dir; exit 1 if gen/ is stale
#
# protoc is the one in the project venv (grpcio-tools, pinned in pyproject.toml), so the
# `protoc` version in the generated headers is the same on every machine. The two Go
# plugins are installed at the pinned versions below into a cache directory (once per
# version) with `go install`; nothing is installed system-wide.
#
# Environment: PYTHON (default <repo>/.venv/bin/python), GO_PLUGIN_CACHE (default
# ~/.cache/orders-service/go-bin).
set -euo pipefail

PROTOC_GEN_GO_VERSION=v1.36.12   # module google.golang.org/protobuf
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2 # module google.golang.org/grpc/cmd/protoc-gen-go-grpc
GO_MODULE=example.com/orders/clients/go
PROTOS=(orders/v1/orders.proto orders/v1/events.proto)

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
CACHE=${GO_PLUGIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/orders-service/go-bin}

check=0
case "${1:-}" in
    "") ;;
    --check) check=1 ;;
    -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

command -v go >/dev/null || { echo "error: go not found (Go 1.26+ is required)" >&2; exit 1; }
"$PYTHON" -c 'import grpc_tools.protoc' 2>/dev/null || {
    echo "error: $PYTHON has no grpc_tools; run \`make setup\` first" >&2
    exit 1
}

# install_plugin NAME PACKAGE VERSION: echo the path of the plugin binary, installing it
# into its own versioned folder the first time.
install_plugin() {
    local name=$1 package=$2 version=$3
    local dir=$CACHE/$name@$version
    if [ ! -x "$dir/$name" ]; then
        echo "installing $package@$version into $dir" >&2
        mkdir -p "$dir"
        # -trimpath: the binary does not depend on where the module cache is.
        GOBIN=$dir go install -trimpath "$package@$version" >&2
    fi
    echo "$dir/$name"
}

protoc_gen_go=$(install_plugin protoc-gen-go \
    google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION")
protoc_gen_go_grpc=$(install_plugin protoc-gen-go-grpc \
    google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION")

well_known=$("$PYTHON" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --go_opt=module strips the module path from go_package, so the files land in
# $tmp/gen/orders/v1 whatever the checkout is called.
(
    cd "$ROOT/proto"
    "$PYTHON" -m grpc_tools.protoc \
        -I. -I"$well_known" \
        --plugin=protoc-gen-go="$protoc_gen_go" \
        --plugin=protoc-gen-go-grpc="$protoc_gen_go_grpc" \
        --go_out="$tmp" --go_opt=module="$GO_MODULE" \
        --go-grpc_out="$tmp" --go-grpc_opt=module="$GO_MODULE" \
        "${PROTOS[@]}"
)
fresh=$tmp/gen/orders/v1
[ -n "$(ls "$fresh"/*.pb.go 2>/dev/null)" ] || {
    echo "error: protoc wrote nothing to $fresh (check go_package in ${PROTOS[*]})" >&2
    exit 1
}
committed=$HERE/gen/orders/v1

if [ "$check" = 1 ]; then
    if diff -ru "$committed" "$fresh" >"$tmp/diff" 2>&1; then
        echo "clients/go/gen is up to date with ${#PROTOS[@]} proto files"
        exit 0
    fi
    echo "clients/go/gen is stale; run clients/go/generate.sh and commit it:"
    sed "s#$tmp#fresh#g; s#$HERE/##g" "$tmp/diff" | head -60
    exit 1
fi

rm -rf "$committed"
mkdir -p "$(dirname "$committed")"
cp -r "$fresh" "$committed"
echo "generated clients/go/gen/orders/v1 from ${#PROTOS[@]} proto files:" \
    "$(cd "$committed" && ls *.pb.go | tr '\n' ' ')"
