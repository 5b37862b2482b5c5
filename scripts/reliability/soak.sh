#!/usr/bin/env bash
# Soak: one release gateway, REQUESTS requests (default 1,000,000) of a mixed load, and a reload
# every second; PASS when the gateway's RSS at the end is at most 1.2x its RSS after the first
# 300k requests, no request failed for an unexpected reason, and every reload was applied.
#
#   scripts/reliability/soak.sh [REQUESTS [FLAGS of the soak binary...]]
#
# The config (written here, in the results folder): credit-scoring v1 primary, v2 a sticky
# candidate (x-user-id) at 10% or 30%, pins by x-model-version or path, v3 a shadow at 50%,
# monitoring with feedback on the class probabilities. The two variants differ in the
# candidate's percent and the batching delay, so each reload re-routes AND reloads every
# version (a batching change is a new version instance: load, warm, flip, drain). The file
# watcher sees each change too; the soak also asks POST /admin/reload.
#
# The mix (reliability/src/soak/mix.rs): routed, sticky (10,000 user keys; a user whose bucket
# the 10%/30% flip does not move must keep its version), pinned by header and by path on every
# version, shadowed (every routed request may be mirrored), labels for repeated
# ids (200 or 409), unique ids labelled twice (200 then 409), unknown ids (404); over 16
# connections, 2 of them h2c. The gateway runs on core 1, the soak on core 0.
#
# Output: one PASS/FAIL line per check, the JSON summary (also in
# target/reliability/soak-<time>/soak.json with the gateway's log). Exit 0 on PASS, 1 on FAIL,
# 3 when it could not start. SKIP_BUILD=1 skips the release build.
set -euo pipefail
requests=${1:-1000000}
shift $(( $# > 0 ? 1 : 0 ))
source "$(dirname "$0")/lib.sh"

# The RSS check compares the end with the state after the first 300k requests, so every bounded
# structure must have reached its bound by then: about 2% of the mix's requests store a new id,
# so the feedback store (its capacity: FEEDBACK_CAPACITY, default 1,000) is full after ~50k. With
# the default capacity (100,000) the store keeps filling to its bound through the whole run.
# Why 300k and not 100k: the allocator's arenas and ONNX Runtime's (every version is reloaded
# each second) keep settling for the first ~30 reloads. Measured on one 2-core machine, December
# 2026, four runs of two near-identical builds: RSS at 100k requests 43.0-46.7 MiB, at the end
# 50.1-53.7 MiB, so 1.10x, 1.13x, 1.18x and 1.24x from 100k (the 100k baseline is noise), and
# 1.04x-1.09x from 300k. A leak still fails: the feedback store's old one grew RSS 2.21x.
feedback_capacity=${FEEDBACK_CAPACITY:-1000}

build gateway reliability
results_dir soak

variant() { # PERCENT DELAY_US
    cat <<TOML
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
max_in_flight = 1024
request_timeout_ms = 5000
drain_timeout_ms = 2000

[runtime]
intra_op_threads = 1

[models.credit-scoring]
repository = "$ROOT/models"
batching = { max_batch_size = 16, max_queue_delay_us = $2, max_queue = 1024 }

[models.credit-scoring.routing]
primary = 1
candidates = [{ version = 2, percent = $1 }]
shadows = [{ version = 3, percent = 50.0 }]
sticky_header = "x-user-id"
pin_header = "x-model-version"

[models.credit-scoring.monitor]
output = "probabilities"
feedback_capacity = $feedback_capacity
TOML
}
variant 10.0 200 >"$OUT/variant-a.toml"
variant 30.0 300 >"$OUT/variant-b.toml"
cp "$OUT/variant-a.toml" "$OUT/gateway.toml"

start_gateway soak-gateway "$OUT/gateway.toml" || exit 3
log "soak: $requests requests, results in $OUT"
set +e
"${PIN_TOOL[@]}" "$BIN/soak" --gateway "data=$GW_DATA,admin=$GW_ADMIN,pid=$GW_PID" \
    --requests "$requests" --live-config "$OUT/gateway.toml" --sticky-percents 10,30 \
    --variants "$OUT/variant-a.toml" "$OUT/variant-b.toml" --json "$OUT/soak.json" "$@"
status=$?
set -e
log "soak: exit $status; gateway log and summary in $OUT"
exit "$status"
