#!/usr/bin/env bash
# The gateway against a real Triton server from PyPI: PyTriton (nvidia-pytriton==0.7.0, which
# bundles a real tritonserver) serves credit-scoring version 2 (models/credit-scoring/2, run by
# onnxruntime inside PyTriton) as a remote version of the gateway's credit-scoring, whose
# primary version 1 stays local. Everything on loopback, free ports.
#
#   scripts/remote/pytriton.sh            (builds with `cargo build -p gateway` first)
#
# For each scheme in $SCHEMES (default "http grpc": the remote URL is http://TRITON_HTTP or
# grpc://TRITON_GRPC), with a fresh PyTriton and a fresh gateway:
#   pinned     50 different requests pinned to version 2 (x-model-version: 2): the gateway's
#              answer equals PyTriton's direct answer within 1e-6 (and onnxruntime's), and the
#              response says x-model-version: 2;
#   split      2,000 unpinned requests (version 2 a 10% candidate): 10% +- 2.5% answered by 2;
#   after-kill PyTriton killed (SIGKILL, by its PID = process group): 200 more unpinned requests all answered 200;
#   ejected    the admin /metrics shows gateway_upstream_ejected{...version="2"} 1 within 10 s;
#   clean-exit the gateway exits 0 on SIGTERM and its log has no panic.
# Prints PASS/FAIL per check; exits 1 on any FAIL, 2 when it cannot set up. Takes about a
# minute per scheme once the venv exists.
#
# Environment: SCHEMES, CARGO_TARGET_DIR (where the binary is built and looked for),
# GATEWAY_PROFILE (debug | release, default debug), SKIP_BUILD=1 (use the built binary),
# VENV_ROOT (default /tmp/gwbench-venvs: the pytriton venv of benches/compare/peers/install.sh),
# KEEP_LOGS=1 (keep the scratch folder with the logs even on success).
# Only the processes this script starts are ever signalled, by their PIDs.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO" || exit 2
HELPER="$REPO/scripts/remote/pytriton_helper.py"
SCHEMES=${SCHEMES:-"http grpc"}
VENV_ROOT=${VENV_ROOT:-/tmp/gwbench-venvs}
export VENV_ROOT
PROFILE=${GATEWAY_PROFILE:-debug}
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
BIN="$TARGET/$PROFILE"
REMOTE_NAME=credit-scoring-v2 # the model's name inside PyTriton (differs from the gateway's on purpose)
STARTED=$SECONDS

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

FAILS=0
check() { # check OK WHAT
    if [[ "$1" == 0 ]]; then echo "PASS $2"; else echo "FAIL $2"; FAILS=$((FAILS + 1)); fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# --- set-up: the venv (shared with benches/compare), the binary ---------------------------
bash "$REPO/benches/compare/peers/install.sh" pytriton >&2 || { log "could not create the pytriton venv"; exit 2; }
PY="$VENV_ROOT/pytriton/bin/python"
# PyTriton's python-backend stub must find this interpreter's libpython first.
LIBDIR=$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    flags=()
    [[ "$PROFILE" == release ]] && flags=(--release)
    log "cargo build -p gateway ${flags[*]} (target $TARGET)"
    cargo build -p gateway "${flags[@]}" >&2 || { log "build failed"; exit 2; }
fi
[[ -x "$BIN/gateway" ]] || { log "no gateway binary at $BIN/gateway"; exit 2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gateway-remote-pytriton.XXXXXX")
TRITON_PID=""
GATEWAY_PID=""

stop_triton() { # SIGTERM to PyTriton (it stops its tritonserver), its process group killed after 15 s
    [[ -n "$TRITON_PID" ]] || return 0
    kill -TERM "$TRITON_PID" 2>/dev/null
    for _ in $(seq 75); do
        kill -0 -- "-$TRITON_PID" 2>/dev/null || break
        sleep 0.2
    done
    kill -KILL -- "-$TRITON_PID" 2>/dev/null
    wait "$TRITON_PID" 2>/dev/null
    rm -f /dev/shm/pytrtion"$TRITON_PID"-* 2>/dev/null # its shared memory, named after its PID
    TRITON_PID=""
}

# kill_triton: the crash the fallback check needs: SIGKILL to PyTriton's whole process group
# (its PID is the group id; tritonserver and the backend stub die with it, connections drop at
# once). A graceful stop would wait up to 30 s on the gateway's idle keep-alive connections.
# The shared-memory segments its processes had mapped are removed after (they would leak).
kill_triton() {
    [[ -n "$TRITON_PID" ]] || return 0
    local segments
    segments=$(pgrep -g "$TRITON_PID" | sed 's|.*|/proc/&/maps|' | xargs -r cat 2>/dev/null |
        grep -o '/dev/shm/[A-Za-z0-9_.-]*' | sort -u)
    kill -KILL -- "-$TRITON_PID" 2>/dev/null
    wait "$TRITON_PID" 2>/dev/null
    for _ in $(seq 50); do
        kill -0 -- "-$TRITON_PID" 2>/dev/null || break
        sleep 0.1
    done
    # shellcheck disable=SC2086
    [[ -z "$segments" ]] || rm -f $segments
    rm -f /dev/shm/pytrtion"$TRITON_PID"-* 2>/dev/null
    TRITON_PID=""
}

GATEWAY_EXIT=""
stop_gateway() { # SIGTERM, SIGKILL after 15 s; GATEWAY_EXIT its status
    GATEWAY_EXIT=""
    [[ -n "$GATEWAY_PID" ]] || return 0
    kill -TERM "$GATEWAY_PID" 2>/dev/null
    for _ in $(seq 150); do
        kill -0 "$GATEWAY_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$GATEWAY_PID" 2>/dev/null; then
        log "gateway $GATEWAY_PID still running 15 s after SIGTERM: killing it"
        kill -KILL "$GATEWAY_PID" 2>/dev/null
    fi
    wait "$GATEWAY_PID" 2>/dev/null
    GATEWAY_EXIT=$?
    GATEWAY_PID=""
}

cleanup() {
    stop_gateway
    stop_triton
    if [[ "$FAILS" == 0 && "${KEEP_LOGS:-0}" != 1 ]]; then rm -rf "$WORK"; else log "logs kept in $WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_http URL PID SECONDS: until GET URL answers 200; 1 when PID exits or time runs out.
wait_http() {
    local url=$1 pid=$2 deadline=$((SECONDS + $3))
    while ((SECONDS < deadline)); do
        curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.2
    done
    return 1
}

# start_triton NAME: PyTriton on fresh ports (TRITON_HTTP, TRITON_GRPC), in its own process
# group, until /v2/models/$REMOTE_NAME/ready (its /v2/health/ready is 200 before models load).
start_triton() {
    local name=$1 t0=$SECONDS
    TRITON_HTTP=$(free_port) TRITON_GRPC=$(free_port)
    TRITON_LOG="$WORK/pytriton-$name.log"
    # setsid from a non-interactive shell execs in place: $! is PyTriton's PID and group id.
    LD_LIBRARY_PATH="$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" setsid "$PY" "$HELPER" serve \
        "$REPO/models/credit-scoring/2/model.onnx" "$REMOTE_NAME" "$TRITON_HTTP" "$TRITON_GRPC" \
        "$WORK/pytriton-workspace-$name" >"$TRITON_LOG" 2>&1 &
    TRITON_PID=$!
    if ! wait_http "http://127.0.0.1:$TRITON_HTTP/v2/models/$REMOTE_NAME/ready" "$TRITON_PID" 120; then
        log "PyTriton not ready; last lines of $TRITON_LOG:"
        tail -n 20 "$TRITON_LOG" >&2
        return 1
    fi
    log "PyTriton $TRITON_PID ready after $((SECONDS - t0)) s (HTTP $TRITON_HTTP, gRPC $TRITON_GRPC)"
}

# start_gateway NAME URL: the gateway with credit-scoring v1 local (primary) and v2 at URL (a
# 10% candidate, pinnable with x-model-version). Its repository holds version 1 only: the
# gateway refuses a version that is both remote and a local file.
start_gateway() {
    local name=$1 url=$2 t0=$SECONDS
    GW_PORT=$(free_port) ADMIN_PORT=$(free_port)
    GW_CONFIG="$WORK/gateway-$name.toml" GW_LOG="$WORK/gateway-$name.log"
    mkdir -p "$WORK/models/credit-scoring/1"
    cp "$REPO/models/credit-scoring/1/model.onnx" "$WORK/models/credit-scoring/1/"
    cat >"$GW_CONFIG" <<EOF
[server]
listen = "127.0.0.1:$GW_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"

[models.credit-scoring]
repository = "$WORK/models"

[models.credit-scoring.routing]
primary = 1
candidates = [{ version = 2, percent = 10.0 }]
pin_header = "x-model-version"

[models.credit-scoring.remote]
2 = { url = "$url", model = "$REMOTE_NAME", version = "1" }
EOF
    "$BIN/gateway" --config "$GW_CONFIG" --no-watch >"$GW_LOG" 2>&1 &
    GATEWAY_PID=$!
    if ! wait_http "http://127.0.0.1:$GW_PORT/v2/models/credit-scoring/ready" "$GATEWAY_PID" 30; then
        log "gateway not ready; last lines of $GW_LOG:"
        tail -n 30 "$GW_LOG" >&2
        return 1
    fi
    log "gateway $GATEWAY_PID ready after $((SECONDS - t0)) s (data $GW_PORT, admin $ADMIN_PORT, remote $url)"
}

ejected_lines() { # the gateway_upstream_ejected samples of version 2
    curl -fsS --max-time 2 "http://127.0.0.1:$ADMIN_PORT/metrics" 2>/dev/null |
        grep -E '^gateway_upstream_ejected\{[^}]*version="2"' || true
}

run_scheme() {
    local scheme=$1 url
    echo "== $scheme: gateway → PyTriton ($scheme://)"
    if ! start_triton "$scheme"; then check 1 "$scheme: PyTriton serves $REMOTE_NAME"; stop_triton; return; fi
    case "$scheme" in
        http) url="http://127.0.0.1:$TRITON_HTTP" ;;
        grpc) url="grpc://127.0.0.1:$TRITON_GRPC" ;;
    esac
    if ! start_gateway "$scheme" "$url"; then
        check 1 "$scheme: the gateway starts with the remote version"
        stop_gateway
        stop_triton
        return
    fi

    timeout 120 "$PY" "$HELPER" pinned "127.0.0.1:$GW_PORT" "127.0.0.1:$TRITON_HTTP" "$REMOTE_NAME" \
        "$REPO/models/credit-scoring/2/model.onnx" 50 | sed "s/^\(PASS\|FAIL\) /\1 $scheme: /"
    check "${PIPESTATUS[0]}" "$scheme: pinned (summary)" >/dev/null
    timeout 120 "$PY" "$HELPER" split "127.0.0.1:$GW_PORT" 2000 10 2.5 | sed "s/^\(PASS\|FAIL\) /\1 $scheme: /"
    check "${PIPESTATUS[0]}" "$scheme: split (summary)" >/dev/null

    local before
    before=$(ejected_lines)
    log "before the kill: ${before:-no gateway_upstream_ejected sample for version 2}"
    log "killing PyTriton $TRITON_PID (SIGKILL to its process group)"
    kill_triton
    timeout 120 "$PY" "$HELPER" after-kill "127.0.0.1:$GW_PORT" 200 | sed "s/^\(PASS\|FAIL\) /\1 $scheme: /"
    check "${PIPESTATUS[0]}" "$scheme: after-kill (summary)" >/dev/null

    local deadline=$((SECONDS + 10)) lines ok=1
    while :; do
        lines=$(ejected_lines)
        if grep -qE ' 1(\.0)?$' <<<"$lines"; then ok=0; break; fi
        ((SECONDS < deadline)) || break
        sleep 0.5
    done
    check "$ok" "$scheme: ejected: /metrics within 10 s of the last request: ${lines:-no gateway_upstream_ejected sample for version 2}"

    local pinned_answer
    pinned_answer=$(curl -sS --max-time 10 -H 'x-model-version: 2' -w ' (HTTP %{http_code})' \
        "http://127.0.0.1:$GW_PORT/v2/models/credit-scoring/infer" -d '{"inputs":[{"name":"features","datatype":"FP32","shape":[1,8],"data":[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8]}]}' 2>&1)
    log "for information, a request pinned to the dead version 2 now gets: ${pinned_answer:0:300}"

    stop_gateway
    check "$GATEWAY_EXIT" "$scheme: clean-exit: the gateway exited $GATEWAY_EXIT on SIGTERM"
    if grep -q panicked "$GW_LOG"; then
        check 1 "$scheme: no panic in the gateway log:"
        grep -n -A5 panicked "$GW_LOG" | head -20
    fi
    if [[ "$FAILS" != 0 ]]; then
        echo "   gateway log ($GW_LOG), WARN/ERROR lines:"
        grep -E 'WARN|ERROR' "$GW_LOG" | tail -n 15 | sed 's/^/   /'
    fi
}

for s in $SCHEMES; do
    run_scheme "$s"
done
echo "== $FAILS failed check(s) in $((SECONDS - STARTED)) s"
[[ "$FAILS" == 0 ]]
