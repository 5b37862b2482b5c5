"""Judges remote.sh's raw loadtest reports against issue 15's benchmark target: per variant, the
p50 the proxy adds at one connection (proxied p50 - direct p50, <= 60 us) and the proxied
throughput at 32 connections over the direct one (>= 0.7), one figure per round, each a
difference or ratio of two runs of the same round. A figure whose runs had errors is invalid
(and fails); a variant without figures is MISSING. Prints one PASS/FAIL/MISSING line per target
and variant plus info lines, and writes summary.md (every run) and summary.json. Throughput is
answered (ok) requests per second. Stdlib only.
Usage: remote_report.py OUT_DIR --rounds N --variants V [V...]"""

import json
import os
import statistics
import sys

ADDED_P50_MAX_US = 60
THROUGHPUT_MIN_RATIO = 0.7


def args():
    a = sys.argv[1:]
    out, rounds, variants = a[0], 2, []
    if "--rounds" in a:
        rounds = int(a[a.index("--rounds") + 1])
    if "--variants" in a:
        variants = [v for v in a[a.index("--variants") + 1 :] if not v.startswith("--")]
    return out, rounds, variants


def load(raw, name):
    try:
        with open(os.path.join(raw, name + ".json")) as f:
            r = json.load(f)
        return r if isinstance(r, dict) and "latency_us" in r else None
    except (OSError, ValueError):
        return None


def ok_rps(r):
    return r["ok"] / max(r["elapsed_s"], 1e-9)


def fmt(x, digits=0):
    return "-" if x is None else (f"{x:,.{digits}f}" if digits else f"{round(x):,}")


def main():
    out, rounds, variants = args()
    raw = os.path.join(out, "raw")
    lines, table, summary = [], [], {}
    for v in variants:
        added, ratios, runs = [], [], {}
        for rnd in range(1, rounds + 1):
            rep = {(side, c): load(raw, f"r{rnd}-{v}-{side}-c{c}") for side in ("direct", "proxied") for c in (1, 32)}
            for (side, c), r in rep.items():
                if r is None:
                    continue
                runs.setdefault((side, c), []).append(r)
                lat = r["latency_us"]
                table.append(
                    f"| {v} | {rnd} | {side} | {c} | {fmt(ok_rps(r))} | {fmt(lat['p50'])} | {fmt(lat['p99'])} | {r['errors']} |"
                )
            d1, p1, d32, p32 = (rep[k] for k in (("direct", 1), ("proxied", 1), ("direct", 32), ("proxied", 32)))
            if d1 and p1:
                errors = d1["errors"] + p1["errors"]
                added.append((p1["latency_us"]["p50"] - d1["latency_us"]["p50"], errors))
            if d32 and p32:
                errors = d32["errors"] + p32["errors"]
                ratios.append((ok_rps(p32) / max(ok_rps(d32), 1e-9), errors))
        lines.append(judge(f"proxy adds p50 at c1 ({v})", added, "<=", ADDED_P50_MAX_US, "µs", 0))
        lines.append(judge(f"proxy throughput c32 / direct ({v})", ratios, ">=", THROUGHPUT_MIN_RATIO, "", 3))
        med = {}
        for (side, c), rs in sorted(runs.items()):
            med[f"{side}_c{c}"] = {
                "ok_rps": statistics.median(ok_rps(r) for r in rs),
                "p50_us": statistics.median(r["latency_us"]["p50"] for r in rs),
                "p99_us": statistics.median(r["latency_us"]["p99"] for r in rs),
                "errors": sum(r["errors"] for r in rs),
            }
        if med:
            g = lambda k, f: med.get(k, {}).get(f)
            lines.append(
                f"info {v} (medians over rounds): c1 p50/p99 direct {fmt(g('direct_c1', 'p50_us'))}/"
                f"{fmt(g('direct_c1', 'p99_us'))} µs, proxied {fmt(g('proxied_c1', 'p50_us'))}/"
                f"{fmt(g('proxied_c1', 'p99_us'))} µs; c32 direct {fmt(g('direct_c32', 'ok_rps'))} req/s, "
                f"proxied {fmt(g('proxied_c32', 'ok_rps'))} req/s"
            )
        summary[v] = {
            "added_p50_us": [a for a, _ in added],
            "throughput_ratio_c32": [r for r, _ in ratios],
            "errors": {"added_p50": [e for _, e in added], "throughput": [e for _, e in ratios]},
            "medians": med,
        }
    print("\n".join(lines))
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n\n")
        f.write("| variant | round | side | conns | ok req/s | p50 us | p99 us | errors |\n")
        f.write("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |\n")
        f.write("\n".join(table) + "\n")


def judge(name, figures, op, limit, unit, digits):
    if not figures:
        return f"MISSING {name}: not measured (target {op} {limit})"
    ok = all(e == 0 and (x <= limit if op == "<=" else x >= limit) for x, e in figures)
    shown = ", ".join(
        (f"{x:.{digits}f}" if digits else f"{x:,}") + (f" (invalid: {e} errors)" if e else "") for x, e in figures
    )
    unit = f" {unit}" if unit else ""
    return f"{'PASS' if ok else 'FAIL'} {name}: {shown}{unit} (target {op} {limit}; one figure per round)"


if __name__ == "__main__":
    main()
