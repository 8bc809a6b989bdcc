#!/usr/bin/env bash
# The soak: an hour of mixed I/O through a real mount with injected store
# faults, every read checked against a model, the daemon's memory, open
# files and threads sampled every 10 s. Not a test (it takes an hour); its
# figures go to docs/RELIABILITY.md.
#
#   bench/soak.sh [options]
#
#   --seconds N       length of the I/O (default 3600)
#   --faults SPEC     S3BLOCK_INJECT_FAULTS for the mount (default
#                     seed=1,error_rate=0.03,timeout_rate=0.01,reset_rate=0.01:
#                     5% of store requests fail and are retried)
#   --store URL       where the volume lives (default: a new prefix on the
#                     Garage of scripts/garage.sh when its env is loaded or
#                     S3BLOCK_TEST_S3_ENDPOINT is set, else a new local
#                     directory)
#   --cache-size SIZE RAM cache (default 16M: small, so the store is busy)
#   --size SIZE       volume size (default 256M: the model lives in RAM)
#   --bin PATH        the mount program, built with the fault-injection
#                     feature (default: built now, debug profile:
#                     cargo build -p s3block-fuse --features fault-injection)
#   --results FILE    the samples (default bench/results-soak-DATE.tsv)
#   --warmup N        seconds left out of the flatness figures (default 300)
#
# Prints the I/O driver's minute lines, then: ops and bytes checked, the
# samples' min/max after warm-up (RSS, open files, threads) with the RSS
# trend in MiB per hour (least squares), the store requests and retries,
# and whether the volume read back after a remount without faults equals
# the model (sha256).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds=3600
faults=seed=1,error_rate=0.03,timeout_rate=0.01,reset_rate=0.01
store=
cache=16M
size=256M
bin=
results=bench/results-soak-$(date -u +%Y-%m-%d).tsv
warmup=300
while (($#)); do
    case $1 in
        --seconds) seconds=$2; shift 2 ;;
        --faults) faults=$2; shift 2 ;;
        --store) store=$2; shift 2 ;;
        --cache-size) cache=$2; shift 2 ;;
        --size) size=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        --results) results=$2; shift 2 ;;
        --warmup) warmup=$2; shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "soak.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

say() { echo "soak: $*" >&2; }
die() { say "$*"; exit 1; }
for tool in python3 fusermount3; do command -v "$tool" >/dev/null || die "$tool is needed (not on PATH)"; done

if [[ -z $bin ]]; then
    say "building the mount program with fault injection (debug profile)"
    cargo build -q -p s3block-fuse --features fault-injection
    bin=$PWD/target/debug/s3block-fuse
fi
[[ -x $bin ]] || die "no mount program at $bin"

work=$(mktemp -d /tmp/s3block-soak.XXXXXX)
mnt=$work/mnt
mkdir -p "$mnt"
pid=
cleanup() {
    if mountpoint -q "$mnt"; then fusermount3 -uz "$mnt" || true; fi
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then kill "$pid" || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

opts=()
if [[ -z $store ]]; then
    if [[ -z ${S3BLOCK_TEST_S3_ENDPOINT:-} && -f /tmp/s3block-garage/env ]]; then
        # shellcheck disable=SC1091
        . /tmp/s3block-garage/env
    fi
    if [[ -n ${S3BLOCK_TEST_S3_ENDPOINT:-} ]]; then
        store=s3://$S3BLOCK_TEST_S3_BUCKET/soak-$(date +%s)-$$/
        opts+=(--endpoint "$S3BLOCK_TEST_S3_ENDPOINT")
    else
        mkdir -p "$work/store"
        store=file://$work/store
    fi
fi
say "store $store, cache $cache, volume $size, faults $faults, $seconds s"

mount_volume() {
    local fault_spec=$1
    shift
    S3BLOCK_INJECT_FAULTS=$fault_spec "$bin" -f "${opts[@]}" "$@" "$store" "$mnt" 2>>"$work/mount.log" &
    pid=$!
    for _ in $(seq 600); do
        [[ -e $mnt/file ]] && return 0
        kill -0 "$pid" 2>/dev/null || { cat "$work/mount.log" >&2; die "the mount program exited"; }
        sleep 0.1
    done
    die "not mounted after 60 s"
}

unmount_volume() {
    fusermount3 -u "$mnt"
    local rc=0
    wait "$pid" || rc=$?
    pid=
    ((rc == 0)) || { tail -20 "$work/mount.log" >&2; die "the mount program exited with $rc"; }
}

mount_volume "$faults" --size="$size" --block-size=64K --cache-size="$cache"
printf 'seconds\trss_kib\tfds\tthreads\tdirty_bytes\tgets\tputs\tretries\n' >"$results"
(
    start=$(date +%s)
    while kill -0 "$pid" 2>/dev/null; do
        rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo)
        fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
        threads=$(find "/proc/$pid/task" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
        figures=$(python3 - "$mnt/stats.json" <<'PY' 2>/dev/null || echo "-	-	-	-"
import json, sys
s = json.load(open(sys.argv[1]))
r = s.get("requests", {})
c = s.get("cache", {})
print(f"{c.get('dirty_bytes', '-')}\t{r.get('gets', '-')}\t{r.get('puts', '-')}\t{r.get('retries', '-')}")
PY
        )
        [[ -n $rss ]] && printf '%s\t%s\t%s\t%s\t%s\n' "$(($(date +%s) - start))" "$rss" "$fds" "$threads" "$figures" >>"$results"
        sleep 10
    done
) &
sampler=$!

rc=0
python3 bench/soak_io.py "$mnt/file" "$seconds" 1 | tee "$work/io.log" || rc=$?
last_stats=$(cat "$mnt/stats" 2>/dev/null || true)
unmount_volume
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
((rc == 0)) || die "the I/O driver failed (exit $rc): a read differed from the model, or an I/O error"

want=$(tail -n 1 "$work/io.log" | python3 -c 'import json,sys; print(json.load(sys.stdin)["sha256"])')
mount_volume ""
got=$(sha256sum "$mnt/file" | cut -d' ' -f1)
unmount_volume
say "after a remount without faults: sha256 $got ($([[ $got == "$want" ]] && echo "equal to the model" || echo "DIFFERENT from the model $want"))"

python3 - "$results" "$warmup" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])][1:]
warm = int(sys.argv[2])
rows = [r for r in rows if int(r[0]) >= warm]
if len(rows) < 3:
    sys.exit("soak: too few samples after the warm-up for flatness figures")
t = [int(r[0]) for r in rows]
for name, col, scale, unit in (("RSS", 1, 1 / 1024, "MiB"), ("open files", 2, 1, ""), ("threads", 3, 1, "")):
    v = [int(r[col]) * scale for r in rows]
    print(f"{name} after {warm} s: min {min(v):.1f}{unit}, max {max(v):.1f}{unit}, last {v[-1]:.1f}{unit}")
v = [int(r[1]) / 1024 for r in rows]
n = len(t)
mt, mv = sum(t) / n, sum(v) / n
slope = sum((a - mt) * (b - mv) for a, b in zip(t, v)) / max(sum((a - mt) ** 2 for a in t), 1)
print(f"RSS trend after warm-up: {slope * 3600:+.2f} MiB per hour over {n} samples")
PY
echo "$last_stats" | grep -iE "retr|GET|PUT|error" | head -8 || true
[[ $got == "$want" ]] || exit 1
say "samples in $results"
