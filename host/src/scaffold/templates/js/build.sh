#!/usr/bin/env bash
# Builds {{name}}.wasm: installs the SDK's build tools on first use (npm),
# runs the unit tests, then bundles and componentizes app.js.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -d vendor/kinesis-processor/node_modules/@bytecodealliance/componentize-js ]; then
    (cd vendor/kinesis-processor && npm ci --no-audit --no-fund --loglevel=error)
fi
[ -d node_modules/kinesis-processor ] || npm install --no-audit --no-fund --loglevel=error
# A failing test shows whole: its name, the file and line, the message (a
# syntax error too).
if ! tests=$(node --test 2>&1); then
    printf '%s\n' "$tests" >&2
    echo "build.sh: the unit tests failed (above); {{name}}.wasm was not built" >&2
    exit 1
fi
printf '%s\n' "$tests" | grep -E '^# (pass|fail)' >&2 || true
# Skipped when the bundle of app.js and everything it imports is unchanged.
node vendor/kinesis-processor/build.mjs app.js {{name}}.wasm
echo "{{name}}.wasm is ready; try: host test --plugin {{name}}.wasm --input records.jsonl --expect expected.txt" >&2
