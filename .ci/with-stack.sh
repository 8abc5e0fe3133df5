#!/usr/bin/env bash
# Run a command with the local stack up; stop afterwards only the services this script
# started (a stack that was already running, e.g. from `make run`, is left running).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

started_file=$(mktemp)
cleanup() {
    local services
    services=$(cat "$started_file" 2>/dev/null || true)
    if [ -n "$services" ]; then
        echo "with-stack: stopping what this run started: $services"
        for service in $services; do
            "$PY" -m deploy.stack down --only "$service" || true
        done
    fi
    rm -f "$started_file"
}
trap cleanup EXIT

"$PY" -m deploy.stack up --started-file "$started_file" || exit 1
"$@"
