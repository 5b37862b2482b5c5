#!/usr/bin/env bash
# The official Triton gRPC client against the gateway: see scripts/compat/README.md.
#
#   scripts/compat/run_tritonclient_grpc.sh [GATEWAY_BINARY]     (default: target/debug/gateway)
#
# Like run_tritonclient.sh, with scripts/compat/gateway.toml and tritonclient_grpc.py
# (tritonclient[grpc]==2.51.0 + numpy from PyPI, in a venv created once under /tmp).
set -uo pipefail

# shellcheck source=scripts/compat/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
compat_enter "${1:-}"

VENV=${COMPAT_GRPC_VENV:-/tmp/gateway-compat-tritonclient-grpc-venv}
compat_venv "$VENV" "tritonclient[grpc]==2.51.0" "numpy<2" || exit 2

PORT=$(compat_free_port)
ADMIN_PORT=$(compat_free_port)
GRPC_PORT=$(compat_free_port)
LOG=$(mktemp "${TMPDIR:-/tmp}/gateway-compat-grpc.XXXXXX.log")
echo "== gateway $GATEWAY on 127.0.0.1:$PORT (gRPC $GRPC_PORT, admin $ADMIN_PORT), log $LOG"
compat_start_gateway "$GATEWAY" "$LOG" "127.0.0.1:$PORT" \
    --config scripts/compat/gateway.toml --no-watch \
    --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" --grpc-listen "127.0.0.1:$GRPC_PORT" || exit 1

timeout 300 "$VENV/bin/python" scripts/compat/tritonclient_grpc.py --grpc "127.0.0.1:$GRPC_PORT" --http "127.0.0.1:$PORT" > "$LOG.out" 2>&1
status=$?
grep -v "^ok  " "$LOG.out"

compat_finish run_tritonclient_grpc "$status" "$LOG"
