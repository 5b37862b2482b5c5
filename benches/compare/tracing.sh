#!/usr/bin/env bash
# Issue 17's tracing overhead, measured with the method of benches/README.md: credit batch 1,
# 32 connections, closed loop, the gateway pinned to core 1 and `loadtest` to core 0, with
# [tracing] at sample_ratio RATIO (0.01) exporting to a real OTLP/HTTP receiver
# (scripts/otlp/collector.py, on core 0 with the load generator) against the same config without
# [tracing]; the two alternate, ROUNDS times, and each round's ratio is one figure. Beside
# req/s, the gateway's own CPU time per request served (utime + stime from /proc, over every
# request `gateway_requests_total` counted, warm-up included): on a machine busy with other
# work, throughput moves with the neighbours while CPU per request mostly stays put.
#
# Usage: benches/compare/tracing.sh   (env: DURATION, WARMUP, ROUNDS, RATIO; SKIP_BUILD=1 and
# BIN_DIR=... to use binaries built elsewhere)
# Writes benches/results/tracing-<time>/ and prints the ratios and what the collector received.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
RATIO=${RATIO:-0.01}
SERVER_PIN="taskset -c 1"
LOAD_PIN="taskset -c 0"
BIN=${BIN_DIR:-$BIN}
results_dir tracing-
[ "${SKIP_BUILD:-0}" = 1 ] || build
python3 "$COMPARE/payloads.py" "$OUT/payloads" >/dev/null
PAYLOAD=$OUT/payloads/credit-b1.json

# The receiver: its own session, stopped with the server when the script ends.
setsid $LOAD_PIN timeout -k 5 "$MAX_SERVER_S" python3 "$REPO/scripts/otlp/collector.py" \
    >"$OUT/collector.port" 2>"$LOGS/collector.log" &
COLLECTOR_PID=$!
trap 'stop_server || true; kill -- -$COLLECTOR_PID 2>/dev/null' EXIT
for _ in $(seq 1 100); do [ -s "$OUT/collector.port" ] && break; sleep 0.1; done
COLLECTOR_PORT=$(head -1 "$OUT/collector.port")

gateway_config "$OUT/off.toml" 0 32 1 1
cp "$OUT/off.toml" "$OUT/on.toml"
printf '\n[tracing]\notlp_endpoint = "http://127.0.0.1:%s"\nsample_ratio = %s\n' "$COLLECTOR_PORT" "$RATIO" >>"$OUT/on.toml"

rps_of() { field "$1" "int(r['throughput_rps'])"; }

# The gateway process (the child of `timeout`, whose PID is SERVER_PID).
gateway_pid() { pgrep -P "$SERVER_PID" | head -1; }
# Its CPU time so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Requests it has answered (every outcome).
served() {
    curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" |
        awk '/^gateway_requests_total/ {n += $NF} END {printf "%d\n", n}'
}

declare -a RATIOS CPU_RATIOS
declare -A CPU_US
TICK_US=$((1000000 / $(getconf CLK_TCK)))
for round in $(seq 1 "$ROUNDS"); do
    for mode in off on; do
        start_gateway "gateway-$mode-$round" "$OUT/$mode.toml"
        pid=$(gateway_pid)
        ticks0=$(cpu_ticks "$pid") served0=$(served)
        lt "$RAW/r$round-$mode.json" credit-scoring "$PAYLOAD" 32
        ticks1=$(cpu_ticks "$pid") served1=$(served)
        CPU_US[$mode]=$(python3 -c "print(f'{($ticks1 - $ticks0) * $TICK_US / max($served1 - $served0, 1):.2f}')")
        curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | grep '^gateway_trace_spans_total' \
            >"$RAW/r$round-$mode-spans.txt" || true
        stop_server || true  # lib.sh's stop_server is not written for `set -e`
    done
    off=$(rps_of "$RAW/r$round-off.json")
    on=$(rps_of "$RAW/r$round-on.json")
    RATIOS+=("$(python3 -c "print(f'{$on / max($off, 1):.3f}')")")
    CPU_RATIOS+=("$(python3 -c "print(f'{${CPU_US[on]} / max(${CPU_US[off]}, 0.01):.3f}')")")
    log "round $round: credit c32 with [tracing] at $RATIO $on req/s (${CPU_US[on]} us CPU/request), without $off req/s (${CPU_US[off]} us); spans: $(tr '\n' ' ' <"$RAW/r$round-on-spans.txt")"
done
received=$(curl -s "http://127.0.0.1:$COLLECTOR_PORT/spans" | python3 -c "import json,sys; print(len(json.load(sys.stdin)))")
{
    echo "credit c32 req/s with [tracing] sample_ratio $RATIO / without: ${RATIOS[*]} (one figure per round; target >= 0.97 for issue 17 as a whole)"
    echo "gateway CPU per request with / without: ${CPU_RATIOS[*]} (one figure per round)"
    echo "spans the collector received: $received"
} | tee "$OUT/summary.txt"
