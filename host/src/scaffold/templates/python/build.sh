#!/usr/bin/env bash
# Builds {{name}}.wasm with componentize-py (pip install componentize-py==0.25.1;
# or set COMPONENTIZE_PY), after the unit tests.
set -euo pipefail
cd "$(dirname "$0")"
cpy="${COMPONENTIZE_PY:-componentize-py}"
command -v "$cpy" >/dev/null || { echo "build.sh: componentize-py not found: pip install componentize-py==0.25.1" >&2; exit 2; }
"${PYTHON:-python3}" -m unittest --quiet test_app 2>&1 | tail -1 >&2
"$cpy" -d kinesis_processor/wit -w merging-processor-world componentize app -p . -o {{name}}.wasm >/dev/null
echo "built {{name}}.wasm; try: host test --plugin {{name}}.wasm --input records.jsonl" >&2
