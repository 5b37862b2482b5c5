# Shared by soak.sh and abuse.sh (sourced, not run): building the release binaries, starting a
# gateway on free loopback ports pinned to core 1, reading the addresses it logs, and stopping
# exactly the gateways this script started.
#
# Each gateway runs under `timeout`, so it stops by itself even if this script is killed; the
# EXIT trap sends SIGTERM to those `timeout` processes (which pass it to their gateway) and to
# nothing else.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN="$ROOT/target/release"
MAX_GATEWAY_S=${MAX_GATEWAY_S:-900}   # no gateway outlives this, whatever happens to the script
TIMEOUT_PIDS=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Core pinning: gateways on core 1, the tools on core 0 (the generator must not steal the
# gateway's core). Without two usable cores, nothing is pinned.
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    PIN_GATEWAY=(taskset -c 1)
    PIN_TOOL=(taskset -c 0)
else
    log "fewer than 2 cores or no taskset: not pinning (latency ratios will be noisier)"
    PIN_GATEWAY=()
    PIN_TOOL=()
fi

# build PACKAGES...: cargo build --release, unless SKIP_BUILD=1.
build() {
    if [ "${SKIP_BUILD:-0}" = 1 ]; then
        return 0
    fi
    local args=()
    for p in "$@"; do args+=(-p "$p"); done
    log "building ${*} (release)"
    (cd "$ROOT" && cargo build --release "${args[@]}") >&2
}

# results_dir NAME: OUT=target/reliability/NAME-<time> for logs and the JSON summary.
results_dir() {
    OUT="${RELIABILITY_OUT:-$ROOT/target/reliability}/$1-$(date +%Y%m%d-%H%M%S)"
    mkdir -p "$OUT"
    trap stop_gateways EXIT
    trap 'exit 130' INT TERM
}

# start_gateway NAME CONFIG: starts the gateway on CONFIG (listen addresses "127.0.0.1:0"),
# waits up to 120 s for its "gateway serving" line, and sets GW_PID (the gateway's own PID),
# GW_DATA, GW_ADMIN and GW_GRPC. Returns 1 (with the log's tail) when it does not come up.
start_gateway() {
    local name=$1 config=$2 logfile="$OUT/$1.log" outer line i
    (cd "$ROOT" && exec "${PIN_GATEWAY[@]}" timeout -k 5 "$MAX_GATEWAY_S" "$BIN/gateway" \
        --config "$config" --log-format json) >"$logfile" 2>&1 &
    outer=$!
    TIMEOUT_PIDS+=("$outer")
    for i in $(seq 1 1200); do
        line=$(grep -m1 '"gateway serving"' "$logfile" 2>/dev/null || true)
        [ -n "$line" ] && break
        if ! kill -0 "$outer" 2>/dev/null; then
            log "$name: the gateway exited before serving; the end of $logfile:"
            tail -20 "$logfile" >&2
            return 1
        fi
        sleep 0.1
    done
    if [ -z "$line" ]; then
        log "$name: no \"gateway serving\" line after 120 s; the end of $logfile:"
        tail -20 "$logfile" >&2
        return 1
    fi
    GW_DATA=$(field "$line" data_addr)
    GW_ADMIN=$(field "$line" admin_addr)
    GW_GRPC=$(field "$line" grpc_addr)
    GW_PID=$(pgrep -P "$outer" | head -1)
    if [ -z "$GW_PID" ] || [ -z "$GW_DATA" ] || [ -z "$GW_ADMIN" ]; then
        log "$name: could not read the gateway's PID or addresses from: $line"
        return 1
    fi
    log "$name: gateway pid $GW_PID, data $GW_DATA, admin $GW_ADMIN, grpc $GW_GRPC"
}

# field JSON_LINE NAME: the value of "NAME":"..." in a JSON log line.
field() {
    printf '%s' "$1" | grep -oE "\"$2\":\"[^\"]*\"" | head -1 | cut -d'"' -f4
}

# Stops the gateways this script started (SIGTERM to their `timeout`, which passes it on),
# and waits for them.
stop_gateways() {
    local p
    for p in "${TIMEOUT_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${TIMEOUT_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    TIMEOUT_PIDS=()
}
