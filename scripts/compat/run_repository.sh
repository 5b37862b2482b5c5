#!/usr/bin/env bash
# Triton model repositories, drop-in: a repository laid out as Triton's documentation shows, with
# no config.pbtxt (credit-scoring v1-v3, dense v1), served by `--model-repository DIR
# --model-control-mode explicit`, then, with the official clients and tools:
#   1. tritonclient[http] and tritonclient[grpc]: get_model_repository_index, load_model,
#      unload_model, is_model_ready, get_model_config (tritonclient_repository.py);
#   2. perf_analyzer (PyPI's tritonclient 2.51.0 wheel) drives every model of the repository over
#      HTTP and gRPC with no --shape: the auto-completed configuration is enough.
#
#   scripts/compat/run_repository.sh [GATEWAY_BINARY]     (default: target/debug/gateway)
#
# perf_analyzer needs Debian's libb64-0d and PyPI's nvidia-cuda-runtime-cu12 (its libcudart; no
# GPU is used), both installed by .ci/run; the venv is created once under /tmp.
set -uo pipefail

# shellcheck source=scripts/compat/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
compat_enter "${1:-}"

VENV=${COMPAT_REPOSITORY_VENV:-/tmp/gateway-compat-repository-venv}
compat_venv "$VENV" "tritonclient[http,grpc]==2.51.0" "numpy<2" "nvidia-cuda-runtime-cu12==12.9.79" || exit 2
if [[ $(ldconfig -p) != *libb64.so.0d* ]]; then
    echo "perf_analyzer needs libb64.so.0d: apt-get install -y libb64-0d" >&2
    exit 2
fi
CUDART=$(dirname "$(find "$VENV" -name 'libcudart.so.12' | head -n 1)")

REPO=$(mktemp -d "${TMPDIR:-/tmp}/gateway-triton-repo.XXXXXX")
for v in 1 2 3; do
    mkdir -p "$REPO/credit-scoring/$v" && cp "models/credit-scoring/$v/model.onnx" "$REPO/credit-scoring/$v/"
done
mkdir -p "$REPO/dense/1" && cp models/dense/1/model.onnx "$REPO/dense/1/"

PORT=$(compat_free_port)
ADMIN_PORT=$(compat_free_port)
GRPC_PORT=$(compat_free_port)
LOG=$(mktemp "${TMPDIR:-/tmp}/gateway-compat-repository.XXXXXX.log")
echo "== gateway $GATEWAY --model-repository $REPO --model-control-mode explicit on 127.0.0.1:$PORT (gRPC $GRPC_PORT), log $LOG"
compat_start_gateway "$GATEWAY" "$LOG" "127.0.0.1:$PORT" \
    --model-repository "$REPO" --model-control-mode explicit --load-model credit-scoring \
    --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" --grpc-listen "127.0.0.1:$GRPC_PORT" || exit 1

status=0
timeout 300 "$VENV/bin/python" scripts/compat/tritonclient_repository.py --http "127.0.0.1:$PORT" --grpc "127.0.0.1:$GRPC_PORT" >"$LOG.out" 2>&1 || status=1
cat "$LOG.out"

for model in credit-scoring dense; do
    for protocol in http grpc; do
        url="127.0.0.1:$PORT"
        [[ $protocol == grpc ]] && url="127.0.0.1:$GRPC_PORT"
        if LD_LIBRARY_PATH="$CUDART" timeout 120 "$VENV/bin/perf_analyzer" -m "$model" -i "$protocol" -u "$url" \
            --concurrency-range 2 --measurement-interval 1000 --max-trials 8 -s 1000 >"$LOG.pa" 2>&1 &&
            grep -q 'Throughput:' "$LOG.pa"; then
            echo "ok  perf_analyzer $model over $protocol: $(grep -m1 'Throughput:' "$LOG.pa" | sed 's/^ *//')"
        else
            echo "FAIL perf_analyzer $model over $protocol:"
            tail -20 "$LOG.pa"
            status=1
        fi
    done
done
rm -rf "$REPO"
compat_finish run_repository "$status" "$LOG"
