#!/usr/bin/env bash
# Builds {{name}}.wasm: installs the SDK's build tools on first use (npm),
# runs the unit tests, then bundles and componentizes app.js.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -d vendor/kinesis-processor/node_modules/@bytecodealliance/componentize-js ]; then
    (cd vendor/kinesis-processor && npm ci --no-audit --no-fund --loglevel=error)
fi
[ -d node_modules/kinesis-processor ] || npm install --no-audit --no-fund --loglevel=error
node --test 2>&1 | grep -E '^# (pass|fail)' >&2
node vendor/kinesis-processor/build.mjs app.js {{name}}.wasm
echo "built {{name}}.wasm; try: host test --plugin {{name}}.wasm --input records.jsonl" >&2
