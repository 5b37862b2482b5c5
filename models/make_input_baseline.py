#!/usr/bin/env python3
"""Writes an input baseline for `monitor.input_baseline`: per numeric input, per feature (the
last dimension), bin edges at the training data's deciles and the training proportions.

    python3 models/make_input_baseline.py                       # the example credit-scoring's
    python3 models/make_input_baseline.py --input features=train.npy --out baseline.json

`--input NAME=FILE.npy` (repeatable) reads an input's training rows, shape [rows, features] (any
other shape: the last dimension is the features, the rest rows). numpy only.

credit-scoring's weights are drawn from fixed seeds, not trained (see make_models.py), so it has
no training set of its own: its training distribution is defined here as what the example
clients send it, the load generator's FP32 values (loadtest/src/payload.rs: uniform over
-2.00..1.99 in steps of 0.01, every feature alike), drawn from a fixed seed so that the output
is the same on every run.
"""

import argparse
import json
import os

import numpy as np

ROOT = os.path.dirname(os.path.abspath(__file__))
BINS = 10


def feature_baseline(values):
    """Edges at the deciles (repeats merged; the end bins are open-ended in the gateway) and
    the proportion of `values` in each bin, as the gateway bins them."""
    values = values[np.isfinite(values)]
    edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, BINS + 1)))
    if len(edges) < 2:  # a constant: one bin either side, so a move either way shows
        edges = np.array([edges[0] - 1.0, edges[0], edges[0] + 1.0])
    # The gateway's bin of v: how many inner edges are <= v (so the last edge belongs to the
    # last bin, and values outside go to the end bins).
    bins = np.searchsorted(edges[1:-1], values, side="right")
    counts = np.bincount(bins, minlength=len(edges) - 1)
    return edges.tolist(), (counts / counts.sum()).round(6).tolist()


def baseline(inputs):
    """`inputs`: name -> training rows. Returns the JSON object the gateway reads."""
    out = {}
    for name, rows in inputs.items():
        rows = np.asarray(rows, dtype=np.float64)
        rows = rows.reshape(-1, rows.shape[-1] if rows.ndim >= 2 else 1)
        pairs = [feature_baseline(rows[:, i]) for i in range(rows.shape[1])]
        out[name] = {"edges": [e for e, _ in pairs], "proportions": [p for _, p in pairs]}
    return {"inputs": out}


def dumps(b):
    """The baseline as JSON, one feature's edges or proportions a line (reviewable diffs)."""
    parts = []
    for name, spec in b["inputs"].items():
        fields = []
        for key in ("edges", "proportions"):
            lines = ",\n      ".join(json.dumps(row) for row in spec[key])
            fields.append(f'    "{key}": [\n      {lines}\n    ]')
        parts.append(f"  {json.dumps(name)}: {{\n" + ",\n".join(fields) + "\n  }")
    return '{"inputs": {\n' + ",\n".join(parts) + "\n}}\n"


def credit_scoring_training_rows(rows=100_000):
    rng = np.random.RandomState(7)
    return rng.randint(-200, 200, size=(rows, 8)) / 100.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy")
    parser.add_argument("--out", default=os.path.join(ROOT, "credit-scoring", "input-baseline.json"))
    args = parser.parse_args()
    if args.input:
        inputs = {}
        for spec in args.input:
            name, _, path = spec.partition("=")
            inputs[name] = np.load(path)
    else:
        inputs = {"features": credit_scoring_training_rows()}
    with open(args.out, "w") as f:
        f.write(dumps(baseline(inputs)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
