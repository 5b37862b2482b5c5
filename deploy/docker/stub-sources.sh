#!/bin/sh
# Run by vendor.sh in the workspace's skeleton (deploy/docker/.cache/deps/src/: the manifests,
# gateway's build.rs and .proto, no sources): creates a stand-in for every target file a
# member's Cargo.toml names or implies ([lib], [[bin]], [[bench]], [[test]], [[example]];
# `fn main() {}` for all but libraries) that is not there, so that cargo can load the workspace
# and the image can build the dependencies before the real sources are copied in. Existing files
# are left alone.
#
#   stub-sources.sh [MEMBER/Cargo.toml ...]     # default: */Cargo.toml
set -eu
[ $# -gt 0 ] || set -- */Cargo.toml
for manifest in "$@"; do
    member=${manifest%/Cargo.toml}
    awk -v member="$member" '
        function flush() {
            if (kind == "") return
            file = path
            if (file == "") {
                if (kind == "lib") file = "src/lib.rs"
                else if (kind == "bin") file = "src/bin/" name ".rs"
                else if (kind == "bench") file = "benches/" name ".rs"
                else if (kind == "test") file = "tests/" name ".rs"
                else if (kind == "example") file = "examples/" name ".rs"
            }
            if (file != "") print kind, member "/" file
            kind = ""
        }
        /^\[/ {
            flush()
            name = ""; path = ""
            if ($0 ~ /^\[lib\]/) kind = "lib"
            else if ($0 ~ /^\[\[bin\]\]/) kind = "bin"
            else if ($0 ~ /^\[\[bench\]\]/) kind = "bench"
            else if ($0 ~ /^\[\[test\]\]/) kind = "test"
            else if ($0 ~ /^\[\[example\]\]/) kind = "example"
            next
        }
        kind != "" && /^name *=/ { v = $0; sub(/^name *= *"/, "", v); sub(/".*/, "", v); name = v }
        kind != "" && /^path *=/ { v = $0; sub(/^path *= *"/, "", v); sub(/".*/, "", v); path = v }
        END { flush() }
    ' "$manifest" | while read -r kind file; do
        [ -e "$file" ] && continue
        mkdir -p "$(dirname "$file")"
        if [ "$kind" = lib ]; then : >"$file"; else echo 'fn main() {}' >"$file"; fi
    done
done
