#!/usr/bin/env bash
# Proves the image runs as it will in a fleet: read-only root file system, uid 10001, the
# repository's models/ and deploy/docker/gateway.toml as read-only mounts, ports published on
# loopback only (Docker picks free ones). Then, each bounded:
#   1. ready: GET /v2/health/ready answers 200 within SMOKE_TIMEOUT_S (default 60) seconds;
#   2. one inference (README's request), its answer has outputs and an x-model-version header;
#   3. gRPC ServerLive answers on the gRPC port (h2c, an empty request message);
#   4. admin: /metrics open, /admin/models refused without the token and served with it;
#   5. Docker's HEALTHCHECK (run every second here) reports healthy;
#   6. the container runs as uid 10001 and wrote nothing (docker diff), and `docker stop`
#      (SIGTERM through tini) ends it with exit code 0.
# The container it started is removed by its id, whatever happens.
#
#   deploy/docker/smoke.sh              # gateway:dev
#   deploy/docker/smoke.sh IMAGE
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
image=${1:-gateway:dev}
timeout_s=${SMOKE_TIMEOUT_S:-60}
token=smoke-$RANDOM$RANDOM

cid=
cleanup() {
    if [[ -n $cid ]]; then
        docker rm -f "$cid" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT
fail() {
    echo "smoke: FAILED: $*" >&2
    if [[ -n $cid ]]; then
        echo "--- container log (last 40 lines)" >&2
        docker logs --tail 40 "$cid" >&2 2>&1 || true
    fi
    exit 1
}

start=$(date +%s.%N)
cid=$(docker run -d --read-only --user 10001 \
    -e "GATEWAY_ADMIN_TOKEN=$token" \
    -v "$repo/models:/models:ro" \
    -v "$here/gateway.toml:/config/gateway.toml:ro" \
    -p 127.0.0.1:0:8080 -p 127.0.0.1:0:8001 -p 127.0.0.1:0:9090 \
    --health-interval 1s --health-start-period 1s \
    "$image")
echo "smoke: started ${cid:0:12} from $image"
port_of() { docker port "$cid" "$1/tcp" | head -1 | sed 's/.*://'; }
http=$(port_of 8080)
grpc=$(port_of 8001)
admin=$(port_of 9090)

deadline=$(( $(date +%s) + timeout_s ))
until curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$http/v2/health/ready" 2>/dev/null; do
    [[ $(docker inspect -f '{{ .State.Running }}' "$cid") == true ]] || fail "the container exited"
    (( $(date +%s) < deadline )) || fail "not ready within ${timeout_s} s"
    sleep 0.2
done
echo "smoke: ready in $(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f s", b - a }')"

headers_file=$(mktemp)
answer=$(curl -fsS -D "$headers_file" --max-time 5 -X POST "http://127.0.0.1:$http/v2/models/credit-scoring/infer" \
    -H 'x-user-id: alice' \
    -d '{"inputs":[{"name":"features","datatype":"FP32","shape":[1,8],"data":[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8]}]}') ||
    { rm -f "$headers_file"; fail "the inference request failed"; }
headers=$(tr -d '\r' <"$headers_file")
rm -f "$headers_file"
[[ $answer == *'"outputs"'* ]] || fail "no outputs in the answer: $answer"
version=$(sed -n 's/^x-model-version: //Ip' <<<"$headers")
[[ -n $version ]] || fail "no x-model-version header"
echo "smoke: inference answered by version $version: $answer"

# gRPC ServerLive: a 5-byte frame (not compressed, length 0) is an empty ServerLiveRequest; the
# answer's message is `live: true` (field 1, varint 1: 08 01).
live=$(printf '\0\0\0\0\0' | curl -sS --max-time 5 --http2-prior-knowledge -H 'content-type: application/grpc' \
    -H 'te: trailers' --data-binary @- "http://127.0.0.1:$grpc/inference.GRPCInferenceService/ServerLive" |
    od -An -tx1 | tr -d ' \n')
[[ $live == 00000000020801 ]] || fail "gRPC ServerLive answered '$live'"
echo "smoke: gRPC ServerLive: live"

# Read the whole page before matching: `curl | grep -q` under pipefail fails when grep stops
# reading at the first match and curl cannot write the rest.
metrics=$(curl -fsS --max-time 5 "http://127.0.0.1:$admin/metrics") || fail "admin /metrics did not answer"
grep -q '^gateway_' <<<"$metrics" || fail "no gateway_ metrics on the admin port"
code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$admin/admin/models")
[[ $code == 401 || $code == 403 ]] || fail "/admin/models without the token answered $code"
curl -fsS -o /dev/null --max-time 5 -H "Authorization: Bearer $token" "http://127.0.0.1:$admin/admin/models" ||
    fail "/admin/models with the token failed"
echo "smoke: admin: /metrics open, /admin/* needs the token ($code without it)"

until [[ $(docker inspect -f '{{ .State.Health.Status }}' "$cid") == healthy ]]; do
    (( $(date +%s) < deadline )) || fail "HEALTHCHECK not healthy within ${timeout_s} s"
    sleep 0.5
done
echo "smoke: HEALTHCHECK healthy"

uid=$(docker top "$cid" -o pid,uid,comm | awk '$3 == "gateway" { print $2 }')
[[ $uid == 10001 ]] || fail "the gateway runs as uid '$uid', not 10001"
# The mount points Docker made for the two mounts are all that may differ from the image.
changes=$(docker diff "$cid" | grep -vxE 'A /models|A /config|A /config/gateway.toml' || true)
[[ -z $changes ]] || fail "the container wrote to its file system: $changes"
t=$(date +%s.%N)
docker stop -t 20 "$cid" >/dev/null
code=$(docker inspect -f '{{ .State.ExitCode }}' "$cid")
[[ $code == 0 ]] || fail "exit code $code after docker stop"
echo "smoke: uid 10001, nothing written, docker stop -> exit 0 in $(awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f s", b - a }')"
echo "smoke: passed"
