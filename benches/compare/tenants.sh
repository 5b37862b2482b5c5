#!/usr/bin/env bash
# Issue 17's two targets for the front door, measured with the method of benches/README.md: the
# gateway pinned to core 1, the load generators to core 0, every target a ratio within one run.
#
#   1. priority: an online tenant's p99 (open loop, ONLINE_RPS) while a batch tenant saturates
#      the gateway (closed loop, 32 connections), against the same online load alone: <= 1.5x.
#      The control: the same two tenants both `online` (no priority), to show what it buys.
#   2. overhead: credit batch 1, 32 connections, closed loop: [auth] and quotas on (one online
#      tenant with an rps/burst bucket and a max_in_flight cap, both far above what it reaches)
#      and [tracing] sampling 1% to a real OTLP receiver (scripts/otlp/collector.py, on core 0),
#      against the same config without either: >= 0.97x.
#
# Usage: benches/compare/tenants.sh   (env: DURATION, WARMUP, ONLINE_RPS, ROUNDS, OVERHEAD_ROUNDS)
# Writes benches/results/tenants-<time>/ and prints one PASS/FAIL line per target.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ONLINE_RPS=${ONLINE_RPS:-1000}
ROUNDS=${ROUNDS:-2}
OVERHEAD_ROUNDS=${OVERHEAD_ROUNDS:-9}
SERVER_PIN="taskset -c 1"
LOAD_PIN="taskset -c 0"
results_dir tenants-
build
python3 "$COMPARE/payloads.py" "$OUT/payloads" >/dev/null
PAYLOAD=$OUT/payloads/credit-b1.json

# keys.toml with an online and a batch tenant (BATCH_PRIORITY: batch, or online for the control).
write_keys() {
    local online_hash batch_hash
    online_hash=$(printf %s key-online | "$BIN/gateway" hash-key)
    batch_hash=$(printf %s key-batch | "$BIN/gateway" hash-key)
    cat >"$OUT/keys.toml" <<EOF
[[tenant]]
name = "online"
key_sha256 = "$online_hash"
models = ["*"]
rps = 1000000.0
burst = 100000
max_in_flight = 100000
[[tenant]]
name = "batch"
key_sha256 = "$batch_hash"
models = ["*"]
priority = "$1"
EOF
}

# The OTLP receiver the overhead run's traces go to.
# --count-only: it counts the spans of every export without parsing or keeping them, so it
# takes little of the load generator's core (parsing took about 1% of it) and does not grow.
setsid $LOAD_PIN timeout -k 5 3600 python3 "$REPO/scripts/otlp/collector.py" --count-only \
    >"$OUT/collector.port" 2>"$LOGS/collector.log" &
COLLECTOR_PID=$!
trap 'stop_server || true; kill -- -$COLLECTOR_PID 2>/dev/null' EXIT
for _ in $(seq 1 100); do [ -s "$OUT/collector.port" ] && break; sleep 0.1; done
COLLECTOR_PORT=$(head -1 "$OUT/collector.port")

# config OUT WITH_AUTH [traced]
config() {
    gateway_config "$1" 0 32 1 1
    if [ "$2" = yes ]; then
        printf '\n[auth]\nkeys_file = "%s"\n' "$OUT/keys.toml" >>"$1"
    fi
    if [ "${3:-}" = traced ]; then
        printf '\n[tracing]\notlp_endpoint = "http://127.0.0.1:%s"\nsample_ratio = 0.01\n' "$COLLECTOR_PORT" >>"$1"
    fi
}

# online_p99 TAG [with-batch]: the online tenant's open-loop p99 (µs), with the batch tenant
# saturating the gateway at the same time when asked.
online_p99() {
    local tag=$1 batch_pid=""
    if [ "${2:-}" = with-batch ]; then
        # shellcheck disable=SC2086
        $LOAD_PIN timeout -k 5 $((DURATION + WARMUP + 30)) "$BIN/loadtest" --url "http://127.0.0.1:$PORT" \
            -m credit-scoring --payload "$PAYLOAD" -c 32 -d "$((DURATION + 2))s" --warmup "${WARMUP}s" \
            --timeout 10s --json -H "x-api-key:key-batch" >"$RAW/$tag-batch.json" 2>>"$LOGS/loadtest.log" &
        batch_pid=$!
        sleep 1 # the batch load is running before the online one starts measuring
    fi
    lt "$RAW/$tag-online.json" credit-scoring "$PAYLOAD" 4 -r "$ONLINE_RPS" -H "x-api-key:key-online"
    if [ -n "$batch_pid" ]; then wait "$batch_pid" || true; fi
    field "$RAW/$tag-online.json" "r['latency_us']['p99']"
}

rps_of() { field "$1" "int(r['throughput_rps'])"; }

declare -a PRIO_RATIO CONTROL_RATIO OVERHEAD
for round in $(seq 1 "$ROUNDS"); do
    for mode in batch online; do
        write_keys "$mode"
        config "$OUT/auth.toml" yes
        start_gateway "gateway-$mode-$round" "$OUT/auth.toml"
        alone=$(online_p99 "r$round-$mode-alone")
        loaded=$(online_p99 "r$round-$mode-loaded" with-batch)
        batch_rps=$(rps_of "$RAW/r$round-$mode-loaded-batch.json")
        stop_server
        ratio=$(python3 -c "print(f'{$loaded / max($alone, 1):.2f}')")
        log "round $round, batch tenant '$mode': online p99 alone $alone us, under batch load $loaded us (x$ratio); batch $batch_rps req/s"
        if [ "$mode" = batch ]; then PRIO_RATIO+=("$ratio"); else CONTROL_RATIO+=("$ratio"); fi
    done
done

# The overhead: OVERHEAD_ROUNDS rounds, off and on alternating (odd rounds off first), each
# figure one round's ratio; the verdict is on their median (single rounds on this shared
# machine move by +-5%, and six runs of five rounds split 3-3 on a ~2% cost: nine rounds
# make the median a steadier estimate). Beside req/s, the gateway's own CPU time per request.
gateway_pid() { pgrep -P "$SERVER_PID" | head -1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
served() {
    curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" |
        awk '/^gateway_requests_total/ {n += $NF} END {printf "%d\n", n}'
}
TICK_US=$((1000000 / $(getconf CLK_TCK)))
write_keys online # the tenant called is online; the other one is not called
declare -A CPU_US COLLECTOR_MS
COLLECTOR=$(pgrep -P "$COLLECTOR_PID" | head -1)
declare -a CPU_RATIO
for round in $(seq 1 "$OVERHEAD_ROUNDS"); do
    order="no yes"
    [ $((round % 2)) = 0 ] && order="yes no"
    for auth in $order; do
        traced=""
        [ "$auth" = yes ] && traced=traced
        config "$OUT/overhead-$auth.toml" "$auth" $traced
        start_gateway "gateway-overhead-$auth-$round" "$OUT/overhead-$auth.toml"
        header=()
        [ "$auth" = yes ] && header=(-H "x-api-key:key-online")
        pid=$(gateway_pid)
        ticks0=$(cpu_ticks "$pid") served0=$(served) collector0=$(cpu_ticks "$COLLECTOR")
        lt "$RAW/r$round-overhead-$auth.json" credit-scoring "$PAYLOAD" 32 "${header[@]}"
        ticks1=$(cpu_ticks "$pid") served1=$(served) collector1=$(cpu_ticks "$COLLECTOR")
        CPU_US[$auth]=$(python3 -c "print(f'{($ticks1 - $ticks0) * $TICK_US / max($served1 - $served0, 1):.2f}')")
        # The collector shares the load generator's core: its CPU is shown, to tell apart.
        COLLECTOR_MS[$auth]=$(((collector1 - collector0) * TICK_US / 1000))
        stop_server
    done
    off=$(rps_of "$RAW/r$round-overhead-no.json")
    on=$(rps_of "$RAW/r$round-overhead-yes.json")
    OVERHEAD+=("$(python3 -c "print(f'{$on / max($off, 1):.3f}')")")
    CPU_RATIO+=("$(python3 -c "print(f'{${CPU_US[yes]} / max(${CPU_US[no]}, 0.01):.3f}')")")
    log "round $round: credit c32 with [auth], quotas and 1% tracing $on req/s (${CPU_US[yes]} us CPU/request; collector ${COLLECTOR_MS[yes]} ms CPU), without $off req/s (${CPU_US[no]} us)"
done

judge() {
    local name=$1 op=$2 limit=$3
    shift 3
    local verdict=PASS v
    for v in "$@"; do
        python3 -c "import sys; sys.exit(0 if $v $op $limit else 1)" || verdict=FAIL
    done
    echo "$verdict $name: $* (target $op $limit; one figure per round)"
}
{
    judge "online p99 under a saturating batch tenant / alone" "<=" 1.5 "${PRIO_RATIO[@]}"
    echo "info control, both tenants online (no priority): ${CONTROL_RATIO[*]}"
    median=$(python3 -c "import statistics, sys; print(f'{statistics.median(map(float, sys.argv[1:])):.3f}')" "${OVERHEAD[@]}")
    judge "credit c32 req/s with [auth], quotas and [tracing] 1% / without, median of ${OVERHEAD[*]}" ">=" 0.97 "$median"
    echo "info gateway CPU per request with / without: ${CPU_RATIO[*]}"
    echo "info spans the collector received: $(curl -s "http://127.0.0.1:$COLLECTOR_PORT/count" | python3 -c "import json,sys; print(json.load(sys.stdin)['spans'])")"
} | tee "$OUT/summary.txt"
