#!/usr/bin/env bash
# Runs the unit tests natively, then builds {{name}}.wasm (needs Rust with
# the wasm32-wasip2 target; added on first use).
set -euo pipefail
cd "$(dirname "$0")"
rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo test --quiet
cargo build --release --target wasm32-wasip2
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/$(echo '{{name}}' | tr - _).wasm" {{name}}.wasm
echo "built {{name}}.wasm; try: host test --plugin {{name}}.wasm --input records.jsonl" >&2
