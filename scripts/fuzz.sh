#!/usr/bin/env bash
# Coverage-guided fuzzing of what hostile clients and bad config files reach first (fuzz/, one
# libFuzzer binary per target through the libfuzzer-sys crate), on stable Rust with nothing to
# install: the build passes the coverage instrumentation flags to rustc itself (what cargo-fuzz
# would pass, without cargo-fuzz), with debug assertions and overflow checks on.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 300 s, every target)
#
# Each target first replays fuzz/regressions/<target>/ (inputs that once crashed), then fuzzes
# for SECONDS_PER_TARGET on a copy of fuzz/corpus/<target>/ kept in fuzz/target/corpus/<target>/
# (ignored by git, so a run never dirties the tree and later runs start from what earlier ones
# found). Prints per target the executions, exec/s and the outcome; exits 1 on any crash, timeout
# or out-of-memory, naming the reproducer (fuzz/target/artifacts/<target>/...). Reproduce one with
#   fuzz/target/<host>/release/<target> <file>
#
# Environment: FUZZ_STRICT=1 (turn off the harnesses' KNOWN CRASH allowances, to check a fix),
# FUZZ_JOBS (targets run at once; default: the number of cores), FUZZ_ARGS (more
# libFuzzer flags, e.g. "-max_len=65536"), FUZZ_OPT_LEVEL (the gateway crate's opt-level, default
# 1 as fuzz/Cargo.toml says: 3 builds it ~3x slower for ~25% more exec/s, worth it for long
# runs).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-300}
shift $(($# > 0 ? 1 : 0))
all_targets=(decode_json decode_binary decode_grpc config)
targets=("${all_targets[@]}")
(($# > 0)) && targets=("$@")
jobs=${FUZZ_JOBS:-$(nproc)}
((jobs > ${#targets[@]})) && jobs=${#targets[@]}

# Instrument every crate of the targets (never build scripts or proc macros: hence --target)
# for libFuzzer's coverage feedback, comparisons included; `cfg(fuzzing)` as cargo-fuzz sets it.
host=$(rustc -vV | sed -n 's/^host: //p')
flags=(
    -Cpasses=sancov-module
    -Cllvm-args=-sanitizer-coverage-level=4
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
    -Cllvm-args=-sanitizer-coverage-pc-table
    -Cllvm-args=-sanitizer-coverage-trace-compares
    --cfg fuzzing
)
# No sanitizer: gateway forbids unsafe code, and AddressSanitizer needs nightly's -Zsanitizer.
target_dir=fuzz/target
export RUSTFLAGS="${flags[*]}"
unset CARGO_ENCODED_RUSTFLAGS
# The targets never load ONNX Runtime: a path given at build time keeps gateway's build script
# from downloading it (see gateway/build.rs).
export ORT_DYLIB_PATH=/nonexistent/fuzzing-loads-no-onnxruntime.so

echo "== fuzz: build (release, debug assertions and overflow checks on, $host)"
start=$SECONDS
cargo build --manifest-path fuzz/Cargo.toml --release --locked --target "$host" \
    --target-dir "$target_dir" --bins --config "profile.release.package.gateway.opt-level=${FUZZ_OPT_LEVEL:-1}"
echo "built in $((SECONDS - start)) s"
bin_dir=$target_dir/$host/release

# Runs one target; its libFuzzer log goes to fuzz/target/logs/<target>.log.
run_target() {
    local target=$1 corpus=fuzz/target/corpus/$1 artifacts=fuzz/target/artifacts/$1
    local log=fuzz/target/logs/$1.log
    mkdir -p "$corpus" "$artifacts" fuzz/target/logs
    : >"$log"
    local regressions=(fuzz/regressions/"$target"/*)
    if [[ -e ${regressions[0]} ]]; then
        echo "-- replaying ${#regressions[@]} regression input(s)" >>"$log"
        if ! "$bin_dir/$target" -artifact_prefix="$artifacts/" "${regressions[@]}" >>"$log" 2>&1; then
            echo "REGRESSION" >>"$log"
            return 1
        fi
    fi
    cp fuzz/corpus/"$target"/* "$corpus"/
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    "$bin_dir/$target" "$corpus" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$artifacts/" ${FUZZ_ARGS:-} >>"$log" 2>&1
}

# Executions, exec/s and the outcome of one finished target, from its log.
summarize() {
    local target=$1 status=$2 log=fuzz/target/logs/$1.log
    local runs rate
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    if [[ -z $runs ]]; then # a crash stops before the final stats: the last progress line
        runs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
    fi
    if [[ $status == 0 ]]; then
        printf '%-14s %12s executions %8s exec/s  %s s  ok\n' "$target" "${runs:-?}" "${rate:-?}" "$seconds"
        return 0
    fi
    local reproducer
    reproducer=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    if grep -q '^REGRESSION$' "$log"; then
        runs=0 rate=0 reproducer="a fuzz/regressions/$target/ input (replayed before fuzzing)"
    fi
    printf '%-14s %12s executions %8s exec/s  CRASHED: %s\n' "$target" "${runs:-?}" "${rate:-?}" \
        "${reproducer:-see the log}"
    grep -m1 -E "panicked at|ERROR: libFuzzer" "$log" | sed 's/^/    /' || true
    grep -A2 -m1 "panicked at" "$log" | tail -n +2 | sed 's/^/    /' || true
    echo "    log: fuzz/target/logs/$target.log"
    return 1
}

echo "== fuzz: ${#targets[@]} target(s), $seconds s each, $jobs at a time"
declare -A status
pending=("${targets[@]}")
while ((${#pending[@]} > 0)); do
    batch=("${pending[@]:0:jobs}")
    pending=("${pending[@]:jobs}")
    declare -A pids=()
    for t in "${batch[@]}"; do
        [[ -x $bin_dir/$t ]] || { echo "unknown target $t (known: ${all_targets[*]})" >&2; exit 2; }
        run_target "$t" &
        pids[$t]=$!
    done
    for t in "${batch[@]}"; do
        if wait "${pids[$t]}"; then status[$t]=0; else status[$t]=1; fi
    done
    unset pids
done

failed=0
for t in "${targets[@]}"; do
    summarize "$t" "${status[$t]}" || failed=1
done
exit $failed
