#!/usr/bin/env bash
# Builds a Python processor into a component against this SDK and its WIT:
#   plugins/sdk-python/build.sh APP_DIR OUT.wasm [MODULE]
# APP_DIR holds MODULE.py (default `app`). componentize-py (the version pinned
# in requirements-build.txt) is taken from $COMPONENTIZE_PY, else PATH. A
# build takes seconds; it is skipped when OUT.wasm was built from the same
# sources (hash in OUT.wasm.src).
set -euo pipefail
sdk="$(cd "$(dirname "$0")" && pwd)"
app="$(cd "$1" && pwd)"
out="$2"
module="${3:-app}"
cpy="${COMPONENTIZE_PY:-componentize-py}"
if ! command -v "$cpy" >/dev/null; then
    echo "build.sh: componentize-py not found; pip install -r $sdk/requirements-build.txt (or \`make pyenv\` and COMPONENTIZE_PY=target/pyenv/bin/componentize-py)" >&2
    exit 2
fi
hash="$({ "$cpy" --version; find "$app" "$sdk/kinesis_processor" -type f \( -name '*.py' -o -name '*.wit' \) -print0 \
    | sort -z | xargs -0 sha256sum; } | sha256sum | cut -d' ' -f1)"
if [ -f "$out" ] && [ "$(cat "$out.src" 2>/dev/null)" = "$hash" ]; then
    exit 0
fi
mkdir -p "$(dirname "$out")"
echo "componentize-py: $app/$module.py -> $out" >&2
"$cpy" -d "$sdk/kinesis_processor/wit" -w merging-processor-world componentize "$module" -p "$app" -p "$sdk" -o "$out" >/dev/null
echo "$hash" > "$out.src"
