#!/usr/bin/env bash
# One command from a checkout to the gateway's image, with no registry:
#
#   deploy/docker/build.sh              # -> gateway:dev
#   deploy/docker/build.sh gateway:abc  # another tag
#
#   1. make-base.sh: gateway-base:bookworm and gateway-builder:bookworm, each only when missing or
#      out of date (debootstrap on the host; about 45 s when both are made);
#   2. vendor.sh: the crates and ONNX Runtime into deploy/docker/.cache/ when Cargo.lock or a
#      manifest changed (seconds, from the host's cargo cache);
#   3. docker build --network none -f deploy/docker/Dockerfile (the repository root is the
#      context; .dockerignore keeps it to the sources the build reads).
#
# Prints each step's time and the image's size. Needs root and a running Docker engine.
# The engine here has BuildKit but the client has no buildx plugin, so the classic builder is
# used (DOCKER_BUILDKIT=0; set DOCKER_BUILDKIT=1 where buildx exists: the Dockerfile needs
# nothing of either). Its layer cache does the work of a cache mount: dependencies are compiled in
# a layer of their own, reused while Cargo.lock and the manifests are unchanged; the build
# stage's last image is kept as gateway-build:cache, and the dangling images earlier builds of
# this Dockerfile left are removed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
image=${1:-gateway:dev}

now() { date +%s.%N; }
took() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

start=$(now)
t=$(now)
"$here/make-base.sh"
base_s=$(took "$t")
t=$(now)
"$here/vendor.sh"
vendor_s=$(took "$t")

revision=$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)
if [[ $revision != unknown && -n $(git -C "$repo" --no-optional-locks status --porcelain 2>/dev/null) ]]; then
    revision="$revision-dirty"
fi
t=$(now)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0} docker build --network none --force-rm \
    -f "$here/Dockerfile" -t "$image" \
    --label "org.opencontainers.image.revision=$revision" \
    "$repo" | tee "$log"
build_s=$(took "$t")

# The build stage's last image is the next build's cache (its dependency layer above all). Tag
# it, so that it is not dangling, then drop this Dockerfile's dangling images: earlier build
# stages and earlier gateway images, which nothing builds on any more. Only images with this
# project's labels are touched. `docker rmi gateway-build:cache` forces a cold build.
stage=$(awk '/^Step [0-9]+\/[0-9]+ : FROM \$\{BASE\}/ { print last; exit } /^ ---> [0-9a-f]+$/ { last = $2 }' "$log")
if [[ -n $stage ]]; then
    docker tag "$stage" gateway-build:cache
    docker image prune -f --filter label=gateway.builder.hash >/dev/null
    docker image prune -f --filter label=org.opencontainers.image.title=gateway >/dev/null
fi

size=$(docker image inspect -f '{{ .Size }}' "$image" | awk '{ printf "%.0f MB", $1 / 1e6 }')
echo
echo "build.sh: $image ($size)"
echo "build.sh: base+builder ${base_s} s, vendor ${vendor_s} s, docker build ${build_s} s, total $(took "$start") s"
