"""Writes the V2 JSON infer requests every server is driven with (the same bytes for all):
credit-b1.json (8 features), dense-b1.json and dense-b8.json (256 inputs per row), and
slow-1ms.json for the gateway's overload check (models/tests/slow: a Loop of 700 64x64 MatMul
steps, about 1 ms of compute per request). Values in [-1, 1) with four decimals, from a fixed
seed. Stdlib only. Usage: payloads.py OUTDIR"""

import json
import os
import random
import sys

WORKLOADS = {"credit-b1": ("features", 8, 1), "dense-b1": ("input", 256, 1), "dense-b8": ("input", 256, 8)}

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = random.Random(1)
for name, (input_name, width, rows) in WORKLOADS.items():
    data = [round(rng.uniform(-1, 1), 4) for _ in range(width * rows)]
    request = {
        "id": "bench",
        "inputs": [{"name": input_name, "datatype": "FP32", "shape": [rows, width], "data": data}],
    }
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump(request, f, separators=(",", ":"))
slow = {
    "id": "bench",
    "inputs": [
        {"name": "iterations", "datatype": "INT64", "shape": [], "data": [700]},
        {"name": "x", "datatype": "FP32", "shape": [1, 64], "data": [round(rng.uniform(-1, 1), 4) for _ in range(64)]},
    ],
}
with open(os.path.join(out, "slow-1ms.json"), "w") as f:
    json.dump(slow, f, separators=(",", ":"))
