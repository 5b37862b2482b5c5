#!/usr/bin/env bash
# The credit-scoring story, end to end: starts the release gateway with rollout-demo.toml on its
# own ports, drives sticky users with delayed feedback labels (credit_story.py), and shows the
# gateway rolling the candidate back by itself when its false positives spike.
#
#   loadtest/demo/run.sh [credit_story.py options...]
#   DEMO_PORT=58180 DEMO_ADMIN_PORT=58190 loadtest/demo/run.sh --rate 400
#
# Exit status: credit_story.py's (0: rolled back within two analysis intervals of the spike).
# Everything it starts stops by itself: the gateway runs under `timeout` and is stopped on exit.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

port=${DEMO_PORT:-58180}
admin_port=${DEMO_ADMIN_PORT:-58190}
limit=${DEMO_TIMEOUT_S:-300}
gateway=${GATEWAY:-$root/target/release/gateway}
log=${DEMO_LOG:-$(mktemp -t gateway-demo.XXXXXX.log)}

if [[ ! -x $gateway ]]; then
  echo "building the release gateway (cargo build --release -p gateway) ..." >&2
  cargo build --release -p gateway >&2
fi
command -v python3 >/dev/null || { echo "python3 is needed for the demo driver" >&2; exit 3; }
for p in "$port" "$admin_port"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "port $p is in use: set DEMO_PORT / DEMO_ADMIN_PORT" >&2
    exit 3
  fi
done

echo "starting $gateway --config loadtest/demo/rollout-demo.toml on 127.0.0.1:$port (admin :$admin_port), log $log"
# No file watching: the demo's config does not change while it runs. GATEWAY_DEMO_ADMIN_TOKEN is
# left unset: the admin plane is on loopback.
env -u GATEWAY_DEMO_ADMIN_TOKEN RUST_LOG="${RUST_LOG:-info}" timeout "$limit" "$gateway" \
  --config loadtest/demo/rollout-demo.toml --no-watch \
  --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin_port" 2>"$log" &
pid=$!
stop() {
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}
trap stop EXIT

set +e
python3 "$root/loadtest/demo/credit_story.py" --url "http://127.0.0.1:$port" \
  --admin "http://127.0.0.1:$admin_port" --log "$log" "$@"
status=$?
set -e
echo "(gateway log: $log)"
exit "$status"
