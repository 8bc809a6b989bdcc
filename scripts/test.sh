#!/usr/bin/env bash
# The s3block test command: installs what the tests need, starts a Garage S3
# server on loopback, checks formatting and docs, runs clippy and every test
# of the workspace (doctests included), stops Garage.
#
#   scripts/test.sh                 everything
#   scripts/test.sh -p s3block-core only that package (arguments go to cargo clippy and the test run)
#
# Under CI=true nothing is optional: a missing tool or a Garage that cannot
# start fails the run. Elsewhere the script says loudly what it could not set
# up, and the tests that need it skip with a message.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

is_ci() {
    case ${CI:-} in "" | 0 | false | FALSE | False) return 1 ;; *) return 0 ;; esac
}

say() { printf '\n== test.sh: %s\n' "$*" >&2; }
die() {
    printf '\n== test.sh: error: %s\n' "$*" >&2
    exit 1
}
# Fails under CI, warns elsewhere.
need() {
    if is_ci; then die "$* (CI=true: nothing may be skipped)"; fi
    printf '\n== test.sh: WARNING: %s; the tests that need it will skip\n' "$*" >&2
}

export RUST_BACKTRACE=${RUST_BACKTRACE:-1}
if is_ci; then
    export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
    export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
fi

declare -a TIMES=()
phase_start=$SECONDS
phase_done() {
    TIMES+=("$(printf '%-22s %5d s' "$1" $((SECONDS - phase_start)))")
    phase_start=$SECONDS
}
report_times() {
    ((${#TIMES[@]} > 0)) || return 0
    printf '\n== test.sh: time per phase\n' >&2
    printf '   %s\n' "${TIMES[@]}" >&2
}

# --- disk space ------------------------------------------------------------
# A cold build of the workspace and its tests takes about 10 GiB under
# target/; a full disk shows up as the linker dying with SIGBUS, which says
# nothing about the cause. Say it first.
free_kib=$(df -Pk . | awk 'NR == 2 { print $4 }')
if [[ -n $free_kib ]] && ((free_kib < 12 * 1024 * 1024)); then
    say "WARNING: only $((free_kib / 1024)) MiB free on $(df -P . | awk 'NR == 2 { print $6 }'); the build and the tests need about 12 GiB (a linker killed by SIGBUS below means the disk filled up)"
fi

# --- system packages -------------------------------------------------------
# command -> Debian package that provides it
declare -A PACKAGES=(
    [fusermount3]=fuse3
    [mkfs.ext4]=e2fsprogs
    [losetup]=mount
    [cc]=gcc
    # Debian's s3backer 1.5.4: the interop tests mount it beside s3block.
    [s3backer]=s3backer
    # qemu-img: the image-copy tests convert onto a mounted device file,
    # and the NBD tests convert, compare and map through s3block-nbd.
    [qemu-img]=qemu-utils
    # nbdinfo, nbdcopy, nbdfuse: the NBD clients the s3block-nbd tests use
    # (the machines have no nbd kernel module).
    [nbdinfo]=libnbd-bin
    # dpkg-shlibdeps: cargo-deb's Depends of the Debian package (the
    # package test builds and installs it).
    [dpkg-shlibdeps]=dpkg-dev
    # systemd-analyze verify: the package test checks the installed unit.
    [systemd-analyze]=systemd
)
missing=()
for cmd in "${!PACKAGES[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "$cmd" >/dev/null 2>&1 ||
        missing+=("${PACKAGES[$cmd]}")
done
if ((${#missing[@]} > 0)); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        say "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        need "missing Debian packages: ${missing[*]} (run as root with apt-get to install them)"
    fi
fi
phase_done "system packages"

# --- Garage ----------------------------------------------------------------
started_garage=false
cleanup() {
    local rc=$?
    if $started_garage; then scripts/garage.sh stop || true; fi
    report_times
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if scripts/garage.sh install; then
    phase_done "garage install"
    if scripts/garage.sh status 2>/dev/null; then
        say "using the Garage that is already running"
    elif scripts/garage.sh start; then
        started_garage=true
    else
        need "Garage did not start"
    fi
    if env_file=$(scripts/garage.sh env 2>/dev/null); then
        # shellcheck disable=SC1090
        . "$env_file"
    fi
else
    need "Garage could not be installed"
fi
phase_done "garage start"

# --- cargo-deb ---------------------------------------------------------------
# The package test builds the .deb with cargo-deb, built once from crates.io
# into ~/.cache/s3block/cargo-deb (a few minutes), as Garage is.
if scripts/package.sh install; then
    export S3BLOCK_CARGO_DEB=${S3BLOCK_CARGO_DEB:-$(scripts/package.sh cargo-deb)}
else
    need "cargo-deb could not be installed"
fi
phase_done "cargo-deb install"

# --- cargo-nextest ---------------------------------------------------------
# cargo test runs the test programs one after another, so a program whose
# longest test waits three minutes for an outage holds the run that long.
# cargo-nextest runs every test as its own process, two at a time across all
# programs (.config/nextest.toml). Built once into ~/.cache/s3block, as
# cargo-deb is; without it the tests run under cargo test, all the same.
NEXTEST_VERSION=0.9.151
if nextest=$(scripts/cargo-tool.sh cargo-nextest "$NEXTEST_VERSION"); then
    export S3BLOCK_NEXTEST=$nextest
else
    say "WARNING: cargo-nextest $NEXTEST_VERSION could not be built; the tests run under cargo test (slower)"
fi
phase_done "cargo-nextest install"

# --- s3backer 2.1.6 --------------------------------------------------------
# The interop tests run against Debian's s3backer 1.5.4 and, when
# S3BLOCK_S3BACKER2 names its binary, against s3backer 2.x too. It is built
# from ../shared/peers/ (about a minute the first time, then cached); a clone
# without that folder skips only the 2.x interop tests.
peers_build=../shared/peers/build-s3backer.sh
if [[ -n ${S3BLOCK_S3BACKER2:-} ]]; then
    say "s3backer 2.x for the interop tests: $S3BLOCK_S3BACKER2 (S3BLOCK_S3BACKER2)"
elif [[ -f $peers_build ]]; then
    say "building s3backer 2.1.6 for the interop tests ($peers_build)"
    if s3backer2=$(bash "$peers_build" | tail -n 1) && [[ -x $s3backer2 ]]; then
        export S3BLOCK_S3BACKER2=$s3backer2
        say "s3backer 2.x for the interop tests: $S3BLOCK_S3BACKER2"
    else
        need "s3backer 2.1.6 did not build ($peers_build)"
    fi
else
    say "no $peers_build (a fresh clone): the interop tests skip s3backer 2.1.6"
fi
phase_done "s3backer 2.1.6"

# --- lint and tests --------------------------------------------------------
if (($# > 0)); then
    scope=("$@")
else
    scope=(--workspace)
fi

# What a library needs: formatted code and documentation that builds
# without warnings (broken intra-doc links, missing docs). The doctests run
# with cargo test below.
say "cargo fmt --check"
cargo fmt --all --check
say "cargo doc ${scope[*]} --no-deps (warnings denied)"
RUSTDOCFLAGS="${RUSTDOCFLAGS:-} -D warnings" cargo doc "${scope[@]}" --no-deps -q
phase_done "fmt and doc"

say "cargo clippy ${scope[*]} --all-targets -- -D warnings"
cargo clippy "${scope[@]}" --all-targets -- -D warnings
if (($# == 0)); then
    # The workspace build turns on every feature some member asks for; a
    # program using a library crate alone builds it with its defaults,
    # where code only a feature uses would warn.
    for crate in s3block-core s3block-store s3block-cache; do
        say "cargo clippy -p $crate --lib (its default features) -- -D warnings"
        cargo clippy -p "$crate" --lib -- -D warnings
    done
fi
phase_done "clippy"

say "building the tests"
cargo test "${scope[@]}" --no-run -q
phase_done "test build"

# A hung test must fail the run with a message, not eat CI's whole time budget.
test_timeout=${S3BLOCK_TEST_TIMEOUT:-1800}
rc=0
if [[ -n ${S3BLOCK_NEXTEST:-} ]]; then
    say "cargo nextest run ${scope[*]} (at most ${test_timeout} s), then the doctests"
    timeout --kill-after=30 "$test_timeout" "$S3BLOCK_NEXTEST" nextest run "${scope[@]}" --no-fail-fast || rc=$?
    # As cargo test --no-fail-fast would, the doctests run after failed
    # tests too; the first failure's exit status is the one kept.
    doc_rc=0
    cargo test "${scope[@]}" --doc || doc_rc=$?
    ((rc != 0)) || rc=$doc_rc
    slow_lines="SLOW"
else
    say "cargo test ${scope[*]} (at most ${test_timeout} s)"
    timeout --kill-after=30 "$test_timeout" cargo test "${scope[@]}" --no-fail-fast || rc=$?
    slow_lines="has been running for over 60 seconds"
fi
phase_done "tests"
if ((rc == 124 || rc == 137)); then
    die "the tests did not finish within ${test_timeout} s (S3BLOCK_TEST_TIMEOUT); a test hangs: see the last '$slow_lines' lines above"
fi
((rc == 0)) || die "the tests failed (exit $rc)"

say "all passed"
