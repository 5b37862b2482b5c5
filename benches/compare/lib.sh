# Shared by run.sh and acceptance.sh (sourced, not run): building, starting and stopping one
# server at a time on loopback, waiting until it is ready, and driving it with `loadtest`.
#
# Every server runs in its own session (setsid) under `timeout`, so it stops by itself and the
# whole process tree (MLServer's workers, Triton's stubs) is ended by process group. Only
# processes this script started are ever signalled.

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# Binaries come from CARGO_TARGET_DIR when it is set (relative to the repository root, where
# `build` runs cargo), so a benchmark can build beside another checkout's target dir.
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$REPO/$TARGET_DIR" ;; esac
BIN="$TARGET_DIR/release"
COMPARE="$REPO/benches/compare"
VENV_ROOT=${VENV_ROOT:-/tmp/gwbench-venvs}
PORT=${GWBENCH_PORT:-38100}          # data plane of the server under test (one at a time)
ADMIN_PORT=$((PORT + 1))
MAX_SERVER_S=${MAX_SERVER_S:-1800}   # no server outlives this, whatever happens to the script
SERVER_PID=""
SERVER_NAME=""
# CPU pinning (acceptance.sh sets them; empty = unpinned): the server under test, its controls
# and in-process runtimes run under SERVER_PIN, the load generator under LOAD_PIN.
SERVER_PIN=${SERVER_PIN:-}
LOAD_PIN=${LOAD_PIN:-}

# results_dir PREFIX: makes benches/results/PREFIX<time>/{raw,logs} (as OUT, RAW, LOGS) and
# stops the server under test when the script exits or is interrupted.
results_dir() {
    OUT="$REPO/benches/results/$1$(date +%Y%m%d-%H%M%S)"
    RAW="$OUT/raw" LOGS="$OUT/logs"
    mkdir -p "$RAW" "$LOGS"
    trap 'stop_server' EXIT
    trap 'stop_server; exit 130' INT TERM
}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

build() {
    log "building gateway, loadtest, bare_hyper, ort_max (release)"
    (cd "$REPO" && cargo build --release -p gateway -p loadtest -p benches --bins) >&2
}

port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# start_server NAME READY_PATH CMD...: starts CMD (cwd: the repository root), waits up to
# READY_TIMEOUT_S (default 180) seconds for GET READY_PATH to answer 200. Returns 1 (and logs
# why) when it does not. A bind that fails because the port is momentarily some client's
# ephemeral port (38100 is inside Linux's default 32768-60999 range) is retried a few times.
start_server() {
    local name=$1 ready=$2 attempt status
    shift 2
    for attempt in 1 2 3 4 5; do
        start_server_once "$name" "$ready" "$@"
        status=$?
        [ "$status" = 2 ] || return "$status"
        log "$name: port $PORT in use, retrying in 2 s"
        sleep 2
    done
    return 1
}

# One attempt: 0 ready, 1 failed, 2 failed to bind (worth retrying).
start_server_once() {
    local name=$1 ready=$2
    shift 2
    for p in "$PORT" "$ADMIN_PORT" "$((PORT + 2))"; do
        if ! port_free "$p"; then
            log "port $p has a listener (another session?): set GWBENCH_PORT to a free range"
            return 1
        fi
    done
    SERVER_NAME=$name
    # shellcheck disable=SC2086
    (cd "$REPO" && exec setsid $SERVER_PIN timeout -k 5 "$MAX_SERVER_S" "$@") >"$LOGS/$name.log" 2>&1 &
    SERVER_PID=$!
    local i
    for i in $(seq 1 $((${READY_TIMEOUT_S:-180} * 5))); do
        if curl -sf -o /dev/null "http://127.0.0.1:$PORT$ready"; then
            log "$name ready after $((i / 5)) s"
            return 0
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            SERVER_PID=""
            if grep -qiE "address already in use|errno 98" "$LOGS/$name.log"; then
                return 2
            fi
            log "$name exited before it was ready; last lines of $LOGS/$name.log:"
            tail -n 15 "$LOGS/$name.log" >&2
            return 1
        fi
        sleep 0.2
    done
    log "$name not ready after ${READY_TIMEOUT_S:-180} s; last lines of $LOGS/$name.log:"
    tail -n 5 "$LOGS/$name.log" >&2
    stop_server
    return 1
}

# Ends the server's whole process group: TERM, then KILL after 15 s.
stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    kill -TERM -- "-$SERVER_PID" 2>/dev/null
    local i
    for i in $(seq 1 75); do
        kill -0 -- "-$SERVER_PID" 2>/dev/null || break
        sleep 0.2
    done
    kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
    # A port in TIME_WAIT is fine; a listener still there is not.
    for i in $(seq 1 50); do port_free "$PORT" && break; sleep 0.2; done
}

# lt OUTFILE MODEL PAYLOAD CONNECTIONS [extra loadtest flags...]: one closed- or open-loop run,
# its JSON report in OUTFILE. Uses $DURATION and $WARMUP (seconds).
lt() {
    local out=$1 model=$2 payload=$3 conns=$4
    shift 4
    # shellcheck disable=SC2086
    $LOAD_PIN timeout -k 5 $((DURATION + WARMUP + 60)) "$BIN/loadtest" --url "${LT_URL:-http://127.0.0.1:$PORT}" -m "$model" \
        --payload "$payload" -c "$conns" -d "${DURATION}s" --warmup "${WARMUP}s" --timeout 10s --json "$@" \
        >"$out" 2>>"$LOGS/loadtest.log" || log "loadtest failed: $out"
}

# field FILE EXPR: a number out of a loadtest JSON report (EXPR in Python, `r` the report).
field() {
    python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print($2)" "$1" 2>/dev/null || echo 0
}

# Writes a gateway config derived from gateway-bench.toml: gateway_config OUT DELAY_US
# MAX_BATCH INSTANCES THREADS [MAX_IN_FLIGHT [MAX_QUEUE]]. The dense model keeps its own cap
# (see gateway-bench.toml) unless MAX_BATCH is smaller.
gateway_config() {
    local out=$1 delay=$2 batch=$3 instances=$4 threads=$5 inflight=${6:-1024} queue=${7:-1024}
    local dense_cap dense_batch
    dense_cap=$(sed -n '/^\[models\.dense\]/,/^\[/ s/.*max_batch_size = \([0-9]*\).*/\1/p' "$COMPARE/gateway-bench.toml")
    dense_batch=$((batch < dense_cap ? batch : dense_cap))
    sed -e "s/max_queue_delay_us = [0-9]*/max_queue_delay_us = $delay/" \
        -e "/^\[models\.dense\]/,/^\[/ s/max_batch_size = [0-9]*/max_batch_size = $dense_batch/" \
        -e "/^\[models\.dense\]/,/^\[/ !s/max_batch_size = [0-9]*/max_batch_size = $batch/" \
        -e "s/max_queue = [0-9_]*/max_queue = $queue/" \
        -e "s/^instances = [0-9]*/instances = $instances/" \
        -e "s/^intra_op_threads = [0-9]*/intra_op_threads = $threads/" \
        -e "s/^max_in_flight = [0-9_]*/max_in_flight = $inflight/" \
        "$COMPARE/gateway-bench.toml" >"$out"
}

start_gateway() {
    local name=$1 config=$2
    start_server "$name" /v2/health/ready "$BIN/gateway" --config "$config" \
        --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" --no-watch
}

# ort_best MODEL BATCH: the best rows/s of ort_max over (instances, threads) in (1,1), (1,2),
# (2,1), with the winning line's JSON in $RAW/ort-<model>-b<batch>.json.
ort_best() {
    local model=$1 batch=$2 best="" best_rows=0 cfg out rows
    for cfg in "1 1" "1 2" "2 1"; do
        set -- $cfg
        # shellcheck disable=SC2086
        out=$($SERVER_PIN timeout 120 "$BIN/ort_max" --model "$REPO/models/$model/1/model.onnx" --batch "$batch" \
            --instances "$1" --threads "$2" --duration "$ORT_SECONDS" --warmup 1 --json 2>>"$LOGS/ort_max.log") || continue
        echo "$out" >>"$RAW/ort-all.jsonl"
        rows=$(python3 -c "import json,sys; print(int(json.loads(sys.argv[1])['rows_per_s']))" "$out")
        if [ "$rows" -gt "$best_rows" ]; then best_rows=$rows best=$out; fi
    done
    echo "$best" >"$RAW/ort-$model-b$batch.json"
    echo "$best_rows"
}

# Waits for every model of a peer to be ready (PyTriton: /v2/health/ready is 200 too early).
peer_ready_path() { echo /v2/models/dense/ready; }
