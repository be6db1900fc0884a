#!/bin/sh
# Writes the dependency recipe of docker/Dockerfile into the folder $1: Cargo.toml, Cargo.lock
# and a stub for every target cargo sees in the current folder (`cargo metadata`, which lists
# declared targets whether or not their files are there, and the discovered ones). A build of the
# recipe compiles every dependency and nothing of keyproxy, and the recipe changes only when the
# manifest, the lock file or the set of targets does, so the engine's layer cache keeps the
# dependencies across source edits without placeholders written by hand (a hand-written list
# drifted from Cargo.toml once: a bench added there broke every image build).
set -eu
out=$1
here=$(pwd -P)
meta=$(mktemp)
trap 'rm -f "$meta"' EXIT
cargo metadata --no-deps --offline --format-version 1 >"$meta"
mkdir -p "$out"
cp Cargo.toml Cargo.lock "$out/"
# Target paths are plain file paths; JSON escapes nothing in them on the systems this runs on.
grep -o '"src_path":"[^"]*"' "$meta" | cut -d '"' -f 4 | while read -r path; do
    rel=${path#"$here"/}
    if [ "$rel" = "$path" ]; then
        echo "recipe.sh: target $path is outside $here" >&2
        exit 1
    fi
    mkdir -p "$out/$(dirname "$rel")"
    printf '#![allow(dead_code)]\nfn main() {}\n' >"$out/$rel"
done
# Same recipe, same bytes and times: the cache key of the COPY that takes it must not depend on
# when the sources were checked out.
find "$out" -exec touch -h -d @0 {} +
