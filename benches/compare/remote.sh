#!/usr/bin/env bash
# Issue 15's benchmark target for remote versions, measured with the method of benches/README.md
# (every target a ratio within one run):
#
#   the gateway proxying to a remote gateway adds <= 60 us p50 at one connection, and keeps
#   >= 0.7x the remote's direct throughput at 32 connections.
#
# Two gateway processes, both on loopback:
#   REMOTE  serves credit-scoring itself (gateway-bench.toml via gateway_config: batching on,
#           delay 0), HTTP on $GWBENCH_PORT (default 38100), admin +1, gRPC +2;
#   PROXY   serves credit-scoring from a remote primary only ([models.credit-scoring.remote]),
#           HTTP on +3, admin +4; its upstream is the REMOTE's HTTP/1.1 port, its HTTP port with
#           h2c (`http2 = true`), or its gRPC port (`grpc://`), per variant.
# Pinning (LAYOUT=shared, the default): BOTH gateways on core 1 (`taskset -c 1`), loadtest on
# core 0 (`taskset -c 0`); LAYOUT=split puts the remote on core 0 with loadtest instead. The
# remote and the proxy therefore share one core: "direct" is loadtest -> REMOTE, "proxied" is
# loadtest -> PROXY -> REMOTE on the same core, so what the ratios measure is the proxy's own
# cost (its CPU per request competes with the remote's; at 32 connections >= 0.7x means the
# proxy may spend at most ~0.43x the remote's CPU per request), not a second machine's capacity.
#
# Each round starts the REMOTE once and, per variant, a fresh PROXY; the direct and the proxied
# runs alternate (odd rounds direct first, even rounds proxied first), each at 1 connection
# (p50, p99) and at 32 connections (req/s of answered requests), closed loop, payload
# credit-b1.json from payloads.py. Before measuring, one request through the PROXY must answer
# 200 with the same outputs as the REMOTE gives directly (else the variant is skipped).
#
# Variants (VARIANTS, space-separated; default "http grpc"):
#   http     client JSON over HTTP/1.1; proxy upstream http://REMOTE (HTTP/1.1)
#   binary   as http, client sends and asks for binary tensors (loadtest --binary) on both sides
#   h2       as http, proxy upstream with `http2 = true` (h2c)
#   grpc     as http for the client; proxy upstream grpc://REMOTE's gRPC port
#
# Usage: benches/compare/remote.sh [--skip-build]
#        env: DURATION (s, default 10), WARMUP (s, default 2), ROUNDS (default 2), VARIANTS,
#        GWBENCH_PORT (base port, default 38100; uses base..base+5), CARGO_TARGET_DIR.
# Writes benches/results/remote-<time>/ (raw/ loadtest reports, logs/, the configs, summary.txt,
# summary.md) and prints one PASS/FAIL line per target and variant (remote_report.py).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-2}
VARIANTS=${VARIANTS:-http grpc}
SERVER_PIN="taskset -c 1"
LOAD_PIN="taskset -c 0"
# LAYOUT=split: the proxy alone on core 1, the remote on core 0 with loadtest (in both arms),
# as when the remote is another machine's: what the proxy costs is then on its own core.
LAYOUT=${LAYOUT:-shared}
case "$LAYOUT" in
    shared) REMOTE_PIN=$SERVER_PIN ;;
    split) REMOTE_PIN=$LOAD_PIN ;;
    *) echo "unknown LAYOUT '$LAYOUT' (shared, split)" >&2; exit 2 ;;
esac
BASE_PORT=$PORT
REMOTE_HTTP=$BASE_PORT
REMOTE_ADMIN=$((BASE_PORT + 1))
REMOTE_GRPC=$((BASE_PORT + 2))
PROXY_HTTP=$((BASE_PORT + 3))
PROXY_ADMIN=$((BASE_PORT + 4))
REMOTE_PID=""
PROXY_PID=""

for v in $VARIANTS; do
    case "$v" in http | binary | h2 | grpc) ;; *) echo "unknown variant '$v' (http binary h2 grpc)" >&2; exit 2 ;; esac
done

results_dir remote-
# lib.sh's traps stop one server; this script runs two.
stop_proxy() {
    [ -n "$PROXY_PID" ] || return 0
    SERVER_PID=$PROXY_PID PORT=$PROXY_HTTP
    stop_server
    PROXY_PID="" PORT=$BASE_PORT
}
stop_remote() {
    [ -n "$REMOTE_PID" ] || return 0
    SERVER_PID=$REMOTE_PID PORT=$REMOTE_HTTP
    stop_server
    REMOTE_PID="" PORT=$BASE_PORT
}
stop_all() {
    stop_server # first: a start interrupted half-way left its process in SERVER_PID
    stop_proxy
    stop_remote
}
trap 'stop_all' EXIT
trap 'stop_all; exit 130' INT TERM

[ "${1:-}" = --skip-build ] || build
for b in gateway loadtest; do
    [ -x "$BIN/$b" ] || { log "no $BIN/$b: build first (or drop --skip-build)"; exit 1; }
done
python3 "$COMPARE/payloads.py" "$OUT/payloads" >/dev/null
PAYLOAD=$OUT/payloads/credit-b1.json
MODEL=credit-scoring
{
    echo "commit: $(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "uncommitted changes:"
    git -C "$REPO" status --short 2>/dev/null || true
    echo "DURATION=$DURATION WARMUP=$WARMUP ROUNDS=$ROUNDS VARIANTS=$VARIANTS"
    echo "pinning ($LAYOUT): remote gateway '$REMOTE_PIN', proxy gateway '$SERVER_PIN', loadtest '$LOAD_PIN'"
    echo "cpus: $(nproc) ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'))"
} >"$OUT/meta.txt"

gateway_config "$OUT/remote.toml" 0 32 1 1

# proxy_config OUT VARIANT: credit-scoring served only by the REMOTE (version 1 there).
proxy_config() {
    local out=$1 variant=$2 upstream="url = \"http://127.0.0.1:$REMOTE_HTTP\""
    case "$variant" in
    h2) upstream="$upstream, http2 = true" ;;
    grpc) upstream="url = \"grpc://127.0.0.1:$REMOTE_GRPC\"" ;;
    esac
    cat >"$out" <<EOF
# Written by benches/compare/remote.sh (variant $variant): every version of credit-scoring is
# the REMOTE gateway's.
[server]
max_request_bytes = 16_777_216
request_timeout_ms = 5000
max_in_flight = 1024

[runtime]
execution_providers = ["cpu"]
intra_op_threads = 1

# A folder that does not exist: a model whose routed versions are all remote needs no local one,
# and with "models" (also the default) version 1 would be both local and remote, which the
# gateway refuses.
[models.credit-scoring]
repository = "$OUT/no-local-versions"

[models.credit-scoring.routing]
primary = 1

[models.credit-scoring.remote]
1 = { $upstream, model = "credit-scoring", version = "1" }
EOF
}

start_remote() {
    PORT=$REMOTE_HTTP ADMIN_PORT=$REMOTE_ADMIN
    if SERVER_PIN=$REMOTE_PIN start_server "remote-r$1" /v2/models/$MODEL/ready "$BIN/gateway" --config "$OUT/remote.toml" \
        --listen "127.0.0.1:$REMOTE_HTTP" --admin-listen "127.0.0.1:$REMOTE_ADMIN" \
        --grpc-listen "127.0.0.1:$REMOTE_GRPC" --no-watch; then
        REMOTE_PID=$SERVER_PID SERVER_PID=""
        return 0
    fi
    return 1
}

# start_proxy ROUND VARIANT: the PROXY with that variant's upstream, ready when its model is.
start_proxy() {
    local cfg="$OUT/proxy-$2.toml"
    [ -f "$cfg" ] || proxy_config "$cfg" "$2"
    PORT=$PROXY_HTTP ADMIN_PORT=$PROXY_ADMIN
    # Only the remote's answer to a health check stands between start and ready.
    if READY_TIMEOUT_S=${PROXY_READY_S:-30} start_server "proxy-$2-r$1" /v2/models/$MODEL/ready "$BIN/gateway" --config "$cfg" \
        --listen "127.0.0.1:$PROXY_HTTP" --admin-listen "127.0.0.1:$PROXY_ADMIN" --no-watch; then
        PROXY_PID=$SERVER_PID SERVER_PID=""
        PORT=$BASE_PORT
        return 0
    fi
    PORT=$BASE_PORT
    return 1
}

# same_answer TAG: one request direct and one through the PROXY; both 200 with equal outputs.
same_answer() {
    local tag=$1 d p
    d=$(curl -s -o "$RAW/$tag-direct-answer.json" -w '%{http_code}' -X POST --data-binary @"$PAYLOAD" \
        -H 'content-type: application/json' "http://127.0.0.1:$REMOTE_HTTP/v2/models/$MODEL/infer" || echo 000)
    p=$(curl -s -o "$RAW/$tag-proxied-answer.json" -w '%{http_code}' -X POST --data-binary @"$PAYLOAD" \
        -H 'content-type: application/json' "http://127.0.0.1:$PROXY_HTTP/v2/models/$MODEL/infer" || echo 000)
    if [ "$d" != 200 ] || [ "$p" != 200 ]; then
        log "$tag: smoke request answered $d direct, $p proxied (bodies in $RAW/$tag-*-answer.json)"
        return 1
    fi
    python3 - "$RAW/$tag-direct-answer.json" "$RAW/$tag-proxied-answer.json" <<'EOF' || return 1
import json, math, sys
d, p = (json.load(open(f)) for f in sys.argv[1:3])
outs = lambda r: {o["name"]: o for o in r.get("outputs", [])}
od, op = outs(d), outs(p)
def same(a, b):
    if a.get("datatype") != b.get("datatype") or a.get("shape") != b.get("shape"):
        return False
    x, y = a.get("data"), b.get("data")
    if not isinstance(x, list) or not isinstance(y, list) or len(x) != len(y):
        return x == y
    num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    return all(math.isclose(u, w, rel_tol=1e-6, abs_tol=1e-9) if num(u) and num(w) else u == w for u, w in zip(x, y))
if not od or od.keys() != op.keys() or not all(same(od[k], op[k]) for k in od):
    sys.exit(f"outputs differ: direct {d.get('outputs')} proxied {p.get('outputs')}")
EOF
}

# measure ROUND VARIANT CONNS: the direct and the proxied run at CONNS, order by round parity.
measure() {
    local round=$1 variant=$2 conns=$3 side url sides=(direct proxied) flags=()
    [ $((round % 2)) = 0 ] && sides=(proxied direct)
    [ "$variant" = binary ] && flags=(--binary)
    for side in "${sides[@]}"; do
        url="http://127.0.0.1:$REMOTE_HTTP"
        [ "$side" = proxied ] && url="http://127.0.0.1:$PROXY_HTTP"
        log "round $round, $variant, $side, c$conns"
        LT_URL=$url lt "$RAW/r$round-$variant-$side-c$conns.json" "$MODEL" "$PAYLOAD" "$conns" "${flags[@]}"
    done
}

for round in $(seq 1 "$ROUNDS"); do
    if ! start_remote "$round"; then
        log "round $round: the remote gateway did not start; skipping the round"
        continue
    fi
    for variant in $VARIANTS; do
        if ! start_proxy "$round" "$variant"; then
            log "round $round, $variant: the proxy did not start (see $LOGS/proxy-$variant-r$round.log)"
            continue
        fi
        if same_answer "r$round-$variant"; then
            measure "$round" "$variant" 1
            measure "$round" "$variant" 32
        else
            log "round $round, $variant: the proxy's answer is wrong; not measured"
        fi
        curl -s "http://127.0.0.1:$PROXY_ADMIN/metrics" >"$RAW/r$round-$variant-proxy-metrics.txt" || true
        stop_proxy
    done
    curl -s "http://127.0.0.1:$REMOTE_ADMIN/metrics" >"$RAW/r$round-remote-metrics.txt" || true
    stop_remote
done

# shellcheck disable=SC2086
python3 "$COMPARE/remote_report.py" "$OUT" --rounds "$ROUNDS" --variants $VARIANTS | tee "$OUT/summary.txt"
