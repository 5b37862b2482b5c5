#!/usr/bin/env bash
# Offline checks of the Kubernetes manifests under deploy/kubernetes/ (no cluster is needed or
# contacted):
#   1. base/prometheusrule.yaml is up to date with deploy/prometheus/alerts.yml
#      (make_prometheusrule.py --check);
#   2. `kubectl kustomize` renders deploy/kubernetes (what CI renders: the example overlay), the
#      base and every overlay under overlays/;
#   3. validate.py on every render: each core resource against the Kubernetes 1.32 JSON schemas,
#      strict (PyPI's kubernetes-validate); the Prometheus Operator's ServiceMonitor and
#      PrometheusRule are skipped there with a note and checked for structure instead; the
#      PrometheusRule's groups equal alerts.yml's; the resources agree with each other; every pod
#      meets the restricted Pod Security Standard; the gateway's config agrees with its Deployment;
#   4. `gateway check-config --load-models` on each render's gateway config (models/ standing in
#      for the /models volume), when a gateway binary is at hand (GATEWAY, else target/release or
#      target/debug); SKIPPED otherwise.
#
#   deploy/kubernetes/check.sh            # from the repository root or anywhere
#
# Needs kubectl (1.32; its built-in kustomize 5.5) and python3 >= 3.11. kubernetes-validate is
# installed once into a virtual environment, $KUBERNETES_VALIDATE_VENV
# (/tmp/kubernetes-validate-venv), from PyPI: the first run needs PyPI, later runs nothing.
# Exit 1 when any check failed; the last line says what passed, failed and was skipped.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
k8s_version=${KUBERNETES_VERSION:-1.32.0}
kv_version=1.37.0 # kubernetes-validate release; it carries the schemas of Kubernetes 1.25 to 1.37
venv=${KUBERNETES_VALIDATE_VENV:-/tmp/kubernetes-validate-venv}
failed=()
skipped=()
passed=()
start=$(date +%s.%N)

run() { # name command...
  local name=$1
  shift
  echo "== $name"
  if "$@"; then
    passed+=("$name")
  else
    echo "FAILED: $name"
    failed+=("$name")
  fi
}

finish() {
  local took f s
  took=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  f=$(printf '%s; ' "${failed[@]}")
  s=$(printf '%s; ' "${skipped[@]}")
  echo
  echo "passed: ${#passed[@]}, failed: ${#failed[@]}${failed[*]:+ (${f%; })}, skipped: ${#skipped[@]}${skipped[*]:+ (${s%; })}; ${took} s"
  [[ ${#failed[@]} == 0 ]]
  exit $?
}

for tool in kubectl python3; do
  if ! command -v $tool >/dev/null; then
    echo "== $tool not found: it is required"
    failed+=("$tool")
    finish
  fi
done
kubectl version --client 2>/dev/null | sed 's/^/   /'

tmp=$(mktemp -d -t k8s-check.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# ------------------------------------------------------------------ kubernetes-validate in a venv
if ! "$venv/bin/python" -c 'import kubernetes_validate, yaml' 2>/dev/null ||
  [[ $("$venv/bin/python" -c 'import kubernetes_validate.version as v; print(v.__version__)' 2>/dev/null) != "$kv_version" ]]; then
  echo "== installing kubernetes-validate==$kv_version into $venv (once)"
  rm -rf "$venv"
  if ! { python3 -m venv "$venv" && "$venv/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$kv_version"; }; then
    echo "FAILED: could not install kubernetes-validate from PyPI into $venv"
    failed+=("install kubernetes-validate")
    finish
  fi
fi

# ------------------------------------------------------------------------------------ 1. rules
run "PrometheusRule up to date with alerts.yml" python3 deploy/kubernetes/make_prometheusrule.py --check

# ----------------------------------------------------------------------------------- 2. render
renders=()
render() { # name dir
  if kubectl kustomize "$2" >"$tmp/$1.yaml" 2>"$tmp/$1.err"; then
    echo "   $2: $(grep -c '^kind:' "$tmp/$1.yaml") resources"
    renders+=("$1=$tmp/$1.yaml")
  else
    sed 's/^/   /' "$tmp/$1.err"
    return 1
  fi
}
targets=("root:deploy/kubernetes" "base:deploy/kubernetes/base")
for dir in deploy/kubernetes/overlays/*/; do
  [[ -f $dir/kustomization.yaml ]] && targets+=("$(basename "$dir"):${dir%/}")
done
for t in "${targets[@]}"; do
  run "kubectl kustomize ${t#*:}" render "${t%%:*}" "${t#*:}"
done

# ---------------------------------------------------------------------------------- 3. validate
mkdir -p "$tmp/configs"
if [[ ${#renders[@]} -gt 0 ]]; then
  run "validate renders (Kubernetes $k8s_version)" \
    "$venv/bin/python" deploy/kubernetes/validate.py --kubernetes-version "$k8s_version" \
    --alerts deploy/prometheus/alerts.yml --dump-configs "$tmp/configs" "${renders[@]}"
fi

# ---------------------------------------------------------------------- 4. gateway check-config
gateway=${GATEWAY:-}
if [[ -z $gateway ]]; then
  for g in target/release/gateway target/debug/gateway; do
    [[ -x $g ]] && gateway=$root/$g && break
  done
fi
if [[ -z $gateway || ! -x $gateway ]]; then
  echo "== SKIPPED gateway check-config on the rendered configs: no gateway binary"
  echo "   (cargo build --release -p gateway, or GATEWAY=/path/to/gateway)"
  skipped+=("gateway check-config")
else
  check_config() {
    local ok=0 f
    for f in "$tmp"/configs/*.toml; do
      [[ -e $f ]] || { echo "   no configs were extracted"; return 1; }
      # The manifests serve the models from the /models volume; the repository's models/ is what
      # the models image copies there.
      sed "s#\"/models\"#\"$root/models\"#g" "$f" >"$f.local"
      echo "   $(basename "$f" .toml):"
      # The token only satisfies the non-loopback admin_listen rule; nothing is served.
      if GATEWAY_ADMIN_TOKEN=check-only RUST_LOG=warn "$gateway" check-config "$f.local" --load-models >"$f.out" 2>&1; then
        grep -v 'TensorSpec' "$f.out" | sed 's/^/     /'
      else
        sed 's/^/     /' "$f.out"
        ok=1
      fi
    done
    return $ok
  }
  run "gateway check-config --load-models ($gateway)" check_config
fi

finish
