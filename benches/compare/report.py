"""Turns one run's raw loadtest / ort_max reports (benches/results/<time>/raw) into tables:
printed, and written as results.md and results.json beside raw/. Stdlib only.
Usage: report.py RESULTS_DIR [--machine TEXT]"""

import glob
import json
import os
import sys

LABELS = {
    "gateway": "gateway (batching, delay 0)",
    "gateway-nobatch": "gateway (no batching)",
    "bare": "bare_hyper (canned answer)",
    "fastapi": "FastAPI + onnxruntime",
    "kserve": "KServe 0.21.0",
    "mlserver": "MLServer 1.7.1",
    "pytriton": "Triton via PyTriton 0.7.0",
}
ORDER = list(LABELS)
WORKLOADS = {"credit-b1": ("credit-scoring", 1), "dense-b1": ("dense", 1), "dense-b8": ("dense", 8)}


def load(out):
    runs, ort, failed = [], {}, {}
    for path in sorted(glob.glob(os.path.join(out, "raw", "*@*@c*.json"))):
        server, workload, conns = os.path.basename(path)[:-5].split("@")
        try:
            r = json.load(open(path))
        except (OSError, ValueError):
            continue
        lat = r["latency_us"]
        runs.append({
            "server": server, "workload": workload, "connections": int(conns[1:]),
            "rps": r["throughput_rps"], "ok_rps": r["ok"] / max(r["elapsed_s"], 1e-9),
            "rows_per_s": r["rows_per_s"], "p50_us": lat["p50"], "p99_us": lat["p99"],
            "p99_9_us": lat["p99_9"], "errors": r["errors"],
        })
    for w, (model, batch) in WORKLOADS.items():
        path = os.path.join(out, "raw", f"ort-{model}-b{batch}.json")
        try:
            ort[w] = json.load(open(path))
        except (OSError, ValueError):
            pass
    for path in glob.glob(os.path.join(out, "raw", "*.failed")):
        failed[os.path.basename(path)[:-7]] = open(path).read().strip()
    return runs, ort, failed


def find(runs, server, workload, conns):
    for r in runs:
        if (r["server"], r["workload"], r["connections"]) == (server, workload, conns):
            return r
    return None


def fmt(x, digits=0):
    return "-" if x is None else f"{x:,.{digits}f}"


def ratio(a, b):
    return None if not a or not b else a / b


def comparison(runs, ort):
    lines = [
        "| workload | conns | server | req/s | rows/s | p50 µs | p99 µs | errors | gateway ÷ it |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    conns_seen = sorted({r["connections"] for r in runs if r["server"] in LABELS})
    for w in WORKLOADS:
        for c in conns_seen:
            gw = find(runs, "gateway", w, c)
            for s in ORDER:
                r = find(runs, s, w, c)
                if r is None:
                    continue
                rel = ratio(gw and gw["rps"], r["rps"]) if s != "gateway" else None
                lines.append(
                    f"| {w} | {c} | {LABELS[s]} | {fmt(r['rps'])} | {fmt(r['rows_per_s'])} | "
                    f"{fmt(r['p50_us'])} | {fmt(r['p99_us'])} | {r['errors']} | "
                    f"{'-' if rel is None else f'{rel:.2f}×'} |"
                )
        if w in ort:
            o = ort[w]
            best_gw = max((r["rows_per_s"] for r in runs if r["server"] == "gateway" and r["workload"] == w),
                          default=None)
            rel = ratio(best_gw, o["rows_per_s"])
            lines.append(
                f"| {w} | - | ort_max in-process ({o['instances']} inst × {o['threads']} thr, "
                f"{o['run_us']:.0f} µs/run) | {fmt(o['runs_per_s'])} | {fmt(o['rows_per_s'])} | - | - | - | "
                f"{'-' if rel is None else f'{rel:.2f}× (best gateway rows/s)'} |"
            )
    return lines


def peers_summary(runs):
    """Gateway ÷ each server at the highest concurrency, per workload."""
    top = max((r["connections"] for r in runs), default=32)
    others = [s for s in ORDER if s != "gateway" and any(r["server"] == s for r in runs)]
    head = "| workload @ %d conns | gateway req/s | " % top + " | ".join(f"÷ {LABELS[s]}" for s in others) + " |"
    lines = [head, "| --- | ---: |" + " ---: |" * len(others)]
    for w in WORKLOADS:
        gw = find(runs, "gateway", w, top)
        if gw is None:
            continue
        cells = []
        for s in others:
            r = find(runs, s, w, top)
            rel = ratio(gw["rps"], r and r["rps"])
            cells.append("-" if rel is None else f"{rel:.2f}× ({fmt(r['rps'])})")
        lines.append(f"| {w} | {fmt(gw['rps'])} | " + " | ".join(cells) + " |")
    return lines


def sweep_table(runs):
    variants = sorted({r["server"] for r in runs if r["server"].startswith("sweep-")},
                      key=lambda v: (v.count("inst"), v.count("thr"), v))
    if not variants:
        return []
    cols = [("credit-b1", 1), ("credit-b1", 32), ("dense-b1", 8), ("dense-b1", 32)]
    lines = [
        "| variant | " + " | ".join(f"{w} c{c}: req/s, p50/p99 µs" for w, c in cols) + " |",
        "| --- |" + " --- |" * len(cols),
    ]
    for v in variants:
        cells = []
        for w, c in cols:
            r = find(runs, v, w, c)
            cells.append("-" if r is None else f"{fmt(r['rps'])}, {fmt(r['p50_us'])}/{fmt(r['p99_us'])}")
        lines.append(f"| {v[len('sweep-'):]} | " + " | ".join(cells) + " |")
    return lines


def main():
    out = sys.argv[1]
    machine = sys.argv[sys.argv.index("--machine") + 1] if "--machine" in sys.argv else "unknown"
    runs, ort, failed = load(out)
    md = [f"# Comparison run {os.path.basename(out)}", "", f"Machine: {machine}. Closed loop, "
          "loadtest (one generator core), JSON payloads identical for every server.", ""]
    md += ["## Gateway ÷ each server (highest concurrency)", ""] + peers_summary(runs) + [""]
    md += ["## Every run", ""] + comparison(runs, ort) + [""]
    sweep = sweep_table(runs)
    if sweep:
        md += ["## Gateway settings sweep (max_batch_size 32 unless nobatch; dN = max_queue_delay_us N; "
               "inst2 = 2 instances; thr2 = 2 intra-op threads; io2 = 2 async threads instead of the default, half the cores)", ""] + sweep + [""]
    if failed:
        md += ["## Peers that did not run", ""] + [f"- {k}: {v}" for k, v in sorted(failed.items())] + [""]
    text = "\n".join(md)
    print(text)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"machine": machine, "runs": runs, "ort_max": ort, "failed": failed}, f, indent=1)


if __name__ == "__main__":
    main()
