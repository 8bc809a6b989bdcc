#!/usr/bin/env bash
# A cargo tool from crates.io, built once at a pinned version into
# ~/.cache/s3block/NAME (S3BLOCK_TOOL_CACHE moves the cache), as garage.sh
# caches Garage. Prints the binary's path.
#
#   scripts/cargo-tool.sh cargo-deb 3.8.0       the Debian packager (package.sh)
#   scripts/cargo-tool.sh cargo-nextest 0.9.151  the test runner (test.sh)
#
# The first build takes a few minutes on two cores; its log is kept in
# ~/.cache/s3block/NAME.log.
set -euo pipefail

say() { printf 'cargo-tool.sh: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

(($# == 2)) || die "usage: scripts/cargo-tool.sh CRATE VERSION"
name=$1 version=$2
root=${S3BLOCK_TOOL_CACHE:-$HOME/.cache/s3block}/$name
bin=$root/bin/$name

# `cargo nextest --version` and `cargo deb --version` are how the
# subcommands answer; both print the version.
if [[ -x $bin ]] && [[ $("$bin" "${name#cargo-}" --version 2>/dev/null || "$bin" --version 2>/dev/null) == *"$version"* ]]; then
    echo "$bin"
    exit 0
fi
command -v cargo >/dev/null || die "cargo is needed to build $name $version"
say "building $name $version into $root (a few minutes the first time)"
log=$root.log start=$SECONDS
mkdir -p "$(dirname "$root")"
if ! cargo install --locked "$name" --version "$version" --root "$root" >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "building $name $version failed; full log in $log"
fi
say "$name $version built in $((SECONDS - start)) s"
echo "$bin"
