#!/usr/bin/env bash
# Abuse: two release gateways and five scenarios, each measuring a well-behaved client (4
# HTTP/1.1 connections, closed loop, credit-scoring batch 1 JSON) unloaded and then during the
# attack (p50/p99 and the p99 ratio, target <= 3x), plus the scenario's own checks:
#
#   idle         HTTP/2 and gRPC connections quiet after one request, passive or pinging:
#                closed after idle_timeout_ms (2 s here) either way
#   slowloris    400 connections trickling a request head a byte per 100 ms (a fifth after a
#                first keep-alive request): closed by header_read_timeout_ms (1.5 s here)
#   flood        10,000 idle TCP connections against max_connections = 1000: the rest closed at
#                once and counted (gateway_connections_refused_total), the gateway's open
#                descriptors held near the limit, the client connected before the flood served,
#                newcomers during the flood served
#   rapid_reset  h2c streams opened and reset at once, in a bounded loop; GOAWAY or not, the
#                client is served and a fresh connection works
#   grpc_stream  ModelStreamInfer writing requests and never reading replies: the gateway must
#                push back (flow control) and keep its RSS bounded
#
#   scripts/reliability/abuse.sh [--strict] [--only idle,flood,...] [other flags of `abuse`]
#
# `limits` gateway (flood, rapid_reset, grpc_stream): max_connections 1000, default timeouts,
# v2 pin-only (the gRPC stream pins it, so its count is the stream's alone). `timeouts` gateway
# (idle, slowloris): header_read_timeout_ms 1500, idle_timeout_ms 2000. Gateways on core 1, the
# tool on core 0. The p99 ratio is a WARN unless --strict (noisy on 2 shared cores).
#
# Output: PASS/WARN/FAIL lines, a p99 table, the JSON summary (also in
# target/reliability/abuse-<time>/abuse.json with both gateways' logs). Exit 0 when no check
# failed, 1 otherwise, 3 when it could not start. SKIP_BUILD=1 skips the release build.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

max_connections=1000
header_read_ms=1500
idle_ms=2000
flood=10000

# The flood's sockets and the gateway's accepted ones both need descriptors.
need=$((flood + 2000))
if [ "$(ulimit -n)" -lt "$need" ]; then
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fi
if [ "$(ulimit -n)" -lt "$need" ]; then
    log "abuse: the flood needs $need descriptors and ulimit -n is $(ulimit -n) (hard $(ulimit -Hn))"
    exit 3
fi

build gateway reliability
results_dir abuse

config() { # EXTRA_SERVER_LINES
    cat <<TOML
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
grpc_listen = "127.0.0.1:0"
max_in_flight = 1024
max_connections = $max_connections
request_timeout_ms = 5000
drain_timeout_ms = 1000
$1

[runtime]
intra_op_threads = 1

[models.credit-scoring]
repository = "$ROOT/models"

[models.credit-scoring.routing]
primary = 1
versions = [2]
TOML
}
config "" >"$OUT/limits.toml"
config "header_read_timeout_ms = $header_read_ms
idle_timeout_ms = $idle_ms" >"$OUT/timeouts.toml"

start_gateway limits "$OUT/limits.toml" || exit 3
limits="data=$GW_DATA,admin=$GW_ADMIN,grpc=$GW_GRPC,pid=$GW_PID"
start_gateway timeouts "$OUT/timeouts.toml" || exit 3
timeouts="data=$GW_DATA,admin=$GW_ADMIN,grpc=$GW_GRPC,pid=$GW_PID"

log "abuse: results in $OUT"
set +e
"${PIN_TOOL[@]}" "$BIN/abuse" --limits "$limits" --timeouts "$timeouts" \
    --max-connections "$max_connections" --header-read-timeout-ms "$header_read_ms" \
    --idle-timeout-ms "$idle_ms" --flood-connections "$flood" --json "$OUT/abuse.json" "$@"
status=$?
set -e
log "abuse: exit $status; gateway logs and summary in $OUT"
exit "$status"
