#!/usr/bin/env bash
# Run the Go smoke program (cmd/smoke) against a real server of this checkout.
#
#   clients/go/smoke.sh [smoke flags...]          # e.g. -timeout 20s
#   ORDERS_SMOKE_ADDRESS=host:port clients/go/smoke.sh   # use a server that already runs
#
# Without ORDERS_SMOKE_ADDRESS it starts `python -m server` on a free loopback port with
# a keyspace, stream and subject prefix of its own, waits for SERVING, runs the smoke
# program and stops that server (SIGTERM, by pid). It needs the local stack up
# (`make stack-up`) and the engine built (`make build`); it leaves the stack alone.
# The exit status is the smoke program's (1 if the server did not stop cleanly).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
START_TIMEOUT_S=${ORDERS_SMOKE_START_TIMEOUT_S:-90}

tmp=$(mktemp -d)
server_pid=""
stop_server() {
    local status=$?
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid"
        for _ in $(seq 1 150); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$server_pid" 2>/dev/null; then
            echo "smoke.sh: server $server_pid ignored SIGTERM for 30 s; killing it" >&2
            kill -KILL "$server_pid" 2>/dev/null || true
            status=1
        fi
        wait "$server_pid" 2>/dev/null || {
            code=$?
            echo "smoke.sh: server exited with $code; log:" >&2
            tail -n 30 "$tmp/server.log" >&2
            [ "$status" -ne 0 ] || status=1
        }
    fi
    rm -rf "$tmp"
    exit "$status"
}
trap stop_server EXIT

# Build first, so compile time does not count against the server's start-up.
(cd "$HERE" && go build -o "$tmp/smoke" ./cmd/smoke)

address=${ORDERS_SMOKE_ADDRESS:-}
if [ -z "$address" ]; then
    port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    name=gosmoke_$(date +%s)_$$
    address=127.0.0.1:$port
    (
        cd "$ROOT"
        exec env PYTHONUNBUFFERED=1 "$PYTHON" -m server \
            --listen "$address" --metrics-port 0 \
            --cql-keyspace "$name" --stream-name "${name^^}" --subject-prefix "$name." \
            >"$tmp/server.log" 2>&1
    ) &
    server_pid=$!
    echo "smoke.sh: server pid $server_pid on $address, keyspace $name"
    # Until the port answers: fail fast if the server dies (stack down, engine not built).
    for ((i = 0; i < START_TIMEOUT_S * 5; i++)); do
        if ! kill -0 "$server_pid" 2>/dev/null; then
            echo "smoke.sh: the server exited while starting; log:" >&2
            tail -n 30 "$tmp/server.log" >&2
            server_pid=""
            exit 1
        fi
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.2
    done
fi

set +e
"$tmp/smoke" -address "$address" -wait "${START_TIMEOUT_S}s" "$@"
smoke_status=$?
set -e
if [ "$smoke_status" -ne 0 ] && [ -n "$server_pid" ]; then
    echo "smoke.sh: server log (last 30 lines):" >&2
    tail -n 30 "$tmp/server.log" >&2
fi
exit "$smoke_status"
