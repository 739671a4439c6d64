#!/usr/bin/env bash
# Runs the order workflow end to end on the embedded store: builds the guest
# components and the host on first use, runs examples/order with its two
# activity components, then prints the run's journal and checks it by replay.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
data="${CAIRN_DATA:-$repo/target/demo-data}"

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
(cd "$repo/examples" && cargo build --release --quiet)
cargo build --release --quiet --manifest-path "$repo/Cargo.toml" --bin cairn

cairn="$repo/target/release/cairn"
wasm="$repo/examples/target/wasm32-wasip2/release"
id="order-$(date +%s)"

echo "== cairn run (result on stdout)"
"$cairn" run "$wasm/order.wasm" \
    --activity "payments=$wasm/payments.wasm" \
    --activity "inventory=$wasm/inventory.wasm" \
    --input "@$repo/examples/order/input.json" \
    --data "$data" --id "$id"
echo
echo "== cairn journal $id"
"$cairn" journal "$id" --data "$data"
echo
echo "== cairn replay $id"
"$cairn" replay "$id" --data "$data"
