#!/usr/bin/env bash
# Issue 11's performance targets, measured so that the machine's limits cancel out: the server
# under test (and every control: bare_hyper, ONNX Runtime in-process, the Python peers) on one
# core (SERVER_CPU, default 1), the load generator on the other (LOAD_CPU, default 0), and every
# target a ratio between figures taken in this one run. acceptance_report.py prints one
# PASS/FAIL line per target and writes acceptance.md (the README's performance table) and
# acceptance.json.
#
#   1. batching never lowers throughput: credit and dense batch-1 requests at 1, 2, 4, 8, 32
#      connections, pinned and unpinned, the default batching config (config/gateway.toml's:
#      max_queue_delay_us = 500, max_batch_size 32 / 8) ≥ 0.95× the same config with
#      max_batch_size = 1; dense at 32 connections ≥ 2.5× unbatched;
#   2. dense batch 8 at one connection ≥ 1.5× FastAPI + onnxruntime; the gateway's ONNX Runtime
#      time per batch within 5% of Python onnxruntime's (same model, batch, one thread, same
#      core, each timed inside its server during the same workload: the load generator on the
#      other core shares the cache; Python timed alone is reported beside it); mean queue wait
#      ≤ 20 µs; decoding a 2,048-float JSON tensor ≤ 50 µs (criterion);
#   3. credit batch 1, 32 connections, JSON ≥ 0.6× bare_hyper; credit at one connection: p50
#      within 30 µs of bare_hyper's;
#   4. dense batch-1 requests, 32 connections, batching on: ≥ 0.85× ONNX Runtime's best
#      one-thread rows/s with binary tensors, ≥ 0.7× with JSON;
#   5. open loop at 50% of the gateway's own closed-loop maximum: p99 ≤ 2× bare_hyper's p99 at
#      the same rate; 3× overload (models/tests/slow, max_in_flight 32): admitted p99 ≤ 1.5×
#      the unloaded p99, refusals' p99 ≤ 1 ms;
#   6. monitoring on (the credit model's `monitor` table, every request stored for feedback):
#      ≥ 0.95× the req/s with it off (credit, 32 connections; off, on, off, on, each side the
#      mean of its two runs);
#   7. gRPC with raw tensors beats HTTP JSON on dense batch 1 at 32 connections;
#   8. Mosec: gateway ≥ 4× its req/s on credit batch 1 and ≥ 2× its rows/s on dense batch 1, at
#      32 connections.
#
# Usage: benches/compare/acceptance.sh [--skip-build] [--duration S] [--warmup S] [--no-peers]
# Writes benches/results/acceptance-<time>/{acceptance.json,acceptance.md,raw/,logs/}.
# Environment: SERVER_CPU, LOAD_CPU, GWBENCH_PORT (uses it to +2), VENV_ROOT.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SKIP_BUILD=0 DURATION=4 WARMUP=1 ORT_SECONDS=3 PEERS=1
while [ $# -gt 0 ]; do
    case "$1" in
        --skip-build) SKIP_BUILD=1 ;;
        --duration) DURATION=$2; shift ;;
        --warmup) WARMUP=$2; shift ;;
        --no-peers) PEERS=0 ;;
        -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
SERVER_CPU=${SERVER_CPU:-1} LOAD_CPU=${LOAD_CPU:-0}
PINNED_SERVER="taskset -c $SERVER_CPU" PINNED_LOAD="taskset -c $LOAD_CPU"
pinned() { SERVER_PIN=$PINNED_SERVER LOAD_PIN=$PINNED_LOAD; }
unpinned() { SERVER_PIN="" LOAD_PIN=""; }
CONNS="1 2 4 8 32"

results_dir acceptance-
if [ "$SKIP_BUILD" = 1 ]; then :; else build || exit 1; fi
python3 "$COMPARE/payloads.py" "$OUT/payloads"
P="$OUT/payloads"
if [ "$PEERS" = 1 ]; then
    "$COMPARE/peers/install.sh" fastapi mosec >>"$LOGS/install.log" 2>&1 || log "a peer failed to install (see $LOGS/install.log)"
fi

# Configs: the default batching (config/gateway.toml's delay and caps), the same without
# batching, with monitoring on the credit model, and the overload one.
gateway_config "$OUT/batch.toml" 500 32 1 1
gateway_config "$OUT/nobatch.toml" 500 1 1 1
cp "$OUT/batch.toml" "$OUT/monitor.toml"
printf '\n[models.credit-scoring.monitor]\noutput = "probabilities"\n' >>"$OUT/monitor.toml"
gateway_config "$OUT/overload.toml" 500 32 1 1 32 1024
scrape() { curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" >"$RAW/metrics-$1.txt"; }

# The controls first, with nothing else running: ONNX Runtime in-process on the server's core.
pinned
log "control: ort_max dense, one thread, batch 1, 8, 32 (core $SERVER_CPU)"
for b in 1 8 32; do
    # shellcheck disable=SC2086
    $SERVER_PIN timeout 120 "$BIN/ort_max" --model "$REPO/models/dense/1/model.onnx" --batch "$b" \
        --instances 1 --threads 1 --duration "$ORT_SECONDS" --warmup 1 --json \
        >"$RAW/ort-dense-b$b.json" 2>>"$LOGS/ort_max.log" || log "ort_max failed (batch $b)"
done
if [ "$PEERS" = 1 ] && [ -x "$VENV_ROOT/fastapi/bin/python" ]; then
    log "control: Python onnxruntime dense batch 8, one thread (core $SERVER_CPU)"
    # shellcheck disable=SC2086
    PYTHONPATH="$COMPARE/peers" $SERVER_PIN timeout 120 "$VENV_ROOT/fastapi/bin/python" \
        "$COMPARE/peers/ort_python.py" "$REPO/models" dense 8 "$ORT_SECONDS" \
        >"$RAW/ort-python-dense-b8.json" 2>>"$LOGS/ort_python.log" || log "ort_python failed"
fi
log "control: criterion decode_json/dense/batch8 (2,048 floats, core $SERVER_CPU)"
# shellcheck disable=SC2086
(cd "$REPO" && $SERVER_PIN cargo bench -q -p benches --bench codec -- --noplot 'decode_json/dense/batch8') \
    >"$LOGS/criterion-decode.log" 2>&1 || log "criterion failed (see $LOGS/criterion-decode.log)"
cp "$REPO/target/criterion/decode_json/dense_batch8/new/estimates.json" "$RAW/criterion-decode-dense-b8.json" 2>/dev/null

# Target 1: every model and concurrency, batching on and off, pinned then unpinned.
sweep() {
    local tag=$1 config=$2 m c payload
    if start_gateway "$tag" "$config"; then
        for m in credit-scoring dense; do
            payload=$P/credit-b1.json
            [ "$m" = dense ] && payload=$P/dense-b1.json
            for c in $CONNS; do
                log "$tag $m b1 c$c"
                lt "$RAW/$tag@$m@c$c.json" "$m" "$payload" "$c"
            done
        done
    fi
    stop_server
}
for pin in pinned unpinned; do
    $pin
    sweep "batch-$pin" "$OUT/batch.toml"
    sweep "nobatch-$pin" "$OUT/nobatch.toml"
done

# Targets 2-7 on the default batching config, pinned.
pinned
if start_server gateway /v2/health/ready "$BIN/gateway" --config "$OUT/batch.toml" \
    --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
    --grpc-listen "127.0.0.1:$((PORT + 2))" --no-watch; then
    log "2. gateway dense b8 c1 (with the gateway's own queue and run times)"
    scrape dense-b8-c1-before
    lt "$RAW/gateway@dense-b8@c1.json" dense "$P/dense-b8.json" 1
    scrape dense-b8-c1-after
    log "3. gateway credit b1 c32 and c1"
    lt "$RAW/gateway@credit@c32.json" credit-scoring "$P/credit-b1.json" 32
    lt "$RAW/gateway@credit@c1.json" credit-scoring "$P/credit-b1.json" 1
    log "4. gateway dense b1 c32, JSON and binary"
    lt "$RAW/gateway@dense@c32.json" dense "$P/dense-b1.json" 32
    lt "$RAW/gateway@dense-binary@c32.json" dense "$P/dense-b1.json" 32 --binary
    log "7. gateway dense b1 c32 over gRPC (raw tensors, 32 streams on 4 connections)"
    LT_URL="http://127.0.0.1:$((PORT + 2))" lt "$RAW/gateway@dense-grpc@c32.json" dense "$P/dense-b1.json" 32 \
        --grpc --h2-connections 4
    RATE50=$(python3 -c "print(round(0.5 * $(field "$RAW/gateway@credit@c32.json" "r['throughput_rps']")))")
    log "5. gateway open loop at $RATE50 req/s (50% of its closed-loop max), 64 connections"
    lt "$RAW/gateway@credit-open50.json" credit-scoring "$P/credit-b1.json" 64 --rate "$RATE50"
fi
stop_server

# Off, on, off, on: two gateways apart in time differ by several percent by themselves, so each
# side is the mean of two runs interleaved with the other side's.
for round in 1 2; do
    for side in monitor-off monitor; do
        config="$OUT/batch.toml"
        [ "$side" = monitor ] && config="$OUT/monitor.toml"
        if start_gateway "$side-$round" "$config"; then
            log "6. gateway credit b1 c32, $side (round $round)"
            lt "$RAW/$side@credit@c32-$round.json" credit-scoring "$P/credit-b1.json" 32
        fi
        stop_server
    done
done

SLOW="$P/slow-1ms.json"
if start_gateway overload "$OUT/overload.toml"; then
    log "5. unloaded: slow model closed loop c32"
    lt "$RAW/overload@slow@c32.json" slow "$SLOW" 32
    OVER_RATE=$(python3 -c "print(round(3 * $(field "$RAW/overload@slow@c32.json" "r['throughput_rps']")))")
    log "5. overload: open loop at $OVER_RATE req/s (3x), 256 connections, max_in_flight 32"
    lt "$RAW/overload@slow-3x.json" slow "$SLOW" 256 --rate "$OVER_RATE" --max-backlog 1000000
fi
stop_server

if start_server bare /v2/health/ready "$BIN/bare_hyper" --listen "127.0.0.1:$PORT" --exit-after "$MAX_SERVER_S"; then
    log "control: bare_hyper credit c32, c1, open loop at $RATE50 req/s"
    lt "$RAW/bare@credit@c32.json" credit-scoring "$P/credit-b1.json" 32
    lt "$RAW/bare@credit@c1.json" credit-scoring "$P/credit-b1.json" 1
    [ -n "${RATE50:-}" ] && lt "$RAW/bare@credit-open50.json" credit-scoring "$P/credit-b1.json" 64 --rate "$RATE50"
fi
stop_server

if [ "$PEERS" = 1 ]; then
    if start_server fastapi /v2/models/dense/ready env PYTHONPATH="$COMPARE/peers" \
        "$VENV_ROOT/fastapi/bin/python" "$COMPARE/peers/fastapi_server.py" "$REPO/models" "$PORT"; then
        log "2. FastAPI dense b8 c1 (with its own sess.run times)"
        curl -s "http://127.0.0.1:$PORT/stats" >"$RAW/fastapi-stats-before.json"
        lt "$RAW/fastapi@dense-b8@c1.json" dense "$P/dense-b8.json" 1
        curl -s "http://127.0.0.1:$PORT/stats" >"$RAW/fastapi-stats-after.json"
    fi
    stop_server
    if start_server mosec / env PYTHONPATH="$COMPARE/peers" \
        "$VENV_ROOT/mosec/bin/python" "$COMPARE/peers/mosec_server.py" "$REPO/models" "$PORT"; then
        log "8. Mosec credit b1 c32, dense b1 c32"
        lt "$RAW/mosec@credit@c32.json" credit-scoring "$P/credit-b1.json" 32
        lt "$RAW/mosec@dense@c32.json" dense "$P/dense-b1.json" 32
    fi
    stop_server
fi

python3 "$COMPARE/acceptance_report.py" "$OUT" \
    --machine "$(nproc) cores, $(uname -sr), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" \
    --pinning "server on core $SERVER_CPU, load generator on core $LOAD_CPU"
log "results in $OUT"
