#!/usr/bin/env bash
# Puts into deploy/docker/.cache/deps/ (git-ignored; the one part of .cache/ in the Docker build
# context) everything the image's dependency layer needs, laid out as it lands in the build
# stage's root (`COPY deploy/docker/.cache/deps/ /`), so the build downloads nothing and runs with
# `--network none`:
#
#   vendor/                     `cargo vendor` of Cargo.lock (crates.io sources, checksums kept).
#                               The crates the gateway's Linux build never compiles (Windows and
#                               wasm crates, the benches' criterion, ...) are cut to their
#                               Cargo.toml: cargo reads every manifest of the workspace's lock,
#                               and a cut crate's .cargo-checksum.json lists no file, so nothing
#                               of it is checked or built.
#   usr/local/cargo/config.toml cargo-config.toml: crates.io replaced by /vendor, offline.
#   usr/local/bin/libonnxruntime.so (+ _providers_shared.so)
#                               from PyPI's onnxruntime wheel, the version gateway/build.rs pins
#                               (ORT_VERSION), fetched as build.rs does (`python3 -m pip
#                               download`), or copied from target/onnxruntime/ when a host build
#                               already fetched it; named as build.rs names it beside binaries.
#   src/                        the workspace's skeleton: Cargo.toml, Cargo.lock, every member's
#                               Cargo.toml, gateway's build.rs and proto/, and an empty stand-in
#                               (stub-sources.sh) at every target's path, so the dependencies
#                               build before, and apart from, the real sources.
#
# Why not download inside the build: the build containers do reach the network, but HTTPS there
# fails certificate checks (the host's trust store is not the image's); and why one directory:
# each Dockerfile step costs seconds on this engine's storage driver, one COPY beats ten.
#
#   deploy/docker/vendor.sh     # crates again only when Cargo.lock, a manifest or this script
#                               # changed (a stamp says); ONNX Runtime when its version changed;
#                               # the skeleton every time (milliseconds)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
deps=$here/.cache/deps
cd "$repo"

ort_version=$(sed -n 's/^const ORT_VERSION: &str = "\(.*\)";$/\1/p' gateway/build.rs)
[[ -n $ort_version ]] || { echo "vendor.sh: no ORT_VERSION in gateway/build.rs" >&2; exit 1; }
target=x86_64-unknown-linux-gnu
platform=manylinux_2_28_x86_64

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

mkdir -p "$deps"
# The workspace's members, as paths of their manifests relative to the repository.
members=$(cargo metadata --no-deps --format-version 1 --offline | python3 -c '
import json, sys
m = json.load(sys.stdin)
root = m["workspace_root"].rstrip("/") + "/"
for p in m["packages"]:
    if p["id"] in m["workspace_members"]:
        print(p["manifest_path"][len(root):])')

# --- crates
# shellcheck disable=SC2086 # $members: one path per word
stamp=$(cat Cargo.lock Cargo.toml $members "$here/vendor.sh" | sha256sum | cut -c1-16)
if [[ -d $deps/vendor && $(cat "$here/.cache/vendor.stamp" 2>/dev/null) == "$stamp" ]]; then
    echo "vendor: crates up to date ($stamp)"
else
    t=$(now)
    partial=$here/.cache/vendor.partial
    rm -rf "$deps/vendor" "$partial" "$here/.cache/vendor.stamp"
    cargo vendor --locked --quiet --versioned-dirs "$partial" >/dev/null
    # What `cargo build --release -p gateway` compiles for Linux (normal and build dependencies,
    # proc macros included), as name-version: the --versioned-dirs names.
    needed=$(cargo tree -p gateway --locked --offline --target "$target" -e normal,build --prefix none -f '{p}' \
        --config 'source.crates-io.replace-with="vendored"' \
        --config "source.vendored.directory=\"$partial\"" |
        awk '$2 ~ /^v[0-9]/ { print $1 "-" substr($2, 2) }' | sort -u)
    kept=0
    cut=0
    for dir in "$partial"/*/; do
        dir=${dir%/}
        if grep -qxF "$(basename "$dir")" <<<"$needed"; then
            kept=$((kept + 1))
            continue
        fi
        # Keep the manifest and the package checksum (Cargo.lock's), drop every file and the
        # per-file checksums; an empty src/lib.rs so the manifest has a target to find.
        package=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["package"])' "$dir/.cargo-checksum.json")
        find "$dir" -mindepth 1 -maxdepth 1 -not -name Cargo.toml -exec rm -rf {} +
        mkdir -p "$dir/src"
        : >"$dir/src/lib.rs"
        printf '{"files":{},"package":"%s"}' "$package" >"$dir/.cargo-checksum.json"
        cut=$((cut + 1))
    done
    mv "$partial" "$deps/vendor"
    echo "$stamp" >"$here/.cache/vendor.stamp"
    echo "vendor: $kept crates kept, $cut cut to their manifest, $(du -sh "$deps/vendor" | cut -f1): $(since "$t")"
fi

# --- ONNX Runtime
bin=$deps/usr/local/bin
if [[ -f $bin/libonnxruntime.so && $(cat "$here/.cache/onnxruntime.version" 2>/dev/null) == "$ort_version" ]]; then
    echo "vendor: ONNX Runtime $ort_version present"
else
    t=$(now)
    partial=$here/.cache/onnxruntime.partial
    rm -rf "$bin" "$partial" "$here/.cache/onnxruntime.version"
    mkdir -p "$partial"
    built=$repo/target/onnxruntime/onnxruntime-$ort_version-$platform
    if [[ -f $built/libonnxruntime.so.$ort_version ]]; then
        cp "$built"/libonnxruntime*.so* "$partial/"
        how="copied from $built"
    else
        python3 -m pip download --quiet --no-deps --only-binary=:all: --platform "$platform" \
            --python-version 3.11 --dest "$partial" "onnxruntime==$ort_version"
        python3 - "$partial" <<'EOF'
import glob, os, sys, zipfile
dest = sys.argv[1]
wheel = glob.glob(os.path.join(dest, "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if name.startswith("onnxruntime/capi/libonnxruntime") and ".so" in base:
            with open(os.path.join(dest, base), "wb") as f:
                f.write(z.read(name))
os.remove(wheel)
EOF
        how="from PyPI"
    fi
    # The name build.rs gives it beside the binaries, and the one ORT_DYLIB_PATH names.
    mv "$partial/libonnxruntime.so.$ort_version" "$partial/libonnxruntime.so"
    mkdir -p "$(dirname "$bin")"
    mv "$partial" "$bin"
    echo "$ort_version" >"$here/.cache/onnxruntime.version"
    echo "vendor: ONNX Runtime $ort_version $how ($(du -sh "$bin" | cut -f1)): $(since "$t")"
fi

# --- cargo's config and the workspace's skeleton, made anew each time
mkdir -p "$deps/usr/local/cargo"
cp "$here/cargo-config.toml" "$deps/usr/local/cargo/config.toml"
rm -rf "$deps/src"
mkdir -p "$deps/src"
cp Cargo.toml Cargo.lock "$deps/src/"
for manifest in $members; do
    mkdir -p "$deps/src/$(dirname "$manifest")"
    cp "$manifest" "$deps/src/$manifest"
done
# The one build script the image runs, and what it reads.
cp gateway/build.rs "$deps/src/gateway/"
cp -r gateway/proto "$deps/src/gateway/"
# shellcheck disable=SC2086 # $members: one path per word
(cd "$deps/src" && "$here/stub-sources.sh" $members)
echo "vendor: workspace skeleton ($(echo "$members" | wc -l) members) in $deps/src"
