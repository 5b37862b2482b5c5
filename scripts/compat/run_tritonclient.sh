#!/usr/bin/env bash
# The official Triton HTTP client against the gateway: see scripts/compat/README.md.
#
#   scripts/compat/run_tritonclient.sh [GATEWAY_BINARY]     (default: target/debug/gateway)
#
# Builds nothing: starts the already-built gateway on free loopback ports with
# scripts/compat/compat.toml, waits for /v2/health/ready, runs tritonclient_http.py from a venv
# (tritonclient[http]==2.51.0 + numpy from PyPI, created once under /tmp), stops the gateway by
# its PID and checks that it exits 0. Exit status non-zero on any failure.
# Environment: COMPAT_VENV (venv folder), PYTHON (interpreter for the venv), COMPAT_VERBOSE=1
# (print every passing check too).
set -uo pipefail

# shellcheck source=scripts/compat/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
compat_enter "${1:-}"

VENV=${COMPAT_VENV:-/tmp/gateway-compat-tritonclient-venv}
compat_venv "$VENV" "tritonclient[http]==2.51.0" "numpy<2" || exit 2

PORT=$(compat_free_port)
ADMIN_PORT=$(compat_free_port)
LOG=$(mktemp "${TMPDIR:-/tmp}/gateway-compat-tritonclient.XXXXXX.log")
echo "== gateway $GATEWAY on 127.0.0.1:$PORT (admin $ADMIN_PORT), log $LOG"
compat_start_gateway "$GATEWAY" "$LOG" "127.0.0.1:$PORT" \
    --config scripts/compat/compat.toml --no-watch \
    --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" || exit 1

quiet=(--quiet)
[[ "${COMPAT_VERBOSE:-0}" == 1 ]] && quiet=()
timeout 300 "$VENV/bin/python" scripts/compat/tritonclient_http.py --url "127.0.0.1:$PORT" "${quiet[@]}"
status=$?

compat_finish run_tritonclient "$status" "$LOG"
