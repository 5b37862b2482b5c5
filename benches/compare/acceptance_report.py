"""Judges acceptance.sh's raw reports against issue 4's targets; prints and writes
acceptance.md and acceptance.json. Stdlib only.
Usage: acceptance_report.py OUT_DIR [--machine TEXT] [--delay-us N]"""

import json
import os
import sys


def arg(name, default):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


out = sys.argv[1]
raw = os.path.join(out, "raw")


def rep(name):
    try:
        return json.load(open(os.path.join(raw, name + ".json")))
    except (OSError, ValueError):
        return None


def get(r, *path):
    for p in path:
        if r is None:
            return None
        r = r.get(p) if isinstance(r, dict) else None
    return r


def div(a, b):
    return None if a is None or not b else a / b


def show(v):
    if v is None:
        return "-"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


gw32, gw1, bare, fastapi = rep("gateway-credit-c32"), rep("gateway-credit-c1"), rep("bare-credit-c32"), rep("fastapi-credit-c32")
dense, nobatch = rep("gateway-dense-c32"), rep("gateway-nobatch-dense-c32")
open70 = rep("gateway-credit-open70")
slow32, over, recovery = rep("gateway-slow-c32"), rep("gateway-slow-overload3x"), rep("gateway-slow-recovery")
ort = [rep(f"ort-dense-b{b}") for b in (1, 8, 32)]
ort_best = max((o for o in ort if o), key=lambda o: o["rows_per_s"], default=None)

checks = []


def check(name, value, target, ok, detail):
    checks.append({"check": name, "value": value, "target": target,
                   "met": None if ok is None else bool(ok), "detail": detail})


r_bare = div(get(gw32, "throughput_rps"), get(bare, "throughput_rps"))
check("credit b1 c32: gateway ÷ bare_hyper req/s", r_bare, "≥ 0.5", r_bare and r_bare >= 0.5,
      f"{get(gw32, 'throughput_rps') or 0:,.0f} vs {get(bare, 'throughput_rps') or 0:,.0f} req/s")
r_fa = div(get(gw32, "throughput_rps"), get(fastapi, "throughput_rps"))
check("credit b1 c32: gateway ÷ FastAPI req/s", r_fa, "≥ 5", r_fa and r_fa >= 5,
      f"{get(gw32, 'throughput_rps') or 0:,.0f} vs {get(fastapi, 'throughput_rps') or 0:,.0f} req/s")
p99_1 = get(gw1, "latency_us", "p99")
check("credit b1 c1: gateway p99 (µs)", p99_1, "< 500", p99_1 is not None and p99_1 < 500,
      f"p50 {get(gw1, 'latency_us', 'p50')} µs, {get(gw1, 'throughput_rps') or 0:,.0f} req/s")
r_ort = div(get(dense, "rows_per_s"), get(ort_best, "rows_per_s"))
check("dense b1 c32: batching rows/s ÷ ort_max best", r_ort, "≥ 0.6", r_ort and r_ort >= 0.6,
      f"{get(dense, 'rows_per_s') or 0:,.0f} vs {get(ort_best, 'rows_per_s') or 0:,.0f} rows/s "
      f"(ort_max batch {get(ort_best, 'batch')}, {get(ort_best, 'instances')} inst × {get(ort_best, 'threads')} thr)")
r_nb = div(get(dense, "rows_per_s"), get(nobatch, "rows_per_s"))
check("dense b1 c32: batching ÷ no batching rows/s", r_nb, "≥ 2", r_nb and r_nb >= 2,
      f"{get(dense, 'rows_per_s') or 0:,.0f} vs {get(nobatch, 'rows_per_s') or 0:,.0f} rows/s")
dense_bin = rep("gateway-dense-c32-binary")
if dense_bin:
    r_bin = div(get(dense_bin, "rows_per_s"), get(ort_best, "rows_per_s"))
    check("dense b1 c32, binary payloads (reference): rows/s ÷ ort_max best", r_bin, "-", None,
          f"{get(dense_bin, 'rows_per_s') or 0:,.0f} rows/s")


def control(name):
    """The same open loop against bare_hyper: the generator's and the machine's own tail."""
    c = rep(name)
    if c is None:
        return ""
    lat = get(c, "latency_us") or {}
    return (f"; control, bare_hyper at the same rate: achieved {get(c, 'open_loop', 'achieved_rps') or 0:,.0f}, "
            f"p50 {lat.get('p50')} / p99 {lat.get('p99')} / max {lat.get('max')} µs, "
            f"p99 ÷ p50 {show(div(lat.get('p99'), lat.get('p50')))}")


for label, run, ctl in (("70%", open70, "bare-credit-open70"),
                        ("50% (reference)", rep("gateway-credit-open50"), "bare-credit-open50")):
    p50o, p99o = get(run, "latency_us", "p50"), get(run, "latency_us", "p99")
    target, achieved = get(run, "open_loop", "target_rps"), get(run, "open_loop", "achieved_rps")
    # Kept up: the rate was sent (≥ 99%) and the generator never held more than 10 ms of due
    # tickets for want of a free connection; otherwise p50 and p99 are both the backlog's.
    backlog = get(run, "open_loop", "max_backlog")
    kept_up = (target is not None and achieved is not None and achieved >= 0.99 * target
               and backlog is not None and backlog <= 0.01 * target)
    r_open = div(p99o, p50o)
    check(f"open loop {label}: p99 ÷ p50 (rate kept up)", r_open, "≤ 5",
          r_open is not None and r_open <= 5 and kept_up,
          f"{'kept up' if kept_up else 'did NOT keep up'}: target {target or 0:,.0f}, achieved {achieved or 0:,.0f} req/s; p50 {p50o} µs, p99 {p99o} µs, "
          f"p99.9 {get(run, 'latency_us', 'p99_9')} µs; generator backlog {get(run, 'open_loop', 'max_backlog')}"
          + control(ctl))
    errs = get(run, "errors")
    check(f"open loop {label}: errors", errs, "0", errs == 0, f"{errs} errors of {get(run, 'requests')}")

kinds = get(over, "errors_by_kind") or []
refused = sum(k["count"] for k in kinds if k["status"] == 503)
other = sum(k["count"] for k in kinds if k["status"] != 503)
err_lat = get(over, "latency_errors_us") or {}
check("3× overload (slow model, ~1 ms/request): refusals are 503, max latency (µs)", err_lat.get("max"), "< 1000 (all 503)",
      (err_lat.get("max") is not None and err_lat["max"] < 1000 and other == 0) if refused else None,
      f"{refused} refused (503), {other} other errors; refusal p50 {err_lat.get('p50')} / p99 "
      f"{err_lat.get('p99')} / p99.9 {err_lat.get('p99_9')} µs; target {get(over, 'open_loop', 'target_rps') or 0:,.0f} req/s, "
      f"achieved {get(over, 'open_loop', 'achieved_rps') or 0:,.0f}, backlog {get(over, 'open_loop', 'max_backlog')}, dropped {get(over, 'open_loop', 'dropped')}"
      + control("bare-overload"))
ok_lat = get(over, "latency_ok_us") or get(over, "latency_us") or {}
unloaded = get(slow32, "latency_us", "p99")
r_adm = div(ok_lat.get("p99"), unloaded)
elapsed = get(over, "elapsed_s") or 1
check("3× overload: admitted p99 ÷ unloaded p99 (closed loop, 32 connections)", r_adm, "≤ 2", r_adm is not None and r_adm <= 2,
      f"admitted p50 {ok_lat.get('p50')} / p99 {ok_lat.get('p99')} µs vs {unloaded} µs; admitted "
      f"{(get(over, 'ok') or 0) / elapsed:,.0f} req/s while refusing {refused / elapsed:,.0f} req/s")
r_rec = div(get(recovery, "throughput_rps"), get(slow32, "throughput_rps"))
check("recovery: closed loop c32 right after ÷ before", r_rec, "≈ 1 (≥ 0.8)", r_rec and r_rec >= 0.8,
      f"{get(recovery, 'throughput_rps') or 0:,.0f} req/s, {get(recovery, 'errors')} errors")


machine = arg("--machine", "unknown")
md = [f"# Issue 4 acceptance run {os.path.basename(out)}", "",
      f"Machine: {machine}. Gateway: release build, max_batch_size 32 (dense: 8), max_queue_delay_us "
      f"{arg('--delay-us', '0')}, 1 instance, 1 intra-op thread. loadtest, JSON payloads.", "",
      "| check | measured | target | met | detail |", "| --- | ---: | --- | --- | --- |"]
for c in checks:
    met = "n/a" if c["met"] is None else ("yes" if c["met"] else "**no**")
    md.append(f"| {c['check']} | {show(c['value'])} | {c['target']} | {met} | {c['detail']} |")
text = "\n".join(md)
print(text)
with open(os.path.join(out, "acceptance.md"), "w") as f:
    f.write(text + "\n")
with open(os.path.join(out, "acceptance.json"), "w") as f:
    json.dump({"machine": machine, "checks": checks}, f, indent=1)
