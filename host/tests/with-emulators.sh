#!/usr/bin/env bash
# Runs a command with the emulators this project did not write listening on
# loopback: kinesis-mock (npm `kinesis-local`, the Kinesis emulator LocalStack
# uses) at KINESIS_MOCK_URL, and dynalite (npm, a DynamoDB emulator) at
# DYNALITE_URL. Installs the packages into target/ on first use. kinesis-mock
# reads server.json from its working directory, so it is started from its own folder.
#   host/tests/with-emulators.sh COMMAND...    runs COMMAND with both listening
#   host/tests/with-emulators.sh --install-only  installs them, starts nothing
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dir="$root/target/kinesis-mock"
version="0.6.2"
port="${KINESIS_MOCK_PLAIN_PORT:-4568}"
dyn_dir="$root/target/dynalite"
dyn_version="4.0.0"
dyn_port="${DYNALITE_PORT:-4570}"

if ! command -v node >/dev/null || ! command -v npm >/dev/null || ! command -v curl >/dev/null; then
    if [ -n "${CI:-}" ]; then
        echo "with-emulators: node, npm and curl are needed for kinesis-mock and dynalite (apt-get install nodejs npm curl)" >&2
        exit 2
    fi
    # Outside CI the tests that need them are skipped (each says so).
    echo "with-emulators: no node/npm/curl, running without kinesis-mock and dynalite (apt-get install nodejs npm curl)" >&2
    [ "${1:-}" = --install-only ] && exit 0
    exec "$@"
fi
if [ ! -f "$dir/node_modules/kinesis-local/main.js" ]; then
    mkdir -p "$dir"
    (cd "$dir" && npm install --no-save --no-audit --no-fund --loglevel=error "kinesis-local@$version" >/dev/null)
fi
if [ ! -f "$dyn_dir/node_modules/dynalite/cli.js" ]; then
    mkdir -p "$dyn_dir"
    (cd "$dyn_dir" && npm install --no-save --no-audit --no-fund --loglevel=error "dynalite@$dyn_version" >/dev/null)
fi

[ "${1:-}" = --install-only ] && exit 0

# dynalite keeps its tables in memory; it answers within a second.
dyn_log="$dyn_dir/dynalite.log"
node "$dyn_dir/node_modules/dynalite/cli.js" --port "$dyn_port" >"$dyn_log" 2>&1 &
dyn_pid=$!

log="$dir/kinesis-mock.log"
(cd "$dir/node_modules/kinesis-local" && KINESIS_MOCK_PLAIN_PORT="$port" KINESIS_MOCK_TLS_PORT="$((port + 1))" \
    LOG_LEVEL=WARN exec node main.js) >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" "$dyn_pid" 2>/dev/null || true; wait "$pid" "$dyn_pid" 2>/dev/null || true' EXIT

# Ready when it answers a real Kinesis call (ListStreams), not just the port.
for _ in $(seq 1 120); do
    if curl -s -o /dev/null -X POST "http://127.0.0.1:$port/" \
        -H 'Content-Type: application/x-amz-json-1.1' -H 'X-Amz-Target: Kinesis_20131202.ListStreams' -H 'X-Amz-Date: 20240101T000000Z' \
        -H 'Authorization: AWS4-HMAC-SHA256 Credential=local/20240101/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=x' \
        -d '{}' -w '%{http_code}' | grep -q '^200$'; then
        ready=1
        break
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "with-emulators: kinesis-mock exited; its log:" >&2
        cat "$log" >&2
        exit 2
    fi
    sleep 0.5
done
if [ -z "${ready:-}" ]; then
    echo "with-emulators: kinesis-mock did not answer on port $port within 60 s; its log:" >&2
    cat "$log" >&2
    exit 2
fi
echo "kinesis-mock $version answering on http://127.0.0.1:$port" >&2
for _ in $(seq 1 60); do
    if curl -s -o /dev/null -X POST "http://127.0.0.1:$dyn_port/" \
        -H 'Content-Type: application/x-amz-json-1.0' -H 'X-Amz-Target: DynamoDB_20120810.ListTables' \
        -H 'Authorization: AWS4-HMAC-SHA256 Credential=local/20240101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=x' \
        -H 'X-Amz-Date: 20240101T000000Z' -d '{}' -w '%{http_code}' | grep -q '^200$'; then
        dyn_ready=1
        break
    fi
    sleep 0.25
done
if [ -z "${dyn_ready:-}" ]; then
    echo "with-emulators: dynalite did not answer on port $dyn_port within 15 s; its log:" >&2
    cat "$dyn_log" >&2
    exit 2
fi
echo "dynalite $dyn_version answering on http://127.0.0.1:$dyn_port" >&2
export KINESIS_MOCK_URL="http://127.0.0.1:$port"
export DYNALITE_URL="http://127.0.0.1:$dyn_port"
"$@"
