# Shared by the compat scripts (sourced, not run): a Python venv with pinned packages, free
# loopback ports, and a gateway started in the background and stopped by its PID.
# Everything started here is stopped by the EXIT trap that `compat_start_gateway` installs.

COMPAT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# compat_enter [GATEWAY_BINARY]: every script's prologue. Takes the binary (default
# target/debug/gateway) relative to where the script was started, moves to the repository root
# and sets GATEWAY; exits 2 when the binary is not built.
compat_enter() {
    local binary=${1:-}
    if [[ -n "$binary" && "$binary" != /* && -e "$binary" ]]; then
        binary="$(pwd)/$binary"
    fi
    cd "$COMPAT_ROOT" || exit 1
    GATEWAY=$(compat_binary "$binary") || exit 2
}

# compat_venv DIR PACKAGE...: creates DIR (a venv) once and installs PACKAGE... from PyPI into
# it; a stamp file remembers the package list so a second run skips pip entirely. Says so and
# returns 1 when it cannot.
compat_venv() {
    local dir=$1
    shift
    local stamp="$dir/.compat-packages"
    local want="$*"
    if [[ -x "$dir/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return 0
    fi
    echo "== creating $dir with: $want" >&2
    if ! "${PYTHON:-python3}" -m venv "$dir" ||
        ! "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@"; then
        echo "could not create the Python venv at $dir" >&2
        return 1
    fi
    echo "$want" >"$stamp"
}

# compat_free_port: prints a loopback TCP port nobody listens on right now.
compat_free_port() {
    "${PYTHON:-python3}" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

COMPAT_GATEWAY_PID=""
COMPAT_GATEWAY_LOG=""

# compat_stop_gateway: SIGTERM, wait up to 15 s for the graceful exit, then SIGKILL.
# Sets COMPAT_GATEWAY_EXIT to the gateway's exit status (143/137 when killed).
compat_stop_gateway() {
    COMPAT_GATEWAY_EXIT=""
    [[ -n "$COMPAT_GATEWAY_PID" ]] || return 0
    if kill -0 "$COMPAT_GATEWAY_PID" 2>/dev/null; then
        kill -TERM "$COMPAT_GATEWAY_PID" 2>/dev/null
        for _ in $(seq 150); do
            kill -0 "$COMPAT_GATEWAY_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$COMPAT_GATEWAY_PID" 2>/dev/null; then
            echo "gateway $COMPAT_GATEWAY_PID did not stop within 15 s of SIGTERM: killing it" >&2
            kill -KILL "$COMPAT_GATEWAY_PID" 2>/dev/null
        fi
    fi
    wait "$COMPAT_GATEWAY_PID" 2>/dev/null
    COMPAT_GATEWAY_EXIT=$?
    COMPAT_GATEWAY_PID=""
}

# compat_start_gateway BINARY LOG URL ARGS...: starts BINARY ARGS... in the background (stderr
# and stdout to LOG), installs the EXIT trap that stops it, and waits up to
# ${COMPAT_READY_TIMEOUT:-120} s for http://URL/v2/health/ready to answer 200.
compat_start_gateway() {
    local binary=$1 log=$2 url=$3
    shift 3
    COMPAT_GATEWAY_LOG=$log
    "$binary" "$@" >"$log" 2>&1 &
    COMPAT_GATEWAY_PID=$!
    trap compat_stop_gateway EXIT
    local deadline=$((SECONDS + ${COMPAT_READY_TIMEOUT:-120}))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$COMPAT_GATEWAY_PID" 2>/dev/null; then
            echo "the gateway exited before it was ready; its log:" >&2
            tail -n 40 "$log" >&2
            wait "$COMPAT_GATEWAY_PID" 2>/dev/null
            COMPAT_GATEWAY_PID=""
            return 1
        fi
        if curl -fsS -o /dev/null --max-time 2 "http://$url/v2/health/ready" 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    echo "the gateway was not ready within ${COMPAT_READY_TIMEOUT:-120} s; its log:" >&2
    tail -n 40 "$log" >&2
    return 1
}

# compat_binary PATH: prints the gateway binary to test (PATH, default target/debug/gateway);
# fails when it is not built.
compat_binary() {
    local binary=${1:-target/debug/gateway}
    if [[ ! -x "$binary" ]]; then
        echo "no gateway binary at $binary: build it first (cargo build -p gateway)" >&2
        return 2
    fi
    echo "$binary"
}

# compat_finish NAME STATUS LOG: stops the gateway, turns a non-zero exit after SIGTERM or a
# panic in LOG into a failure, prints NAME's verdict and exits with the final status (the log
# is removed on success, kept on failure).
compat_finish() {
    local name=$1 status=$2 log=$3
    compat_stop_gateway
    if [[ "$COMPAT_GATEWAY_EXIT" != 0 ]]; then
        echo "FAIL the gateway exited with status $COMPAT_GATEWAY_EXIT after SIGTERM (expected 0); log tail:" >&2
        tail -n 20 "$log" >&2
        status=1
    fi
    if grep -q "panicked" "$log"; then
        echo "FAIL the gateway log shows a panic:" >&2
        grep -n -A5 "panicked" "$log" >&2
        status=1
    fi
    if [[ $status == 0 ]]; then
        rm -f "$log" "$log.out"
        echo "$name: OK"
    else
        echo "$name: FAILED (gateway log kept at $log)"
    fi
    exit "$status"
}
