#!/usr/bin/env bash
# Runs a command with kinesis-mock (npm `kinesis-local`, the emulator
# LocalStack uses) listening on loopback, and KINESIS_MOCK_URL pointing at it.
# Installs the package into target/kinesis-mock on first use. kinesis-mock
# reads server.json from its working directory, so it is started from its own folder.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dir="$root/target/kinesis-mock"
version="0.6.2"
port="${KINESIS_MOCK_PLAIN_PORT:-4568}"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    if [ -n "${CI:-}" ]; then
        echo "with-kinesis-mock: node and npm are needed for kinesis-mock (apt-get install nodejs npm)" >&2
        exit 2
    fi
    # Outside CI the kinesis-mock half of the tests is skipped (each says so).
    echo "with-kinesis-mock: no node/npm, running without kinesis-mock (apt-get install nodejs npm for both emulators)" >&2
    exec "$@"
fi
if [ ! -f "$dir/node_modules/kinesis-local/main.js" ]; then
    mkdir -p "$dir"
    (cd "$dir" && npm install --no-save --no-audit --no-fund --loglevel=error "kinesis-local@$version" >/dev/null)
fi

log="$dir/kinesis-mock.log"
(cd "$dir/node_modules/kinesis-local" && KINESIS_MOCK_PLAIN_PORT="$port" KINESIS_MOCK_TLS_PORT="$((port + 1))" \
    LOG_LEVEL=WARN exec node main.js) >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true' EXIT

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
        echo "with-kinesis-mock: kinesis-mock exited; its log:" >&2
        cat "$log" >&2
        exit 2
    fi
    sleep 0.5
done
if [ -z "${ready:-}" ]; then
    echo "with-kinesis-mock: kinesis-mock did not answer on port $port within 60 s; its log:" >&2
    cat "$log" >&2
    exit 2
fi
echo "kinesis-mock $version answering on http://127.0.0.1:$port" >&2
export KINESIS_MOCK_URL="http://127.0.0.1:$port"
"$@"
