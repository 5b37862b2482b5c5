#!/usr/bin/env bash
# Checks everything under deploy/:
#   1. the Grafana dashboard: valid JSON, the shape Grafana imports, and up to date with its
#      generator (deploy/grafana/make_dashboard.py);
#   2. the alert rules: `promtool check rules` and their unit tests (`promtool test rules`);
#   3. the Prometheus config: `promtool check config` (which checks the rule files it names too);
#   4. the gateway's real /metrics: starts the release gateway with loadtest/demo/rollout-demo.toml
#      (monitor, rollout, shadow) on its own ports, sends traffic that touches every metric family
#      (routed, sticky, pinned, bad requests, labels, unknown labels, an analysis verdict), scrapes
#      the admin /metrics and runs `promtool check metrics` on it.
#
#   deploy/check.sh            # from the repository root or anywhere
#
# Needs python3 (1) and promtool (2-4; Debian: `apt-get install -y prometheus`). Without promtool
# the checks that need it are SKIPPED with a message and the script still exits 0 when the rest
# passed: read its last line. Check 4 builds the release gateway and loadtest first when they are
# missing (cargo build --release -p gateway -p loadtest: minutes on a fresh clone).
# Ports: CHECK_PORT (58380) and CHECK_ADMIN_PORT (58390). Exit 1 when any check failed.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
port=${CHECK_PORT:-58380}
admin_port=${CHECK_ADMIN_PORT:-58390}
failed=()
skipped=()
passed=()

run() { # name command...
  local name=$1
  shift
  echo "== $name: $*"
  if "$@"; then
    passed+=("$name")
  else
    echo "FAILED: $name"
    failed+=("$name")
  fi
}

# ------------------------------------------------------------------------------------ 1. dashboard
if command -v python3 >/dev/null; then
  run "dashboard is up to date" python3 deploy/grafana/make_dashboard.py --check
  run "dashboard imports" python3 - deploy/grafana/gateway-dashboard.json <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
problems = []
for key in ("uid", "title", "panels", "templating", "schemaVersion"):
    if key not in d:
        problems.append(f"missing top-level {key}")
names = [v["name"] for v in d["templating"]["list"]]
if "model" not in names:
    problems.append("no `model` template variable")
model = next(v for v in d["templating"]["list"] if v["name"] == "model")
if "label_values(" not in model["query"]["query"]:
    problems.append("`model` does not come from label_values")
ids = [p["id"] for p in d["panels"]]
if len(ids) != len(set(ids)):
    problems.append("duplicate panel ids")
exprs = 0
for p in d["panels"]:
    g = p.get("gridPos", {})
    if not all(k in g for k in "hwxy") or g["x"] + g["w"] > 24:
        problems.append(f"panel {p.get('title')}: bad gridPos {g}")
    for t in p.get("targets", []):
        exprs += 1
        if not t.get("expr") or not t.get("refId"):
            problems.append(f"panel {p.get('title')}: a target without expr or refId")
        if t["expr"].count("(") != t["expr"].count(")"):
            problems.append(f"panel {p.get('title')}: unbalanced parentheses in {t['expr']}")
for p in problems:
    print(" ", p)
rows = sum(p["type"] == "row" for p in d["panels"])
print(f"  {len(d['panels']) - rows} panels in {rows} rows, {exprs} queries, variables {', '.join(names)}")
sys.exit(1 if problems else 0)
PY
else
  echo "== SKIPPED dashboard checks: python3 not found"
  skipped+=("dashboard (no python3)")
fi

# --------------------------------------------------------------------------------- 2-4. promtool
if ! command -v promtool >/dev/null; then
  echo "== SKIPPED promtool checks (rules, rule tests, config, metrics): promtool not found."
  echo "   Install it with Debian's prometheus package: apt-get install -y prometheus"
  skipped+=("promtool check rules" "promtool test rules" "promtool check config" "promtool check metrics")
else
  promtool --version 2>&1 | head -1
  run "promtool check rules" promtool check rules deploy/prometheus/alerts.yml
  run "promtool test rules" promtool test rules deploy/prometheus/alerts_test.yml
  run "promtool check config" promtool check config deploy/prometheus/prometheus.yml
  if command -v python3 >/dev/null; then
    # Every dashboard query (and annotation query) is PromQL that promtool parses: wrapped as
    # recording rules with Grafana's variables filled in.
    queries=$(mktemp -t dashboard-queries.XXXXXX.yml)
    python3 - deploy/grafana/gateway-dashboard.json >"$queries" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
subs = {"$__rate_interval": "1m", "$__range": "1h", "$label_window": "5m", "$model": "credit-scoring",
        "$instance": ".*", "$version": "1"}
exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
exprs += [a["expr"] for a in d["annotations"]["list"] if "expr" in a]
print("groups:\n  - name: dashboard-queries\n    rules:")
for i, e in enumerate(exprs):
    for k, v in subs.items():
        e = e.replace(k, v)
    print(f"      - record: dashboard:query_{i}\n        expr: {json.dumps(e)}")
PY
    run "dashboard queries parse (promtool)" promtool check rules "$queries"
    rm -f "$queries"
  fi

  gateway=${GATEWAY:-$root/target/release/gateway}
  loadtest=${LOADTEST:-$root/target/release/loadtest}
  if [[ ! -x $gateway || ! -x $loadtest ]]; then
    echo "== building the release gateway and loadtest (cargo build --release -p gateway -p loadtest)"
    cargo build --release -p gateway -p loadtest || failed+=("cargo build")
  fi
  if [[ -x $gateway && -x $loadtest ]]; then
    tmp=$(mktemp -d -t gateway-check.XXXXXX)
    env -u GATEWAY_DEMO_ADMIN_TOKEN timeout 120 "$gateway" --config loadtest/demo/rollout-demo.toml --no-watch \
      --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin_port" 2>"$tmp/gateway.log" &
    pid=$!
    trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$tmp"' EXIT
    url="http://127.0.0.1:$port"
    for _ in $(seq 300); do
      curl -sf "$url/v2/health/ready" >/dev/null 2>&1 && break
      sleep 0.1
    done
    body='{"id":"ID","inputs":[{"name":"features","datatype":"FP32","shape":[1,8],"data":[0.1,-0.2,0.3,-0.4,0.5,-0.6,0.7,-0.8]}]}'
    # Routed traffic from sticky users (primary, candidate, shadow copies, comparisons).
    "$loadtest" --url "$url" -m credit-scoring -c 8 -d 3s --sticky-header x-user-id --users 400 -q >/dev/null
    # Labels (tp/fp/tn/fn), an unknown id, a pinned call, a bad request, an unknown model.
    for i in $(seq 40); do
      curl -s -o /dev/null -X POST "$url/v2/models/credit-scoring/infer" -H "x-user-id: label-$i" \
        -d "${body/ID/check-$i}"
      curl -s -o /dev/null -X POST "$url/v2/feedback" -d "{\"id\":\"check-$i\",\"label\":$((i % 2))}"
    done
    curl -s -o /dev/null -X POST "$url/v2/feedback" -d '{"id":"never-seen","label":1}'
    curl -s -o /dev/null -X POST "$url/v2/models/credit-scoring/infer" -H "x-model-version: 3" -d "${body/ID/pinned}"
    curl -s -o /dev/null -X POST "$url/v2/models/credit-scoring/infer" -d '{"inputs":[]}'
    curl -s -o /dev/null -X POST "$url/v2/models/no-such-model/infer" -d "${body/ID/x}"
    sleep 5.5 # one analysis interval of rollout-demo.toml: a rollout event is counted
    curl -sf "http://127.0.0.1:$admin_port/metrics" >"$tmp/metrics.txt" || echo "scrape failed"
    families=$(grep -c '^# TYPE gateway_' "$tmp/metrics.txt")
    echo "== promtool check metrics: a scrape of $families gateway metric families ($(wc -l <"$tmp/metrics.txt") lines)"
    for name in gateway_requests_total gateway_request_duration_seconds gateway_queue_duration_seconds \
      gateway_inference_duration_seconds gateway_batch_size gateway_in_flight_requests \
      gateway_shadow_requests_total gateway_shadow_comparisons_total gateway_shadow_abs_diff \
      gateway_prediction_value gateway_prediction_class_total gateway_drift_psi gateway_feedback_total \
      gateway_route_weight_percent gateway_model_loaded gateway_rollout_events_total; do
      grep -q "^# TYPE $name " "$tmp/metrics.txt" || echo "   (not in this scrape: $name)"
    done
    lint=$(promtool check metrics <"$tmp/metrics.txt" 2>&1)
    status=$?
    if [[ $status -eq 0 && -z $lint ]]; then
      echo "   no lint problems"
      passed+=("promtool check metrics")
    else
      echo "$lint" | sed 's/^/   /'
      echo "FAILED: promtool check metrics"
      failed+=("promtool check metrics")
    fi
  fi
fi

echo
echo "passed: ${#passed[@]} (${passed[*]:-})"
[[ ${#skipped[@]} -gt 0 ]] && echo "SKIPPED: ${skipped[*]}"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
echo "deploy checks OK${skipped:+ (with skipped checks, see above)}"
