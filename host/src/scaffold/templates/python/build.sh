#!/usr/bin/env bash
# Builds {{name}}.wasm after the unit tests. The build tool, componentize-py
# (pinned in requirements-build.txt), is installed on first use into .venv
# here; COMPONENTIZE_PY names another one.
set -euo pipefail
cd "$(dirname "$0")"
python="${PYTHON:-python3}"
cpy="${COMPONENTIZE_PY:-.venv/bin/componentize-py}"
if [ -z "${COMPONENTIZE_PY:-}" ] && ! cmp -s requirements-build.txt .venv/requirements-build.txt; then
    echo "build.sh: installing $(grep -v '^#' requirements-build.txt | tr -d ' ') into .venv (first build only)" >&2
    "$python" -m venv .venv || { echo "build.sh: $python -m venv failed: install Python's venv module (Debian: apt-get install python3-venv)" >&2; exit 2; }
    .venv/bin/pip install -q --disable-pip-version-check -r requirements-build.txt \
        || { echo "build.sh: pip could not install requirements-build.txt into .venv (is PyPI reachable?)" >&2; exit 2; }
    cp requirements-build.txt .venv/requirements-build.txt
fi
"$python" -m unittest --quiet test_app 2>&1 | tail -1 >&2
"$cpy" -d kinesis_processor/wit -w merging-processor-world componentize app -p . -o {{name}}.wasm >/dev/null
echo "built {{name}}.wasm; try: host test --plugin {{name}}.wasm --input records.jsonl" >&2
