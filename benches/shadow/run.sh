#!/usr/bin/env bash
# Does a shadow cost the primary anything? Issue 3's benchmark, in one run on one machine:
#   A  credit-scoring v1 alone                 vs  B  + v3 (same cost) shadowing 100% of traffic
#   C  mirror v1 alone                         vs  D  + mirror v2 (~1000x slower) shadowing 100%
# each at the same fixed open-loop rate (latency from the intended send time), alternating
# A/B/A/B and C/D/C/D so drift on a shared machine hits both sides. Prints primary p50/p99 and,
# for D, the shadow copies dropped because its budget (shadow_max_in_flight) was full.
#
#   benches/shadow/run.sh [RATE] [SECONDS]      (defaults 1500 req/s, 10 s; release builds first)
set -euo pipefail
cd "$(dirname "$0")/../.."
RATE=${1:-1500}
SECS=${2:-10}
PORT=${SHADOW_BENCH_PORT:-38300}
ADMIN=$((PORT + 1))
OUT=$(mktemp -d "${TMPDIR:-/tmp}/shadow-bench.XXXXXX")
cargo build --release -q -p gateway -p loadtest

config() { # NAME MODEL SHADOW(or empty)
    local shadows=""
    [[ -n "$3" ]] && shadows=", shadows = [{ version = $3, percent = 100.0 }]"
    local repo="models"
    [[ "$2" == mirror ]] && repo="models/tests"
    cat > "$OUT/$1.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
admin_listen = "127.0.0.1:$ADMIN"
[models.$2]
repository = "$repo"
routing = { primary = 1$shadows }
TOML
}
config A credit-scoring ""
config B credit-scoring 3
config C mirror ""
config D mirror 2

run() { # NAME MODEL
    timeout -k 5 $((SECS + 60)) target/release/gateway --config "$OUT/$1.toml" --no-watch 2>"$OUT/$1.log" &
    local pid=$!
    for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/v2/health/ready" >/dev/null && break; sleep 0.1; done
    target/release/loadtest --url "http://127.0.0.1:$PORT" --model "$2" --rate "$RATE" \
        --connections 32 --warmup 2s --duration "${SECS}s" --json > "$OUT/$1.$3.json"
    curl -fs "http://127.0.0.1:$ADMIN/metrics" > "$OUT/$1.$3.metrics" || true
    kill -TERM "$pid"; wait "$pid" || true
}
for round in 1 2; do
    run A credit-scoring "$round"; run B credit-scoring "$round"
    run C mirror "$round"; run D mirror "$round"
done

python3 - "$OUT" "$RATE" <<'PY'
import glob, json, re, sys
out, rate = sys.argv[1], sys.argv[2]
def load(name):
    rows = []
    for path in sorted(glob.glob(f"{out}/{name}.*.json")):
        r = json.load(open(path))
        lat = r.get("latency_us", {})
        rows.append((lat.get("p50"), lat.get("p99"), r.get("errors", 0)))
    return rows
def metric(name, pattern):
    total = 0.0
    for path in glob.glob(f"{out}/{name}.*.metrics"):
        for line in open(path):
            if re.match(pattern, line):
                total += float(line.rsplit(" ", 1)[1])
    return total
print(f"open loop at {rate} req/s, 32 connections; primary latency in microseconds (p50 / p99 per round)")
for a, b, what in [("A", "B", "credit-scoring v1, +v3 shadow (same cost)"), ("C", "D", "mirror v1, +v2 shadow (~1000x slower)")]:
    ra, rb = load(a), load(b)
    p99a = sorted(r[1] for r in ra)[len(ra)//2] if ra else None
    p99b = sorted(r[1] for r in rb)[len(rb)//2] if rb else None
    print(f"{what}:")
    print(f"  without shadow: " + ", ".join(f"{p50}/{p99}" for p50, p99, _ in ra))
    print(f"  with shadow:    " + ", ".join(f"{p50}/{p99}" for p50, p99, _ in rb))
    if p99a and p99b:
        print(f"  p99 ratio (with / without, medians of rounds): {p99b / p99a:.3f}")
    print(f"  errors: without {sum(r[2] or 0 for r in ra)}, with {sum(r[2] or 0 for r in rb)}")
dropped = metric("D", r'gateway_shadow_requests_total\{.*outcome="dropped"')
ok = metric("D", r'gateway_shadow_requests_total\{.*outcome="ok"')
print(f"slow shadow copies: {ok:.0f} ran, {dropped:.0f} dropped (budget full), counted in gateway_shadow_requests_total")
PY
echo "raw reports: $OUT"
