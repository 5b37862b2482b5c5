#!/usr/bin/env bash
# Does Triton's own perf_analyzer agree with loadtest? One run against one gateway (release build,
# gateway-bench.toml): credit-scoring and dense at batch 1, concurrency 1 and 8 and a constant
# 1,000 requests/s (open loop: where neither client is the bottleneck), HTTP with binary
# tensors (perf_analyzer's way, so loadtest runs with --binary), perf_analyzer and loadtest
# alternating on each setting. Prints (and writes) a table of both and the ratio.
#
# perf_analyzer comes from PyPI's tritonclient==2.51.0 wheel, installed by this script into
# $VENV_ROOT/perf-analyzer together with nvidia-cuda-runtime-cu12 (its libcudart; no GPU is
# needed). It also needs Debian's libb64-0d: the script stops and says so when it is missing.
# perf_analyzer reads the model's Triton configuration first (GET /v2/models/{m}/config), so this
# also checks that the gateway serves it in a form the real client accepts. Around each client
# run the script reads the gateway's own statistics (Triton's extension): the server-side mean
# per request under each client is what should agree; the clients' own costs differ.
#
# Usage: benches/compare/perf_analyzer.sh [--skip-build] [--duration S]
# Writes benches/results/perf-analyzer-<time>/{perf_analyzer.md,raw/,logs/}.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SKIP_BUILD=0 DURATION=5 WARMUP=1
while [ $# -gt 0 ]; do
    case "$1" in
        --skip-build) SKIP_BUILD=1 ;;
        --duration) DURATION=$2; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
results_dir perf-analyzer-

if [[ $(ldconfig -p) != *libb64.so.0d* ]]; then
    log "perf_analyzer needs libb64.so.0d: apt-get install -y libb64-0d"
    exit 1
fi
VENV="$VENV_ROOT/perf-analyzer"
if [ ! -x "$VENV/bin/perf_analyzer" ]; then
    log "installing tritonclient 2.51.0 and nvidia-cuda-runtime-cu12 into $VENV"
    python3 -m venv "$VENV" &&
        "$VENV/bin/pip" install -q "tritonclient[http]==2.51.0" "nvidia-cuda-runtime-cu12==12.9.79" \
            >"$LOGS/install.log" 2>&1 || { log "install failed: $LOGS/install.log"; exit 1; }
fi
CUDART=$(dirname "$(find "$VENV" -name 'libcudart.so.12' | head -n 1)")
[ "$SKIP_BUILD" = 1 ] || build || exit 1

gateway_config "$OUT/gateway.toml" 0 32 1 1
start_gateway gateway "$OUT/gateway.toml" || exit 1

# timed FILE CMD...: runs CMD, writes "<wall seconds> <CPU seconds>" of it (and its children) to FILE.
timed() {
    python3 -c 'import resource, subprocess, sys, time
t = time.monotonic(); code = subprocess.call(sys.argv[2:])
r = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(f"{time.monotonic() - t} {r.ru_utime + r.ru_stime}\n"); sys.exit(code)' "$@"
}

# pa OUT MODEL LOAD: one perf_analyzer measurement (CSV with p50/p99) in OUT. LOAD is a
# concurrency ("8") or a constant request rate ("r2000", 8 connections' worth of async requests).
pa() {
    local load=(--concurrency-range "$3")
    [[ $3 == r* ]] && load=(--request-rate-range "${3#r}" --max-threads 8)
    LD_LIBRARY_PATH="$CUDART" timed "$1.cpu" timeout 300 "$VENV/bin/perf_analyzer" -m "$2" -i http -u "127.0.0.1:$PORT" \
        "${load[@]}" --measurement-interval $((DURATION * 1000)) -s 20 --max-trials 6 \
        -f "$1" >>"$LOGS/perf_analyzer.log" 2>&1 || log "perf_analyzer failed ($2, $3): $LOGS/perf_analyzer.log"
}

# ld OUT MODEL LOAD: the same setting with loadtest (generated inputs, binary tensors).
ld() {
    local load=(-c "$3")
    [[ $3 == r* ]] && load=(-c 8 --rate "${3#r}")
    timed "$1.cpu" timeout $((DURATION + WARMUP + 60)) "$BIN/loadtest" --url "http://127.0.0.1:$PORT" -m "$2" \
        "${load[@]}" --binary -d "${DURATION}s" --warmup "${WARMUP}s" --json >"$1" 2>>"$LOGS/loadtest.log" ||
        log "loadtest failed ($2, $3)"
}

# stats FILE MODEL: the gateway's own statistics of the model's version 1 (Triton's extension).
stats() {
    curl -sf "http://127.0.0.1:$PORT/v2/models/$2/versions/1/stats" >"$1" || echo '{}' >"$1"
}

for model in credit-scoring dense; do
    for c in 1 8 r1000; do
        log "$model, concurrency $c: perf_analyzer, then loadtest"
        stats "$RAW/pa-$model-c$c.before" "$model"
        pa "$RAW/pa-$model-c$c.csv" "$model" "$c"
        stats "$RAW/pa-$model-c$c.after" "$model"
        ld "$RAW/lt-$model-c$c.json" "$model" "$c"
        stats "$RAW/lt-$model-c$c.after" "$model"
    done
done
stop_server

python3 - "$RAW" "$OUT/perf_analyzer.md" <<'EOF'
import csv, json, os, sys
raw, out = sys.argv[1], sys.argv[2]
def cpu_per_request(path, rps):
    """The client's CPU per request: its CPU seconds over its wall time, at its throughput."""
    try:
        wall, cpu = (float(x) for x in open(path).read().split())
        return f"{cpu / wall / rps * 1e6:.0f}" if rps and wall else "-"
    except (OSError, ValueError):
        return "-"


def server_avg(before, after):
    """The gateway's own mean time per answered request between two statistics snapshots, µs."""
    try:
        a, b = (json.load(open(os.path.join(raw, f)))["model_stats"][0]["inference_stats"]["success"]
                for f in (before, after))
        n = b["count"] - a["count"]
        return f"{(b['ns'] - a['ns']) / n / 1000:.0f}" if n > 0 else "-"
    except (OSError, ValueError, KeyError, IndexError):
        return "-"


rows = ["| model | concurrency | perf_analyzer infer/s | p50 / p99 µs | client CPU µs/req | gateway's mean µs | loadtest req/s | p50 / p99 µs | client CPU µs/req | gateway's mean µs | loadtest ÷ perf_analyzer req/s |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
for model in ("credit-scoring", "dense"):
    for c in (1, 8, "r1000"):
        try:
            with open(os.path.join(raw, f"pa-{model}-c{c}.csv")) as f:
                pa = next(csv.DictReader(f))
            pa_rps, pa_p50, pa_p99 = float(pa["Inferences/Second"]), pa["p50 latency"], pa["p99 latency"]
        except (OSError, StopIteration, KeyError, ValueError):
            pa_rps, pa_p50, pa_p99 = None, "-", "-"
        try:
            lt = json.load(open(os.path.join(raw, f"lt-{model}-c{c}.json")))
            lt_rps, lat = lt["throughput_rps"], lt["latency_us"]
        except (OSError, ValueError, KeyError):
            lt_rps, lat = None, {}
        ratio = f"{lt_rps / pa_rps:.2f}" if lt_rps and pa_rps else "-"
        pa_cpu = cpu_per_request(os.path.join(raw, f"pa-{model}-c{c}.csv.cpu"), pa_rps)
        lt_cpu = cpu_per_request(os.path.join(raw, f"lt-{model}-c{c}.json.cpu"), lt_rps)
        pa_server = server_avg(f"pa-{model}-c{c}.before", f"pa-{model}-c{c}.after")
        lt_server = server_avg(f"pa-{model}-c{c}.after", f"lt-{model}-c{c}.after")
        rows.append(f"| {model} | {c} | {pa_rps or 0:,.0f} | {pa_p50} / {pa_p99} | {pa_cpu} | {pa_server} | "
                    f"{lt_rps or 0:,.0f} | {lat.get('p50', '-')} / {lat.get('p99', '-')} | {lt_cpu} | {lt_server} | {ratio} |")
text = "\n".join(rows)
print(text)
open(out, "w").write(text + "\n")
EOF
log "results in $OUT"
