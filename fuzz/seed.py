#!/usr/bin/env python3
"""Seeds the fuzz corpora (fuzz/corpus/TARGET/) from the repository: journal
records from tests/fixtures/journal-v1.bin and journal-v2.bin, the example components (build
them first: cargo build --release in examples/), and valid API requests, plus
every input in tests/fixtures/fuzz/TARGET/ (past findings)."""

import pathlib
import struct

root = pathlib.Path(__file__).resolve().parent.parent
corpus = root / "fuzz" / "corpus"

journal = corpus / "journal_decode"
journal.mkdir(parents=True, exist_ok=True)
i = 0
for fixture in ("journal-v1.bin", "journal-v2.bin"):
    data = (root / "tests/fixtures" / fixture).read_bytes()
    while data:
        (length,) = struct.unpack("<I", data[:4])
        (journal / f"fixture-{i}").write_bytes(data[4 : 4 + length])
        data = data[4 + length :]
        i += 1

upload = corpus / "upload"
upload.mkdir(parents=True, exist_ok=True)
for wasm in sorted((root / "examples/target/wasm32-wasip2/release").glob("*.wasm")):
    (upload / wasm.name).write_bytes(wasm.read_bytes())

api = corpus / "api_request"
api.mkdir(parents=True, exist_ok=True)
GET, POST, DELETE = 0, 1, 2
requests = [
    (GET, "health", ""),
    (GET, "runs?workflow=order&status=running&limit=5", ""),
    (POST, "runs", '{"workflow":"order","id":"r1","input":{"order_id":"A-1"}}'),
    (GET, "runs/r1", ""),
    (GET, "runs/r1/journal?from=0&limit=10", ""),
    (GET, "runs/r1/result?wait=0", ""),
    (POST, "runs/r1/signals/approve", '{"approved":true,"by":"alice"}'),
    (POST, "runs/r1/cancel", ""),
    (POST, "runs/r1/terminate", '{"reason":"fuzz"}'),
    (POST, "runs/r1/upgrade", '{"to":2,"dry_run":true}'),
    (GET, "workflows/order/versions", ""),
    (POST, "workflows/order/rollback", '{"to":1}'),
    (POST, "workflows/order/upgrade", '{"from":1,"to":2,"dry_run":true}'),
    (DELETE, "workflows/order/versions/1", ""),
    (GET, "components", ""),
    (GET, "openapi.json", ""),
]
for n, (method, path, body) in enumerate(requests):
    (api / f"seed-{n}").write_bytes(bytes([method]) + f"{path}\n{body}".encode())

for target in ("journal_decode", "api_request", "upload"):
    found = root / "tests/fixtures/fuzz" / target
    for f in sorted(found.glob("*")) if found.exists() else []:
        (corpus / target / f"found-{f.name}").write_bytes(f.read_bytes())
print(f"seeded {corpus}")
