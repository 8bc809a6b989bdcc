#!/usr/bin/env bash
# The Debian package of s3block: s3block, s3block-fuse and s3block-nbd in
# /usr/bin, their systemd units, man pages, shell completions and example
# configurations, in target/debian/s3block_VERSION-1_ARCH.deb.
#
#   scripts/package.sh              release build, man pages and completions, then the .deb
#   scripts/package.sh install      only install cargo-deb into the cache (as test.sh does)
#   scripts/package.sh cargo-deb    print the cargo-deb binary's path (installing it if missing)
#
# Then, as root: apt install ./target/debian/s3block_*.deb
#
# cargo-deb (crates.io) turns the [package.metadata.deb] section of
# s3block-cli/Cargo.toml into the package; scripts/cargo-tool.sh builds it
# once into ~/.cache/s3block/cargo-deb (S3BLOCK_CARGO_DEB_CACHE moves it).
# dpkg-shlibdeps (Debian package dpkg-dev) works out the libraries the
# programs need.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO_DEB_VERSION=3.8.0

say() { printf 'package.sh: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

install_cargo_deb() {
    # cargo-tool.sh takes an empty S3BLOCK_TOOL_CACHE as its own default.
    CARGO_DEB=$(S3BLOCK_TOOL_CACHE=${S3BLOCK_CARGO_DEB_CACHE:-${S3BLOCK_TOOL_CACHE:-}} \
        scripts/cargo-tool.sh cargo-deb "$CARGO_DEB_VERSION") || die "cargo-deb $CARGO_DEB_VERSION is not available"
}

case ${1:-} in
install)
    install_cargo_deb
    exit 0
    ;;
cargo-deb)
    install_cargo_deb
    echo "$CARGO_DEB"
    exit 0
    ;;
"") ;;
*) die "unknown command '$1' (expected nothing, install or cargo-deb)" ;;
esac

install_cargo_deb
command -v dpkg-shlibdeps >/dev/null || die "dpkg-shlibdeps is missing: apt-get install dpkg-dev"

start=$SECONDS
say "cargo build --release of s3block, s3block-fuse, s3block-nbd and s3block-docgen"
cargo build --release --locked -p s3block-cli -p s3block-fuse -p s3block-nbd -p s3block-docgen
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[[ -n $target ]] || die "cargo metadata did not say where the target directory is"
docs=$target/release/s3block-docs
rm -rf "$docs"
"$target/release/s3block-docgen" "$docs"
say "cargo deb"
"$CARGO_DEB" deb -p s3block-cli --no-build --locked
say "done in $((SECONDS - start)) s: $(ls -1t "$target"/debian/s3block_*.deb | head -n 1)"
