"""Judges acceptance.sh's raw reports against issue 11's targets: prints one PASS/FAIL line per
target (MISSING when a figure it needs was not measured) and writes acceptance.md (the README's
performance table: every figure with its control beside it) and acceptance.json. Stdlib only.
Usage: acceptance_report.py OUT_DIR [--machine TEXT] [--pinning TEXT]"""

import json
import os
import re
import sys


def arg(name, default):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


out = sys.argv[1]
raw = os.path.join(out, "raw")
CONNS = (1, 2, 4, 8, 32)


def load(name):
    try:
        with open(os.path.join(raw, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def rep(name):
    return load(name + ".json")


def get(r, *path):
    for p in path:
        if r is None:
            return None
        r = r.get(p) if isinstance(r, dict) else None
    return r


def rps(r):
    return get(r, "throughput_rps")


def div(a, b):
    return None if a is None or not b else a / b


def num(v, unit=""):
    if v is None:
        return "-"
    return f"{v:,.0f}{unit}" if abs(v) >= 100 else f"{v:.2f}{unit}"


def metric_sums(name):
    """{metric name: value} summed over the dense model's series in a scraped /metrics."""
    sums = {}
    try:
        text = open(os.path.join(raw, f"metrics-{name}.txt")).read()
    except OSError:
        return sums
    for line in text.splitlines():
        m = re.match(r'^([a-z_]+)\{([^}]*)\} ([0-9.eE+-]+)$', line)
        if m and 'model="dense"' in m.group(2):
            sums[m.group(1)] = sums.get(m.group(1), 0.0) + float(m.group(3))
    return sums


checks = []


def check(target, name, value, goal, ok, detail):
    met = None if value is None else bool(ok)
    checks.append({"target": target, "check": name, "value": value, "goal": goal, "met": met, "detail": detail})


# 1. Batching never lowers throughput.
for pin in ("pinned", "unpinned"):
    for model in ("credit-scoring", "dense"):
        for c in CONNS:
            on, off = rep(f"batch-{pin}@{model}@c{c}"), rep(f"nobatch-{pin}@{model}@c{c}")
            r = div(rps(on), rps(off))
            check(1, f"{model} b1 c{c} {pin}: batching ÷ no batching", r, "≥ 0.95", r is not None and r >= 0.95,
                  f"{num(rps(on))} vs {num(rps(off))} req/s")
    on, off = rep(f"batch-{pin}@dense@c32"), rep(f"nobatch-{pin}@dense@c32")
    r = div(rps(on), rps(off))
    check(1, f"dense b1 c32 {pin}: batch-mates found", r, "≥ 2.5", r is not None and r >= 2.5,
          f"{num(rps(on))} vs {num(rps(off))} req/s")

# 2. Low concurrency.
gw8, fa8 = rep("gateway@dense-b8@c1"), rep("fastapi@dense-b8@c1")
r = div(rps(gw8), rps(fa8))
check(2, "dense b8 c1: gateway ÷ FastAPI + onnxruntime", r, "≥ 1.5", r is not None and r >= 1.5,
      f"{num(rps(gw8))} vs {num(rps(fa8))} req/s; p50 {num(get(gw8, 'latency_us', 'p50'))} vs "
      f"{num(get(fa8, 'latency_us', 'p50'))} µs")
before, after = metric_sums("dense-b8-c1-before"), metric_sums("dense-b8-c1-after")


def mean_delta(metric):
    s = after.get(metric + "_sum", 0) - before.get(metric + "_sum", 0)
    n = after.get(metric + "_count", 0) - before.get(metric + "_count", 0)
    return None if n <= 0 else s / n * 1e6


run_us, queue_us = mean_delta("gateway_inference_duration_seconds"), mean_delta("gateway_queue_duration_seconds")
fa_before, fa_after = load("fastapi-stats-before.json"), load("fastapi-stats-after.json")
fa_runs = (get(fa_after, "runs") or 0) - (get(fa_before, "runs") or 0)
py = None if fa_runs <= 0 else ((get(fa_after, "seconds") or 0) - (get(fa_before, "seconds") or 0)) / fa_runs * 1e6
alone = get(load("ort-python-dense-b8.json"), "run_us")
rs = get(load("ort-dense-b8.json"), "run_us")
r = div(run_us, py)
check(2, "dense b8 c1: gateway's ONNX Runtime time per batch ÷ Python onnxruntime's (each inside its server)", r,
      "≤ 1.05", r is not None and r <= 1.05,
      f"{num(run_us, ' µs')} vs {num(py, ' µs')}; alone on the core: Python {num(alone, ' µs')}, ort_max {num(rs, ' µs')}")
check(2, "dense b8 c1: mean queue wait", queue_us, "≤ 20 µs", queue_us is not None and queue_us <= 20,
      f"{num(queue_us, ' µs')} a request")
decode = get(load("criterion-decode-dense-b8.json"), "mean", "point_estimate")
decode_us = None if decode is None else decode / 1000
check(2, "decode a 2,048-float JSON tensor (criterion)", decode_us, "≤ 50 µs",
      decode_us is not None and decode_us <= 50, f"{num(decode_us, ' µs')}")

# 3. Credit against bare hyper.
g32, b32, g1, b1 = rep("gateway@credit@c32"), rep("bare@credit@c32"), rep("gateway@credit@c1"), rep("bare@credit@c1")
r = div(rps(g32), rps(b32))
check(3, "credit b1 c32 JSON: gateway ÷ bare_hyper", r, "≥ 0.6", r is not None and r >= 0.6,
      f"{num(rps(g32))} vs {num(rps(b32))} req/s")
p_g, p_b = get(g1, "latency_us", "p50"), get(b1, "latency_us", "p50")
gap = None if p_g is None or p_b is None else p_g - p_b
check(3, "credit b1 c1: gateway p50 − bare_hyper p50", gap, "≤ 30 µs", gap is not None and gap <= 30,
      f"{num(p_g, ' µs')} vs {num(p_b, ' µs')}")

# 4. Dense against ONNX Runtime's best one-thread rows/s.
ort = {b: load(f"ort-dense-b{b}.json") for b in (1, 8, 32)}
best_b, best = max(((b, get(o, "rows_per_s")) for b, o in ort.items() if get(o, "rows_per_s")),
                   key=lambda x: x[1], default=(None, None))
for label, name, goal in (("binary", "gateway@dense-binary@c32", 0.85), ("JSON", "gateway@dense@c32", 0.7)):
    g = get(rep(name), "rows_per_s")
    r = div(g, best)
    check(4, f"dense b1 c32 {label}: gateway rows/s ÷ ONNX Runtime's best (one thread)", r, f"≥ {goal}",
          r is not None and r >= goal, f"{num(g)} vs {num(best)} rows/s (ort_max batch {best_b})")

# 5. Open loop and overload.
o_g, o_b = rep("gateway@credit-open50"), rep("bare@credit-open50")
r = div(get(o_g, "latency_us", "p99"), get(o_b, "latency_us", "p99"))
check(5, "open loop at 50% of max: gateway p99 ÷ bare_hyper p99 (same rate)", r, "≤ 2", r is not None and r <= 2,
      f"{num(get(o_g, 'latency_us', 'p99'), ' µs')} vs {num(get(o_b, 'latency_us', 'p99'), ' µs')} at "
      f"{num(get(o_g, 'open_loop', 'target_rps'))} req/s (achieved {num(get(o_g, 'open_loop', 'achieved_rps'))})")
unloaded, over = rep("overload@slow@c32"), rep("overload@slow-3x")
admitted = get(over, "latency_ok_us", "p99") or (get(over, "latency_us", "p99") if get(over, "errors") == 0 else None)
r = div(admitted, get(unloaded, "latency_us", "p99"))
check(5, "3× overload: admitted p99 ÷ unloaded p99", r, "≤ 1.5", r is not None and r <= 1.5,
      f"{num(admitted, ' µs')} vs {num(get(unloaded, 'latency_us', 'p99'), ' µs')}; "
      f"{num(get(over, 'ok'))} admitted, {num(get(over, 'errors'))} refused")
refused = get(over, "latency_errors_us", "p99")
check(5, "3× overload: refusals' p99", refused, "≤ 1,000 µs", refused is not None and refused <= 1000,
      f"{num(refused, ' µs')}")

# 6. Monitoring cost.
def mean_rps(side):
    runs = [rps(rep(f"{side}@credit@c32-{k}")) for k in (1, 2)]
    return None if None in runs else sum(runs) / len(runs)


on, off = mean_rps("monitor"), mean_rps("monitor-off")
r = div(on, off)
check(6, "credit b1 c32: monitoring on ÷ off (each the mean of two interleaved runs)", r, "≥ 0.95",
      r is not None and r >= 0.95, f"{num(on)} vs {num(off)} req/s")

# 7. gRPC against HTTP JSON.
grpc, http = rep("gateway@dense-grpc@c32"), rep("gateway@dense@c32")
r = div(rps(grpc), rps(http))
check(7, "dense b1 c32: gRPC raw ÷ HTTP JSON", r, "> 1", r is not None and r > 1,
      f"{num(rps(grpc))} vs {num(rps(http))} req/s")

# 8. Mosec.
m_c, m_d = rep("mosec@credit@c32"), rep("mosec@dense@c32")
r = div(rps(g32), rps(m_c))
check(8, "credit b1 c32: gateway ÷ Mosec req/s", r, "≥ 4", r is not None and r >= 4,
      f"{num(rps(g32))} vs {num(rps(m_c))} req/s")
r = div(get(http, "rows_per_s"), get(m_d, "rows_per_s"))
check(8, "dense b1 c32: gateway ÷ Mosec rows/s", r, "≥ 2", r is not None and r >= 2,
      f"{num(get(http, 'rows_per_s'))} vs {num(get(m_d, 'rows_per_s'))} rows/s")

word = {True: "PASS", False: "FAIL", None: "MISSING"}
machine, pinning = arg("--machine", "?"), arg("--pinning", "?")
lines = [f"Machine: {machine}. Pinning: {pinning}. Every ratio within this one run.", "",
         "| # | check | measured | target | result | figures |", "| --- | --- | --- | --- | --- | --- |"]
for c in checks:
    v = c["value"]
    shown = "-" if v is None else (f"{v:.2f}" if abs(v) < 100 else f"{v:,.0f}")
    print(f"{word[c['met']]:7} {c['target']}. {c['check']}: {shown} (target {c['goal']}; {c['detail']})")
    lines.append(f"| {c['target']} | {c['check']} | {shown} | {c['goal']} | {word[c['met']]} | {c['detail']} |")
passed = sum(1 for c in checks if c["met"])
print(f"{passed} of {len(checks)} checks passed")
with open(os.path.join(out, "acceptance.md"), "w") as f:
    f.write("\n".join(lines) + f"\n\n{passed} of {len(checks)} checks passed.\n")
with open(os.path.join(out, "acceptance.json"), "w") as f:
    json.dump({"machine": machine, "pinning": pinning, "checks": checks}, f, indent=1)
