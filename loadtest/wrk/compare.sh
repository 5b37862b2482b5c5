#!/usr/bin/env bash
# Drives the same target with loadtest and wrk in alternating rounds (closed loop, JSON,
# batch 1) and prints requests/s, p99 and the generator's own CPU seconds for each run.
#
#   loadtest/wrk/compare.sh [URL] [MODEL] [CONNECTIONS] [SECONDS] [ROUNDS]
#   loadtest/wrk/compare.sh http://127.0.0.1:8080 credit-scoring 32 10 3
#
# Needs `wrk` (Debian package) and a release build of loadtest (cargo build --release -p loadtest).
set -euo pipefail
url=${1:-http://127.0.0.1:8080}
model=${2:-credit-scoring}
conns=${3:-32}
secs=${4:-10}
rounds=${5:-3}
here=$(cd "$(dirname "$0")" && pwd)
loadtest=${LOADTEST:-$here/../../target/release/loadtest}
infer="$url/v2/models/$model/infer"

for round in $(seq 1 "$rounds"); do
  out=$( { /usr/bin/time -f "cpu %U %S" "$loadtest" --url "$url" -m "$model" -c "$conns" \
      -d "${secs}s" --json > /tmp/compare-loadtest.$$.json; } 2>&1 )
  python3 - "$round" "$out" /tmp/compare-loadtest.$$.json <<'PY'
import json, sys
r = json.load(open(sys.argv[3]))
cpu = sys.argv[2].split()
print(f"round {sys.argv[1]} loadtest {r['throughput_rps']:9.0f} req/s  p50 {r['latency_us']['p50']} us  "
      f"p99 {r['latency_us']['p99']} us  errors {r['errors']}  cpu {float(cpu[-2]) + float(cpu[-1]):.2f} s")
PY
  out=$( { /usr/bin/time -f "cpu %U %S" wrk -t1 -c"$conns" -d"${secs}s" --latency \
      -s "$here/post.lua" "$infer"; } 2>&1 )
  rps=$(grep -oP 'Requests/sec:\s+\K[0-9.]+' <<<"$out")
  p50=$(grep -oP '^p50 \K[0-9]+' <<<"$out")
  p99=$(grep -oP ' p99 \K[0-9]+' <<<"$out")
  bad=$(grep -oP 'non-2xx \K[0-9]+' <<<"$out")
  cpu=$(grep -oP '^cpu \K.*' <<<"$out" | awk '{printf "%.2f", $1 + $2}')
  printf "round %s wrk      %9.0f req/s  p50 %s us  p99 %s us  errors %s  cpu %s s\n" \
    "$round" "$rps" "$p50" "$p99" "$bad" "$cpu"
done
rm -f /tmp/compare-loadtest.$$.json
