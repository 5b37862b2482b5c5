#!/usr/bin/env bash
# What prediction monitoring and feedback storage cost: requests/s (and gateway CPU per request)
# of the same gateway with `[models.credit-scoring.monitor]` (A) and without it (B), same load,
# alternating in one run: A B, B A, A B, ... (a drift in the machine's load cancels out).
#
#   loadtest/demo/monitor_overhead.sh [ROUNDS] [SECONDS] [CONNECTIONS]
#   loadtest/demo/monitor_overhead.sh 2 10 32      # A B B A, 10 s each, 32 connections (default)
#
# Both gateways run side by side for the whole run (ports 58280/58281, admin 58290/58291; set
# OVERHEAD_PORT_BASE to move them), each with its own config: credit-scoring v1 as the only
# version (no candidate, no shadow, no rollout), batching as in config/gateway.toml. A adds only
# the monitor table. Each round drives A and B with `loadtest` (closed loop, JSON, batch 1): a 2 s
# warm-up, then the measured run. Each gateway's own CPU time is read from /proc around its
# measured runs: CPU microseconds per request, which other load on the machine disturbs far less
# than requests/s. loadtest's requests carry no "id", so A keeps every prediction for a later
# label under the x-request-id the gateway generates (unique per request): the bounded feedback
# store fills up and then evicts its oldest entry on each insert, as in production. No labels are
# sent (that would be different load for A and B).
#
# Needs release builds of gateway and loadtest (cargo build --release -p gateway -p loadtest).
# Everything it starts stops by itself (the gateways run under `timeout`, stopped on exit).
set -euo pipefail
rounds=${1:-2}
secs=${2:-10}
conns=${3:-32}
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
gateway=${GATEWAY:-$root/target/release/gateway}
loadtest=${LOADTEST:-$root/target/release/loadtest}
base=${OVERHEAD_PORT_BASE:-58280}
for bin in "$gateway" "$loadtest"; do
  [[ -x $bin ]] || { echo "missing $bin: cargo build --release -p gateway -p loadtest" >&2; exit 3; }
done
command -v python3 >/dev/null || { echo "python3 is needed to read loadtest's JSON" >&2; exit 3; }

work=$(mktemp -d -t monitor-overhead.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

common='[server]
max_request_bytes = 1_048_576
request_timeout_ms = 5000
max_in_flight = 1024

[runtime]
execution_providers = ["cpu"]
intra_op_threads = 1

[models.credit-scoring]
repository = "models"
instances = 1
batching = { max_batch_size = 32, max_queue_delay_us = 500, max_queue = 1024 }

[models.credit-scoring.routing]
primary = 1
'
printf '%s\n[models.credit-scoring.monitor]\noutput = "probabilities"\n' "$common" >"$work/A.toml"
printf '%s' "$common" >"$work/B.toml"

declare -A gw_pid
start() { # name port admin_port
  timeout $((rounds * (secs + 10) * 2 + 120)) "$gateway" --config "$work/$1.toml" --no-watch \
    --listen "127.0.0.1:$2" --admin-listen "127.0.0.1:$3" 2>"$work/$1.log" &
  pids+=($!)
  local child=""
  for _ in $(seq 50); do
    child=$(pgrep -P "$!" | head -1) && [[ -n $child ]] && break
    sleep 0.1
  done
  gw_pid[$1]=$child
  for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$2/v2/health/ready" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "gateway $1 did not become ready; its log:" >&2
  cat "$work/$1.log" >&2
  exit 3
}
start A "$base" $((base + 10))
start B $((base + 1)) $((base + 11))

cpu_ticks() { # utime + stime of a process, in clock ticks
  awk '{print $14 + $15}' "/proc/$1/stat"
}

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "A = monitor on (output probabilities; prediction metrics, drift, feedback store), B = monitor off"
echo "loadtest: credit-scoring, closed loop, $conns connections, JSON, batch 1, 2 s warm-up + ${secs} s measured, $rounds rounds"
for round in $(seq 1 "$rounds"); do
  order="A B"
  [[ $((round % 2)) -eq 0 ]] && order="B A" # A B B A A B ...: a drift in the machine's load cancels out
  for side in $order; do
    port=$base
    [[ $side == B ]] && port=$((base + 1))
    # Warm-up (not recorded), then the measured run; the gateway's CPU time is read around it.
    "$loadtest" --url "http://127.0.0.1:$port" -m credit-scoring -c "$conns" --batch 1 -d 2s -q >/dev/null
    cpu0=$(cpu_ticks "${gw_pid[$side]}")
    "$loadtest" --url "http://127.0.0.1:$port" -m credit-scoring -c "$conns" --batch 1 \
      -d "${secs}s" --json >"$work/$side.$round.json"
    cpu1=$(cpu_ticks "${gw_pid[$side]}")
    echo "$(( cpu1 - cpu0 ))" >"$work/$side.$round.cpu"
    python3 - "$side" "$round" "$work/$side.$round.json" "$((cpu1 - cpu0))" "$(getconf CLK_TCK)" <<'PY'
import json, sys
side, rnd, path, ticks, hz = sys.argv[1:]
r = json.load(open(path))
l = r["latency_us"]
cpu_us = int(ticks) / int(hz) * 1e6 / max(1, r["requests"])
print(f"round {rnd} {side} ({'monitor on ' if side == 'A' else 'monitor off'}) {r['throughput_rps']:9.0f} req/s  "
      f"p50 {l['p50']} us  p99 {l['p99']} us  errors {r['errors']}  gateway CPU {cpu_us:.1f} us/request")
PY
  done
done

# A's monitoring really ran: prediction metrics and stored predictions.
count=$(curl -s "http://127.0.0.1:$((base + 10))/metrics" | grep -oP '^gateway_prediction_value_count\{[^}]*\} \K[0-9]+' | head -1)
echo "A recorded ${count:-0} predictions (gateway_prediction_value_count); B recorded $(curl -s "http://127.0.0.1:$((base + 11))/metrics" | grep -c '^gateway_prediction_value_count' || true) prediction series"

python3 - "$work" "$rounds" "$(getconf CLK_TCK)" <<'PY'
import json, statistics, sys
work, rounds, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
runs = {s: [json.load(open(f"{work}/{s}.{i}.json")) for i in range(1, rounds + 1)] for s in "AB"}
cpu = {s: [int(open(f"{work}/{s}.{i}.cpu").read()) / hz for i in range(1, rounds + 1)] for s in "AB"}
a = [r["throughput_rps"] for r in runs["A"]]
b = [r["throughput_rps"] for r in runs["B"]]
pairs = [x / y for x, y in zip(a, b)]
ratio = statistics.mean(a) / statistics.mean(b)
print(f"throughput: mean A {statistics.mean(a):.0f} req/s, mean B {statistics.mean(b):.0f} req/s: "
      f"A/B = {ratio:.3f} (monitoring costs {100 * (1 - ratio):.1f}%); per round "
      f"{', '.join(f'{p:.3f}' for p in pairs)}, median {statistics.median(pairs):.3f}")
us = {s: 1e6 * sum(cpu[s]) / sum(r["requests"] for r in runs[s]) for s in "AB"}
print(f"gateway CPU per request: A {us['A']:.1f} us, B {us['B']:.1f} us: A/B = {us['A'] / us['B']:.3f} "
      f"(monitoring adds {us['A'] - us['B']:.1f} us, {100 * (us['A'] / us['B'] - 1):.1f}%). Less sensitive "
      f"to other load on the machine than requests/s.")
PY
