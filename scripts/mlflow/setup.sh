#!/usr/bin/env bash
# Creates the Python environment the MLflow tests run a real tracking server from
# (gateway/tests/mlflow.rs): a venv with pinned mlflow, onnx and onnxruntime. Idempotent: a venv
# that already has these exact versions is left alone, so CI can call it every run for the cost
# of one check. A fresh install takes about a minute (52 s with pip's cache warm, 77 s cold).
#
#   scripts/mlflow/setup.sh                  # venv at /tmp/gateway-mlflow-venv
#   MLFLOW_VENV=/some/dir scripts/mlflow/setup.sh
#
# The tests find the venv the same way (MLFLOW_VENV, else the default).
set -euo pipefail

VENV="${MLFLOW_VENV:-/tmp/gateway-mlflow-venv}"
# Pinned so a registry change upstream never changes what the tests talk to. onnx matches
# models/requirements.txt: mlflow.onnx.log_model imports onnx to save the model and onnxruntime to
# check its session options.
MLFLOW_VERSION="3.17.2"
ONNX_VERSION="1.23.2"
ONNXRUNTIME_VERSION="1.31.1"

want="mlflow==${MLFLOW_VERSION} onnx==${ONNX_VERSION} onnxruntime==${ONNXRUNTIME_VERSION}"
stamp="$VENV/.gateway-mlflow-stamp"

if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "mlflow venv ready at $VENV ($want)"
    exit 0
fi

start=$(date +%s)
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
# shellcheck disable=SC2086 # $want is a list of requirement specifiers on purpose
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $want
"$VENV/bin/mlflow" --version
echo "$want" >"$stamp"
echo "mlflow venv ready at $VENV ($want) in $(( $(date +%s) - start )) s"
