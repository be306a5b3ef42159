#!/usr/bin/env bash
# Records a part of `make test` that cannot run here: one line on stderr and
# one in the skip ledger, which `make test` lists at its end. Under CI=true a
# skip is an error (exit 2): CI runs everything.
#   host/tests/skip.sh WHAT REASON
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
ledger="${HOST_TEST_SKIPS:-$root/target/test-skips.txt}"
if [ -n "${CI:-}" ]; then
    echo "error: $1 cannot run, and under CI everything must: $2" >&2
    exit 2
fi
echo "skipped: $1: $2" >&2
mkdir -p "$(dirname "$ledger")"
# Once per run, however many steps meet the same gap.
grep -qxF "$1: $2" "$ledger" 2>/dev/null || echo "$1: $2" >> "$ledger"
