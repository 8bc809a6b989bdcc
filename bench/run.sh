#!/usr/bin/env bash
# s3block and s3backer side by side on one Garage server on loopback.
#
#   bench/run.sh [options]
#
#   --block-sizes LIST   block sizes to run, comma-separated (default 64K,1M)
#   --systems LIST       s3block,s3backer (default both)
#   --parts LIST         ceiling,fio,ext4 (default all three)
#   --cache-size SIZE    cache of each daemon (default 64M)
#   --runtime SECONDS    length of each random 4K job (default 20)
#   --seq-size SIZE      size of the sequential jobs (default 1G)
#   --files N            files in the small-files tree (default 20000)
#   --report FILE        write the report there (default docs/BENCHMARKS.md;
#                        "-" prints it only)
#   --quick              64K only, 256M sequential, 5 s random, 5,000 files,
#                        report printed only
#
# It needs root, /dev/fuse, loop devices, fio, s3backer, e2fsprogs, python3
# and Garage (scripts/garage.sh install). It builds s3block-fuse and the
# raw_store example in release mode unless S3BLOCK_FUSE_BIN and
# S3BLOCK_RAW_STORE_BIN name binaries. Everything it starts (Garage, both
# daemons, loop devices, mounts) is undone on exit, also on error or Ctrl-C.
# Each step runs under `timeout`. BENCH_NOTES=FILE appends that text (the
# analysis of a run) to the report.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BLOCK_SIZES=64K,1M
SYSTEMS=s3block,s3backer
PARTS=ceiling,fio,ext4
CACHE_SIZE=64M
RUNTIME=20
SEQ_SIZE=1G
FILES=20000
REPORT=$ROOT/docs/BENCHMARKS.md
VOLUME_SIZE=16G
UPLOAD_CONCURRENCY=8 # s3block's default; the raw ceiling uses the same
STEP_TIMEOUT=${BENCH_STEP_TIMEOUT:-900}

say() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

while (($#)); do
    case $1 in
    --block-sizes) BLOCK_SIZES=$2; shift ;;
    --systems) SYSTEMS=$2; shift ;;
    --parts) PARTS=$2; shift ;;
    --cache-size) CACHE_SIZE=$2; shift ;;
    --runtime) RUNTIME=$2; shift ;;
    --seq-size) SEQ_SIZE=$2; shift ;;
    --files) FILES=$2; shift ;;
    --report) REPORT=$2; shift ;;
    --quick) BLOCK_SIZES=64K SEQ_SIZE=256M RUNTIME=5 FILES=5000 REPORT=- ;;
    -h | --help) sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done

bytes() { # 64K -> 65536
    local n=${1%[KkMmGg]} unit=${1: -1}
    [[ $n =~ ^[0-9]+$ ]] || die "bad size $1"
    case $unit in
    K | k) echo $((n << 10)) ;; M | m) echo $((n << 20)) ;; G | g) echo $((n << 30)) ;; *) echo "$1" ;;
    esac
}
has() { [[ ,$1, == *,$2,* ]]; }

((EUID == 0)) || die "run as root (FUSE mounts, loop devices, drop_caches)"
for tool in fio s3backer mkfs.ext4 e2fsck losetup python3 jq; do
    command -v $tool >/dev/null || die "$tool is missing (apt-get install -y fio s3backer e2fsprogs jq)"
done
[[ -e /dev/fuse ]] || die "/dev/fuse is missing"
CACHE_BYTES=$(bytes "$CACHE_SIZE")
SEQ_BYTES=$(bytes "$SEQ_SIZE")

WORK=$(mktemp -d /tmp/s3block-bench.XXXXXX)
RESULTS=$WORK/results.tsv
: >"$RESULTS"
export S3BLOCK_GARAGE_STATE=$WORK/garage S3BLOCK_TEST_S3_BUCKET=bench-s3block
PIDS=()   # daemons we started
LOOPS=()  # loop devices we attached
MOUNTS=() # mount points we mounted (FUSE and ext4)
FILES_MADE=() # files to delete (the RAM-backed ext4 image)

cleanup() {
    local rc=$? m l p
    set +e
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        m=${MOUNTS[i]}
        mountpoint -q "$m" && { umount "$m" 2>/dev/null || umount -l "$m"; }
    done
    for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done
    for f in "${FILES_MADE[@]}"; do rm -f "$f"; done
    for p in "${PIDS[@]}"; do
        kill -0 "$p" 2>/dev/null && { kill "$p"; timeout 60 tail --pid="$p" -f /dev/null; }
    done
    "$ROOT/scripts/garage.sh" stop >/dev/null 2>&1
    say "logs and raw results kept in $WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"; } # bs system metric value
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$(now)"; }

# ---------------------------------------------------------------- binaries
FUSE_BIN=${S3BLOCK_FUSE_BIN:-}
RAW_BIN=${S3BLOCK_RAW_STORE_BIN:-}
if [[ -z $FUSE_BIN || -z $RAW_BIN ]]; then
    say "building s3block-fuse and the raw_store example (release)"
    (cd "$ROOT" && timeout 1800 cargo build --release -q -p s3block-fuse &&
        timeout 1800 cargo build --release -q -p s3block-examples --example raw_store) || die "cargo build failed"
    TARGET=$(cd "$ROOT" && cargo metadata --no-deps --format-version 1 | jq -r .target_directory)
    FUSE_BIN=${FUSE_BIN:-$TARGET/release/s3block-fuse}
    RAW_BIN=${RAW_BIN:-$TARGET/release/examples/raw_store}
fi
[[ -x $FUSE_BIN && -x $RAW_BIN ]] || die "missing binaries: $FUSE_BIN $RAW_BIN"

# ---------------------------------------------------------------- Garage
# s3backer 1.5.4 switches to virtual-host URLs whenever --region is given,
# so it runs without one, which means us-east-1: this Garage answers to that
# region. garage.sh writes "garage"; we restart its server with the region
# changed (the layout, key and buckets live in its metadata and survive).
say "starting Garage in $S3BLOCK_GARAGE_STATE"
timeout 120 "$ROOT/scripts/garage.sh" start >"$WORK/garage-start.log" 2>&1 || die "Garage did not start; see $WORK/garage-start.log"
GARAGE_BIN=$(readlink -f "/proc/$(<"$S3BLOCK_GARAGE_STATE/garage.pid")/exe")
kill "$(<"$S3BLOCK_GARAGE_STATE/garage.pid")"
timeout 30 tail --pid="$(<"$S3BLOCK_GARAGE_STATE/garage.pid")" -f /dev/null
sed -i 's/^s3_region = .*/s3_region = "us-east-1"/' "$S3BLOCK_GARAGE_STATE/garage.toml"
RUST_LOG=warn nohup "$GARAGE_BIN" -c "$S3BLOCK_GARAGE_STATE/garage.toml" server >>"$S3BLOCK_GARAGE_STATE/garage.log" 2>&1 </dev/null &
echo $! >"$S3BLOCK_GARAGE_STATE/garage.pid"
# shellcheck disable=SC1091
. "$S3BLOCK_GARAGE_STATE/env"
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
ENDPOINT=$S3BLOCK_TEST_S3_ENDPOINT
hp=${ENDPOINT#http://}
for _ in $(seq 100); do (exec 3<>"/dev/tcp/${hp%:*}/${hp#*:}") 2>/dev/null && break; sleep 0.2; done
timeout 60 "$ROOT/scripts/garage.sh" bucket bench-s3backer bench-raw >>"$WORK/garage-start.log" 2>&1 || die "could not create buckets"
printf '%s:%s\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >"$WORK/s3backer-passwd"
chmod 600 "$WORK/s3backer-passwd"
say "Garage at $ENDPOINT (region us-east-1), buckets bench-s3block, bench-s3backer, bench-raw"

# ---------------------------------------------------------------- daemons
# mount_volume SYSTEM BS PREFIX MNT: starts the daemon in the foreground (in
# the background of this shell, so its pid is ours), waits for the file.
DAEMON_PID=
mount_volume() {
    local sys=$1 bs=$2 prefix=$3 mnt=$4 log=$WORK/$1-$2-$3.log
    mkdir -p "$mnt"
    case $sys in
    s3block)
        "$FUSE_BIN" -f --endpoint "$ENDPOINT" --force-path-style --size "$VOLUME_SIZE" --block-size "$bs" \
            --cache-size "$CACHE_SIZE" "s3://bench-s3block/$prefix/" "$mnt" >>"$log" 2>&1 &
        ;;
    s3backer)
        s3backer -f --baseURL="$ENDPOINT/" --accessFile="$WORK/s3backer-passwd" --blockSize="$bs" \
            --size="$VOLUME_SIZE" --blockCacheSize=$((CACHE_BYTES / $(bytes "$bs"))) --prefix="$prefix/" \
            bench-s3backer "$mnt" >>"$log" 2>&1 &
        ;;
    memory)
        "$FUSE_BIN" -f --size 4G --block-size "$bs" --cache-size "$CACHE_SIZE" memory:// "$mnt" >>"$log" 2>&1 &
        ;;
    esac
    DAEMON_PID=$!
    PIDS+=("$DAEMON_PID")
    MOUNTS+=("$mnt")
    local deadline=$((SECONDS + 60))
    until mountpoint -q "$mnt" && [[ -e $mnt/file ]]; do
        kill -0 "$DAEMON_PID" 2>/dev/null || { tail -n 20 "$log" >&2; die "$sys exited during mount; log $log"; }
        ((SECONDS < deadline)) || die "$sys did not mount $mnt in 60 s; log $log"
        sleep 0.2
    done
    # Requests made while mounting (lock, descriptor, probes) are subtracted later.
    cp "$mnt/stats" "$WORK/stats-base-$DAEMON_PID.txt"
    # Peak RSS: VmHWM is the high-water mark; keep the last value read before exit.
    (while kill -0 "$DAEMON_PID" 2>/dev/null; do
        v=$(awk '/^VmHWM/ {print $2}' "/proc/$DAEMON_PID/status" 2>/dev/null) && [[ -n $v ]] && echo "$v" >"$WORK/hwm-$DAEMON_PID"
        sleep 0.25
    done) &
}

# wait_exit PID: waits for a process to end, polling every 20 ms (tail
# --pid polls once a second, too coarse to time an unmount).
wait_exit() {
    local deadline=$((SECONDS + STEP_TIMEOUT))
    while kill -0 "$1" 2>/dev/null; do
        ((SECONDS < deadline)) || return 1
        sleep 0.02
    done
}

# unmount_volume BS SYSTEM LABEL MNT: unmounts, times until the daemon has
# exited (it stores every dirty block first), records the peak RSS.
unmount_volume() {
    local bs=$1 sys=$2 label=$3 mnt=$4 pid=$DAEMON_PID t0
    t0=$(now)
    timeout "$STEP_TIMEOUT" umount "$mnt" || die "umount $mnt failed"
    wait_exit "$pid" || die "$sys (pid $pid) did not exit within ${STEP_TIMEOUT}s of the unmount"
    record "$bs" "$sys" "unmount_s_$label" "$(since "$t0")"
    sleep 0.3
    [[ -f $WORK/hwm-$pid ]] && record "$bs" "$sys" "hwm_kib_$label" "$(<"$WORK/hwm-$pid")"
}

# s3backer's fsync does not wait for its uploads (its fsync leaves dirty blocks);
# wait_clean polls its stats until no dirty block is left, so its figures can
# also be given up to the point the data is really in the store.
wait_clean() {
    local sys=$1 mnt=$2 deadline=$((SECONDS + STEP_TIMEOUT))
    [[ $sys == s3backer ]] || return 0
    until grep -Eq '^block_cache_dirty_ratio +0\.0000' "$mnt/stats"; do
        ((SECONDS < deadline)) || die "s3backer still has dirty blocks after ${STEP_TIMEOUT}s"
        sleep 0.1
    done
}

# requests BS SYSTEM LABEL MNT: records the requests made since the mount
# finished (its own requests, lock and descriptor, are not counted).
requests() {
    local bs=$1 sys=$2 label=$3 mnt=$4 f=$WORK/stats-$2-$1-$3.txt base=$WORK/stats-base-$DAEMON_PID.txt k name
    cat "$mnt/stats" >"$f"
    for k in get put delete; do
        case $sys in s3backer) name=http_${k}s ;; *) name=${k^^} ;; esac
        record "$bs" "$sys" "${k}s_$label" "$(awk -v k="$name" '$1 == k {n[FILENAME] = $2}
            END {print n[ARGV[2]] - n[ARGV[1]]}' "$base" "$f")"
    done
}

# put_count SYSTEM MOUNT: the PUTs the daemon has made since it started.
put_count() {
    local name
    case $1 in s3backer) name=http_puts ;; *) name=PUT ;; esac
    awk -v k="$name" '$1 == k {n = $2} END {print n + 0}' "$2/stats"
}

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# fio_job BS SYSTEM METRIC FILE ARGS...: runs one job, records MB/s or IOPS
# over fio's job runtime. That includes the end fsync, and leaves out fio's
# own start and exit (about 0.3 s on these machines, recorded as the
# difference to the wall time), which would otherwise weigh most on the
# shortest jobs, those of the faster system.
fio_job() {
    local bs=$1 sys=$2 metric=$3 file=$4 t0 wall secs out=$WORK/fio-$2-$1-$3.json
    shift 4
    t0=$(now)
    timeout "$STEP_TIMEOUT" fio --name="$metric" --filename="$file" --fallocate=none --ioengine=psync \
        --output-format=json --output="$out" "$@" || die "fio $metric on $sys failed; see $out"
    wall=$(since "$t0")
    secs=$(jq '.jobs[0].job_runtime / 1000' "$out")
    [[ $secs =~ ^[0-9.]+$ ]] && python3 -c "import sys; sys.exit(not 0 < $secs <= $wall + 0.01)" ||
        die "fio $metric on $sys: job runtime ${secs}s does not fit in its wall time ${wall}s; see $out"
    local io_bytes ios
    io_bytes=$(jq '[.jobs[0].read.io_bytes, .jobs[0].write.io_bytes] | add' "$out")
    ios=$(jq '[.jobs[0].read.total_ios, .jobs[0].write.total_ios] | add' "$out")
    record "$bs" "$sys" "${metric}_s" "$secs"
    record "$bs" "$sys" "${metric}_fio_overhead_s" "$(python3 -c "print(f'{$wall - $secs:.3f}')")"
    record "$bs" "$sys" "${metric}_mbps" "$(python3 -c "print(f'{$io_bytes / $secs / 1e6:.1f}')")"
    record "$bs" "$sys" "${metric}_iops" "$(python3 -c "print(f'{$ios / $secs:.0f}')")"
    say "  $sys $bs $metric: $(python3 -c "print(f'{$io_bytes / $secs / 1e6:.1f} MB/s, {$ios / $secs:.0f} IOPS, {$secs:.1f} s')")"
}

# ---------------------------------------------------------------- parts
run_ceiling() {
    local bs=$1 size count
    size=$(bytes "$bs")
    count=$((512 * 1024 * 1024 / size))
    say "raw store ceiling at $bs: $count objects, $UPLOAD_CONCURRENCY in flight"
    timeout "$STEP_TIMEOUT" "$RAW_BIN" --endpoint "$ENDPOINT" --force-path-style --object-size "$bs" \
        --count "$count" --concurrency "$UPLOAD_CONCURRENCY" --cold "s3://bench-raw/raw-$bs/" >"$WORK/raw-$bs.txt" ||
        die "raw_store failed; see $WORK/raw-$bs.txt"
    cat "$WORK/raw-$bs.txt" >&2
    local line
    line=$(grep '^RESULT' "$WORK/raw-$bs.txt")
    record "$bs" ceiling raw_put_mbps "$(sed 's/.*put_mbps=\([0-9.]*\).*/\1/' <<<"$line")"
    record "$bs" ceiling raw_get_mbps "$(sed 's/.*get_mbps=\([0-9.]*\).*/\1/' <<<"$line")"
    record "$bs" ceiling raw_single_get_ops "$(sed 's/.*single_get_ops=\([0-9.]*\).*/\1/' <<<"$line")"
}

# The memory store through FUSE, on three fresh mounts; the median of each
# figure is recorded. The write's speed is mostly that of faulting in fresh
# memory for the store, which varies by a fifth or more from run to run on a
# virtual machine.
run_memory_fuse() {
    local mnt=$WORK/mnt-memory r m
    say "memory store through FUSE (1M, direct I/O), three mounts"
    for r in 1 2 3; do
        mount_volume memory 1M "mem$r" "$mnt"
        fio_job 1M memory "mem_write_$r" "$mnt/file" --rw=write --bs=1M --size=2G --direct=1
        fio_job 1M memory "mem_read_$r" "$mnt/file" --rw=read --bs=1M --size=2G --direct=1
        unmount_volume 1M memory "mem$r" "$mnt"
    done
    for m in mem_write mem_read; do
        record 1M memory "${m}_mbps" "$(awk -v m="$m" '$2 == "memory" && $3 ~ "^" m "_[123]_mbps$" {print $4}' \
            "$RESULTS" | sort -g | sed -n 2p)"
    done
}

# The unpack on ext4 over a loop device on a RAM-backed file: what the
# unpack costs with no store below at all.
run_native_unpack() {
    local img=/dev/shm/s3block-bench-$$.img fsmnt=$WORK/ext4-native loop
    say "the unpack on ext4 over a RAM-backed loop file"
    FILES_MADE+=("$img")
    truncate -s 16G "$img"
    loop=$(losetup --find --show "$img") || die "losetup on $img failed"
    LOOPS+=("$loop")
    mkfs.ext4 -q -F "$loop" || die "mkfs.ext4 on $img failed"
    mkdir -p "$fsmnt"
    mount "$loop" "$fsmnt"
    MOUNTS+=("$fsmnt")
    timed - native untar sh -c "tar -xf '$TREE' -C '$fsmnt' && sync"
    umount "$fsmnt"
    losetup -d "$loop"
    rm -f "$img"
}

run_fio() {
    local bs=$1 sys=$2 mnt=$WORK/mnt-$2-$1 f
    f=$mnt/file
    say "fio on $sys at $bs"
    mount_volume "$sys" "$bs" "fio-$bs" "$mnt"
    fio_job "$bs" "$sys" seqwrite "$f" --rw=write --bs=1M --size="$SEQ_BYTES" --end_fsync=1
    local t0
    t0=$(now)
    wait_clean "$sys" "$mnt"
    record "$bs" "$sys" seqwrite_clean_extra_s "$(since "$t0")"
    requests "$bs" "$sys" seqwrite "$mnt"
    unmount_volume "$bs" "$sys" seqwrite "$mnt"
    drop_caches
    mount_volume "$sys" "$bs" "fio-$bs" "$mnt"
    fio_job "$bs" "$sys" seqread "$f" --rw=read --bs=1M --size="$SEQ_BYTES"
    fio_job "$bs" "$sys" randread "$f" --rw=randread --bs=4k --size="$SEQ_BYTES" --time_based --runtime="$RUNTIME"
    fio_job "$bs" "$sys" randwrite "$f" --rw=randwrite --bs=4k --size="$SEQ_BYTES" --time_based \
        --runtime="$RUNTIME" --end_fsync=1
    t0=$(now)
    wait_clean "$sys" "$mnt"
    record "$bs" "$sys" randwrite_clean_extra_s "$(since "$t0")"
    requests "$bs" "$sys" fio "$mnt"
    unmount_volume "$bs" "$sys" fio "$mnt"
}

timed() { # timed BS SYSTEM METRIC CMD...
    local bs=$1 sys=$2 metric=$3 t0
    shift 3
    t0=$(now)
    timeout "$STEP_TIMEOUT" "$@" >>"$WORK/$sys-$bs-$metric.log" 2>&1 || die "$metric on $sys failed: $*; see $WORK/$sys-$bs-$metric.log"
    record "$bs" "$sys" "${metric}_s" "$(since "$t0")"
    say "  $sys $bs $metric: $(tail -n1 "$RESULTS" | cut -f4) s"
}

run_ext4() {
    local bs=$1 sys=$2 mnt=$WORK/mnt-$2-$1 fsmnt=$WORK/ext4-$2-$1 loop
    say "ext4 on $sys at $bs"
    mount_volume "$sys" "$bs" "ext4-$bs" "$mnt"
    loop=$(losetup --find --show "$mnt/file") || die "losetup on $mnt/file failed"
    LOOPS+=("$loop")
    timed "$bs" "$sys" mkfs mkfs.ext4 -q -F "$loop"
    mkdir -p "$fsmnt"
    mount "$loop" "$fsmnt"
    MOUNTS+=("$fsmnt")
    local puts0
    puts0=$(put_count "$sys" "$mnt")
    timed "$bs" "$sys" untar sh -c "tar -xf '$TREE' -C '$fsmnt' && sync"
    record "$bs" "$sys" puts_untar "$(($(put_count "$sys" "$mnt") - puts0))"
    umount "$fsmnt"
    timed "$bs" "$sys" fsck e2fsck -fn "$loop"
    local t0
    t0=$(now)
    losetup -d "$loop"
    # losetup -d returns before the loop device lets go of the file.
    while losetup -j "$mnt/file" | grep -q .; do sleep 0.1; done
    record "$bs" "$sys" detach_s "$(since "$t0")"
    t0=$(now)
    wait_clean "$sys" "$mnt"
    record "$bs" "$sys" ext4_clean_extra_s "$(since "$t0")"
    requests "$bs" "$sys" ext4 "$mnt"
    unmount_volume "$bs" "$sys" ext4 "$mnt"
}

# ---------------------------------------------------------------- run
START=$(date -u +%Y-%m-%dT%H:%MZ)
if has "$PARTS" ext4; then
    TREE=$WORK/tree.tar
    say "generating the small-files tree ($FILES files)"
    python3 "$ROOT/bench/make-tree.py" "$TREE" "$FILES"
fi
if has "$PARTS" ceiling; then run_memory_fuse; fi
if has "$PARTS" ceiling && has "$PARTS" ext4; then run_native_unpack; fi
for bs in ${BLOCK_SIZES//,/ }; do
    if has "$PARTS" ceiling; then run_ceiling "$bs"; fi
    for sys in ${SYSTEMS//,/ }; do
        if has "$PARTS" fio; then run_fio "$bs" "$sys"; fi
        if has "$PARTS" ext4; then run_ext4 "$bs" "$sys"; fi
    done
done

python3 "$ROOT/bench/report.py" "$RESULTS" --started "$START" --cache-size "$CACHE_SIZE" --seq-size "$SEQ_SIZE" \
    --runtime "$RUNTIME" --files "$FILES" --concurrency "$UPLOAD_CONCURRENCY" --report "$REPORT" \
    ${BENCH_NOTES:+--notes "$BENCH_NOTES"}
[[ $REPORT == - ]] || cp "$RESULTS" "$ROOT/bench/results-$(date -u +%Y-%m-%d).tsv"
