#!/usr/bin/env bash
# The side-by-side comparison, in ONE run on this machine: the same models and payloads served by
#   (a) the gateway (release build; batching on, and off),
#   (b) bare_hyper (a hyper server answering a canned response: the ceiling),
#   (c) ort_max (ONNX Runtime in-process, no HTTP: the compute limit),
#   (d) Python peers from PyPI in venvs under /tmp: FastAPI + onnxruntime, KServe, MLServer, and
#       Triton through PyTriton,
# all driven by the same `loadtest` (closed loop, one current-thread generator core). Workloads:
# credit-scoring batch 1, dense batch 1 and batch 8, at 1, 8 and 32 connections. Full mode also
# sweeps the gateway's batching settings and instances/threads.
#
# Usage: benches/compare/run.sh [--quick] [--duration S] [--warmup S] [--skip-build]
#                               [--servers "gateway gateway-nobatch bare fastapi ..."]
#   --quick: connections 32 only, gateway / bare / FastAPI, 4 s runs, no sweep (a few minutes).
# Writes benches/results/<time>/{results.json,results.md,raw/,logs/}; prints the tables.
# Environment: GWBENCH_PORT (default 38100; uses it to +2), VENV_ROOT (default /tmp/gwbench-venvs).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

QUICK=0 SKIP_BUILD=0 DURATION="" WARMUP="" SERVERS="" ORT_SECONDS=3
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --duration) DURATION=$2; shift ;;
        --warmup) WARMUP=$2; shift ;;
        --skip-build) SKIP_BUILD=1 ;;
        --servers) SERVERS=$2; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    CONNS="32" DURATION=${DURATION:-4} WARMUP=${WARMUP:-1}
    SERVERS=${SERVERS:-"ort gateway bare fastapi"}
else
    CONNS="1 8 32" DURATION=${DURATION:-6} WARMUP=${WARMUP:-2}
    SERVERS=${SERVERS:-"ort gateway gateway-nobatch bare fastapi kserve mlserver pytriton sweep"}
fi
WORKLOADS="credit-b1 dense-b1 dense-b8"

results_dir ""

[ "$SKIP_BUILD" = 1 ] || build || exit 1
python3 "$COMPARE/payloads.py" "$OUT/payloads"
model_of() { case "$1" in credit-*) echo credit-scoring ;; *) echo dense ;; esac; }
batch_of() { echo "${1##*-b}"; }

# Every workload at every concurrency against the server now running, as NAME.
drive() {
    local name=$1 w c
    for w in $WORKLOADS; do
        for c in $CONNS; do
            log "$name $w c$c"
            lt "$RAW/$name@$w@c$c.json" "$(model_of "$w")" "$OUT/payloads/$w.json" "$c"
        done
    done
}

run_peer() {
    local peer=$1 script=$2
    shift 2
    if ! "$COMPARE/peers/install.sh" "$peer" >>"$LOGS/install.log" 2>&1; then
        log "$peer: install failed (see $LOGS/install.log and $VENV_ROOT/$peer.install.log)"
        echo "install failed: $(tail -n 3 "$VENV_ROOT/$peer.install.log" | tr '\n' ' ')" >"$RAW/$peer.failed"
        return
    fi
    local py="$VENV_ROOT/$peer/bin/python"
    if start_server "$peer" "$(peer_ready_path)" env "$@" PYTHONPATH="$COMPARE/peers" \
        "$py" "$COMPARE/peers/$script" "$REPO/models" "$PORT" ${EXTRA_ARG:-}; then
        drive "$peer"
    else
        echo "did not start: $(tail -n 3 "$LOGS/$peer.log" | tr '\n' ' ')" >"$RAW/$peer.failed"
    fi
    stop_server
}

# The sweep: gateway variants on the workloads where they matter. Fields: name, delay_us,
# max_batch_size, instances, intra-op threads, async threads (`runtime.io_threads`; 0 = the
# gateway's default, half the cores).
sweep() {
    local v name cfg
    for v in "d0 0 32 1 1 0" "d50 50 32 1 1 0" "d200 200 32 1 1 0" "d500 500 32 1 1 0" \
        "nobatch 0 1 1 1 0" "d0-inst2 0 32 2 1 0" "d0-thr2 0 32 1 2 0" "nobatch-inst2 0 1 2 1 0" \
        "d0-io2 0 32 1 1 2"; do
        set -- $v
        name=$1 cfg="$OUT/gateway-sweep-$1.toml"
        gateway_config "$cfg" "$2" "$3" "$4" "$5"
        [ "$6" = 0 ] || sed -i "s/^intra_op_threads = .*/&\nio_threads = $6/" "$cfg"
        start_gateway "sweep-$name" "$cfg" || continue
        for wc in "credit-b1 1" "credit-b1 32" "dense-b1 8" "dense-b1 32"; do
            set -- $wc
            log "sweep-$name $1 c$2"
            lt "$RAW/sweep-$name@$1@c$2.json" "$(model_of "$1")" "$OUT/payloads/$1.json" "$2"
        done
        stop_server
    done
}

for s in $SERVERS; do
    case "$s" in
        ort)
            for w in $WORKLOADS; do
                log "ort_max $(model_of "$w") batch $(batch_of "$w")"
                ort_best "$(model_of "$w")" "$(batch_of "$w")" >/dev/null
            done
            ;;
        gateway)
            gateway_config "$OUT/gateway.toml" 0 32 1 1
            if start_gateway gateway "$OUT/gateway.toml"; then
                # The canned answers bare_hyper will send: the gateway's own, byte for byte.
                for w in $WORKLOADS; do
                    curl -s -X POST "http://127.0.0.1:$PORT/v2/models/$(model_of "$w")/infer" \
                        --data-binary "@$OUT/payloads/$w.json" -o "$OUT/payloads/$w.response.json"
                done
                drive gateway
            fi
            stop_server
            ;;
        gateway-nobatch)
            gateway_config "$OUT/gateway-nobatch.toml" 0 1 1 1
            start_gateway gateway-nobatch "$OUT/gateway-nobatch.toml" && drive gateway-nobatch
            stop_server
            ;;
        bare)
            for w in $WORKLOADS; do
                response="$OUT/payloads/$w.response.json"
                [ -s "$response" ] || response=""
                if start_server "bare-$w" /v2/health/ready "$BIN/bare_hyper" --listen "127.0.0.1:$PORT" \
                    ${response:+--response "$response"} --exit-after "$MAX_SERVER_S"; then
                    for c in $CONNS; do
                        log "bare $w c$c"
                        lt "$RAW/bare@$w@c$c.json" "$(model_of "$w")" "$OUT/payloads/$w.json" "$c"
                    done
                fi
                stop_server
            done
            ;;
        fastapi) run_peer fastapi fastapi_server.py ;;
        kserve) run_peer kserve kserve_server.py ;;
        mlserver) EXTRA_ARG="$OUT/mlserver" run_peer mlserver mlserver_server.py ;;
        pytriton)
            # The python-backend stub must find the interpreter's libpython first.
            libdir=$("$VENV_ROOT/pytriton/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))' 2>/dev/null)
            run_peer pytriton pytriton_server.py "LD_LIBRARY_PATH=$libdir:${LD_LIBRARY_PATH:-}"
            ;;
        sweep) sweep ;;
        *) log "unknown server $s" ;;
    esac
done

python3 "$COMPARE/report.py" "$OUT" --machine "$(nproc) cores, $(uname -sr), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
log "results in $OUT"
