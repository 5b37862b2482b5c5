#!/usr/bin/env bash
# Makes the two local images every other image here is built FROM, with no registry: the Docker
# engine on these machines can pull nothing, so the root file systems come from Debian's mirror
# through debootstrap (run on the host, as root) and enter the engine by `docker import`.
#
#   gateway-base:bookworm     debootstrap --variant=minbase bookworm + BASE_PACKAGES, no apt
#                             lists, caches, docs or man pages. The gateway's runtime stage, and
#                             the fleet test's Redis and HAProxy containers, run on it.
#   gateway-builder:bookworm  the base + BUILDER_PACKAGES + the host's Rust toolchain (the one
#                             `rustc` resolves to in the repository: cargo, rustc, their shared
#                             libraries and the x86_64 std; no docs, no rust-src), under
#                             /usr/local/rust. Debian's rustc (1.63) is too old and no rust image
#                             can be pulled, so this is the toolchain the developers and CI use.
#
#   deploy/docker/make-base.sh            # both, each only when missing or out of date
#   deploy/docker/make-base.sh --force    # both, rebuilt
#   MIRROR=http://... deploy/docker/make-base.sh
#
# Idempotent: each image carries a label with a hash (base: of the parts of this script that
# shape it; builder: that + `rustc -vV`); when the image exists with the same hash, nothing is
# done (under a second). Needs root, debootstrap and a running Docker engine. Prints timings.
set -euo pipefail

MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SUITE=bookworm
BASE_IMAGE=gateway-base:bookworm
BUILDER_IMAGE=gateway-builder:bookworm
# ca-certificates: TLS to anything outside; curl: HEALTHCHECKs; tini: PID 1 that reaps and
# forwards signals; libstdc++6/libgcc-s1: ONNX Runtime is C++ (both already in minbase, named so
# they stay); redis-server, haproxy: the fleet test's other containers.
BASE_PACKAGES="ca-certificates curl tini libstdc++6 libgcc-s1 redis-server haproxy"
# gcc + libc6-dev: rustc's linker driver and the C runtime it links against (no crate in
# Cargo.lock compiles C). No python3/pip: the image build gets ONNX Runtime from the context
# (deploy/docker/vendor.sh) and sets ORT_DYLIB_PATH, so gateway/build.rs fetches nothing.
BUILDER_PACKAGES="gcc libc6-dev"

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
force=0
[[ ${1:-} == --force ]] && force=1

if [[ $(id -u) != 0 ]]; then
    echo "make-base.sh: needs root (debootstrap, chroot)" >&2
    exit 1
fi
command -v debootstrap >/dev/null || { echo "make-base.sh: needs debootstrap (apt-get install -y debootstrap)" >&2; exit 1; }

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
log() { echo "make-base: $*"; }

# What shapes the base: this script's text (package lists, clean-up, mirrors' defaults) and the
# mirrors given. The builder adds the toolchain's identity.
script_hash=$( { cat "$here/make-base.sh"; echo "$MIRROR $SECURITY_MIRROR"; } | sha256sum | cut -c1-16)
toolchain=$(cd "$repo" && rustc --print sysroot)
toolchain_id=$(cd "$repo" && rustc -vV | sha256sum | cut -c1-16)
rust_release=$(cd "$repo" && rustc -vV | sed -n 's/^release: //p')
builder_hash="$script_hash-$toolchain_id"

label_of() { docker image inspect -f "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true; }

need_base=1
need_builder=1
if [[ $force == 0 ]]; then
    [[ $(label_of "$BASE_IMAGE" gateway.base.hash) == "$script_hash" ]] && need_base=0
    [[ $(label_of "$BUILDER_IMAGE" gateway.builder.hash) == "$builder_hash" ]] && need_builder=0
fi
if [[ $need_base == 0 && $need_builder == 0 ]]; then
    log "$BASE_IMAGE ($script_hash) and $BUILDER_IMAGE ($builder_hash) are up to date; nothing to do"
    exit 0
fi
# A new base means a new builder: the builder is the base plus more.
[[ $need_base == 1 ]] && need_builder=1

work=$(mktemp -d /var/tmp/gateway-rootfs.XXXXXX)
root=$work/root
cleanup() {
    for m in "$root/proc" "$root/dev/pts"; do
        mountpoint -q "$m" 2>/dev/null && umount "$m"
    done
    # Never delete through a mount still in place.
    if ! grep -q " $work/" /proc/mounts; then
        rm -rf "$work"
    else
        echo "make-base.sh: $work still has mounts; left in place" >&2
    fi
}
trap cleanup EXIT

# Runs a command in the root; its output goes to $work/apt.log, shown only when it fails.
in_root() {
    chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
        LANG=C.UTF-8 "$@" >>"$work/apt.log" 2>&1 || { tail -30 "$work/apt.log" >&2; return 1; }
}

# apt inside the root: no services started, no docs or man pages unpacked, no recommends.
prepare_root() {
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    mount -t proc proc "$root/proc"
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 755 "$root/usr/sbin/policy-rc.d"
}

# Leaves only what runs: no package lists, caches, logs, docs (copyright files stay), man pages.
clean_root() {
    in_root apt-get clean
    rm -f "$root/usr/sbin/policy-rc.d"
    umount "$root/proc"
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
        "$root"/var/lib/dpkg/*-old "$root"/tmp/* "$root"/var/tmp/* "$root"/root/.cache
    find "$root/var/log" -type f -delete
    find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
    rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/lintian "$root"/usr/share/linda
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} + 2>/dev/null || true
    find "$root" -xdev -name __pycache__ -type d -prune -exec rm -rf {} +
    : >"$root/etc/resolv.conf"  # Docker bind-mounts its own
}

import_root() { # image label value [--change ...]
    local image=$1 label=$2 value=$3 old new
    shift 3
    old=$(docker image inspect -f '{{ .Id }}' "$image" 2>/dev/null || true)
    new=$(tar -C "$root" --numeric-owner -c . |
        docker import --change "LABEL $label=$value" --change 'ENV LANG=C.UTF-8' "$@" - "$image")
    # The image this one replaces, unless a build cache still stands on it.
    if [[ -n $old && $old != "$new" ]]; then
        docker image rm "$old" >/dev/null 2>&1 || true
    fi
    log "$image: $(docker image inspect -f '{{ .Size }}' "$image" | awk '{ printf "%.0f MB", $1 / 1e6 }')"
}

total=$(now)
if [[ $need_base == 1 ]]; then
    t=$(now)
    debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 ||
        { tail -20 "$work/debootstrap.log" >&2; exit 1; }
    log "debootstrap --variant=minbase $SUITE: $(since "$t")"
    t=$(now)
    cat >"$root/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
    cat >"$root/etc/dpkg/dpkg.cfg.d/01-nodoc" <<'EOF'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/lintian/*
EOF
    printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$root/etc/apt/apt.conf.d/01-norecommends"
    prepare_root
    in_root apt-get update -qq
    in_root apt-get -qq -y -o Dpkg::Use-Pty=0 upgrade
    # shellcheck disable=SC2086
    in_root apt-get -qq -y -o Dpkg::Use-Pty=0 install $BASE_PACKAGES
    log "security updates + $BASE_PACKAGES: $(since "$t")"
    clean_root
    t=$(now)
    import_root "$BASE_IMAGE" gateway.base.hash "$script_hash" --change 'CMD ["/bin/bash"]'
    log "import $BASE_IMAGE: $(since "$t")"
else
    # The base is current: start the builder from exactly its files.
    t=$(now)
    mkdir -p "$root"
    cid=$(docker create "$BASE_IMAGE" /bin/true)
    docker export "$cid" | tar -C "$root" --numeric-owner -x
    docker rm "$cid" >/dev/null
    log "$BASE_IMAGE is up to date; unpacked it for the builder: $(since "$t")"
fi

if [[ $need_builder == 1 ]]; then
    t=$(now)
    prepare_root
    in_root apt-get update -qq
    # shellcheck disable=SC2086
    in_root apt-get -qq -y -o Dpkg::Use-Pty=0 install $BUILDER_PACKAGES
    log "$BUILDER_PACKAGES: $(since "$t")"
    clean_root
    t=$(now)
    # Only what cargo and rustc run with: the two programs, rustc's shared libraries (LLVM and
    # the driver) and the host target's std and linker wrappers (rust-lld, gcc-ld).
    dest=$root/usr/local/rust
    mkdir -p "$dest/bin" "$dest/lib/rustlib"
    cp "$toolchain/bin/cargo" "$toolchain/bin/rustc" "$dest/bin/"
    cp -a "$toolchain"/lib/*.so* "$dest/lib/"
    cp -a "$toolchain/lib/rustlib/x86_64-unknown-linux-gnu" "$dest/lib/rustlib/"
    mkdir -p "$root/usr/local/cargo"
    log "Rust $rust_release from $toolchain ($(du -sh "$dest" | cut -f1)): $(since "$t")"
    t=$(now)
    import_root "$BUILDER_IMAGE" gateway.builder.hash "$builder_hash" \
        --change 'ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV CARGO_HOME=/usr/local/cargo' \
        --change "LABEL gateway.rust=$rust_release" \
        --change 'CMD ["/bin/bash"]'
    log "import $BUILDER_IMAGE: $(since "$t")"
fi
log "total: $(since "$total")"
