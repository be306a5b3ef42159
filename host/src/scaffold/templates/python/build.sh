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
# A failing test shows whole: its name, the file and line, the message (a
# syntax error or a missing module too).
if ! tests=$("$python" -m unittest test_app 2>&1); then
    printf '%s\n' "$tests" >&2
    echo "build.sh: the unit tests failed (above); {{name}}.wasm was not built" >&2
    exit 1
fi
printf '%s\n' "$tests" | tail -1 >&2
# No source changed since the last build: the component is up to date.
stamp=$(find . -path ./.venv -prune -o -type f \( -name '*.py' -o -name '*.wit' -o -name 'requirements-build.txt' \) -print0 \
    | LC_ALL=C sort -z | xargs -0 cksum | cksum) || stamp=""
if [ -n "$stamp" ] && [ -f {{name}}.wasm ] && [ "$(cat .build-stamp 2>/dev/null)" = "$stamp" ]; then
    echo "build.sh: {{name}}.wasm is up to date (no source changed since it was built)" >&2
    exit 0
fi
# A build cut short must not be taken for a finished one.
rm -f .build-stamp
"$cpy" -d kinesis_processor/wit -w merging-processor-world componentize app -p . -o {{name}}.wasm >/dev/null
[ -z "$stamp" ] || echo "$stamp" > .build-stamp
echo "built {{name}}.wasm; try: host test --plugin {{name}}.wasm --input records.jsonl --expect expected.txt" >&2
