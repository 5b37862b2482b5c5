#!/usr/bin/env bash
# Installs each Python peer into its own venv under $VENV_ROOT (default /tmp/gwbench-venvs), from
# PyPI, pinned. One venv per peer: their dependency pins (fastapi, protobuf, numpy) disagree.
# Idempotent: a venv whose install finished is kept (marker file). Usage: install.sh [peer...]
# Prints one line per peer: "<peer> ok <venv>" or "<peer> FAILED (see <log>)".
set -u
VENV_ROOT=${VENV_ROOT:-/tmp/gwbench-venvs}
PYTHON=${PYTHON:-python3}
ORT="onnxruntime==1.31.1"
mkdir -p "$VENV_ROOT"

packages() {
    case "$1" in
        fastapi) echo "fastapi==0.115.12 uvicorn==0.34.2 uvloop==0.21.0 httptools==0.6.4 $ORT numpy<2.3" ;;
        kserve) echo "kserve==0.21.0 uvloop==0.21.0 $ORT" ;;
        # uvloop 0.22/0.23 kill MLServer's inference worker at start (MLServer#2286).
        mlserver) echo "mlserver==1.7.1 uvloop==0.21.0 $ORT" ;;
        pytriton) echo "nvidia-pytriton==0.7.0 $ORT" ;;
        mosec) echo "mosec==0.9.8 $ORT numpy<2.3" ;;
        *) return 1 ;;
    esac
}

install_one() {
    local peer=$1 venv="$VENV_ROOT/$1" log="$VENV_ROOT/$1.install.log"
    local pkgs
    pkgs=$(packages "$peer") || { echo "$peer FAILED (unknown peer)"; return 1; }
    if [ -f "$venv/.installed" ] && [ "$(cat "$venv/.installed")" = "$pkgs" ]; then
        echo "$peer ok $venv"
        return 0
    fi
    rm -rf "$venv"
    {
        "$PYTHON" -m venv "$venv" &&
            "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip &&
            # shellcheck disable=SC2086
            timeout 1200 "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $pkgs
    } >"$log" 2>&1
    if [ $? -eq 0 ]; then
        echo "$pkgs" >"$venv/.installed"
        echo "$peer ok $venv"
    else
        echo "$peer FAILED (see $log)"
        return 1
    fi
}

status=0
for peer in "${@:-fastapi kserve mlserver pytriton mosec}"; do
    for p in $peer; do install_one "$p" || status=1; done
done
exit $status
