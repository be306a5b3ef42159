#!/usr/bin/env bash
# The Python that the tests and the Python processors' builds use:
# target/pyenv, a virtual environment with the pinned packages of
# plugins/sdk-python/requirements-build.txt (componentize-py) and
# host/tests/requirements.txt (boto3, aws-kinesis-agg). Made on first use and
# again when a pin changes; without Python's venv module it is a recorded skip.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
env="$root/target/pyenv"
pins=("$root/plugins/sdk-python/requirements-build.txt" "$root/host/tests/requirements.txt")
stamp="$env/pins.txt"
if [ -x "$env/bin/python" ] && cat "${pins[@]}" | cmp -s - "$stamp"; then
    exit 0
fi
if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    exec "$root/host/tests/skip.sh" "target/pyenv (Python processors, boto3 and KPL tests)" \
        "python3 with its venv module is needed (Debian: apt-get install python3-venv)"
fi
echo "pyenv: installing $(cat "${pins[@]}" | grep -v '^#' | sed 's/ *#.*//' | tr '\n' ' ')into target/pyenv" >&2
python3 -m venv "$env"
"$env/bin/pip" install -q --disable-pip-version-check $(printf -- '-r %s ' "${pins[@]}")
cat "${pins[@]}" > "$stamp"
