#!/usr/bin/env bash
# The disk cache: s3block-fuse with --cache-dir beside s3backer 2.1.6 with
# --blockCacheFile of the same size, and a plain file on the same disk, on
# one Garage server on loopback.
#
#   bench/disk-cache.sh [options]
#
#   --block-size SIZE      block size of the read, unpack, fsync and big
#                          write jobs (default 256K, s3block's default)
#   --rss-block-sizes LIST block sizes of the peak-RSS job (default 4K,256K;
#                          the size above is measured by its own jobs)
#   --systems LIST         s3block,s3backer,plain (default all three)
#   --jobs LIST            read,unpack,fsync,bigwrite,rss (default all; fsync
#                          runs on the volume the read job wrote, so it
#                          implies read)
#   --cache-size SIZE      RAM cache of s3block (default 32M)
#   --disk-cache-size SIZE disk cache of s3block and s3backer's cache file
#                          (default 2G; s3backer's --blockCacheSize is this
#                          over the block size)
#   --read-size SIZE       region written, then read at random after a
#                          remount, and written at random with fsync
#                          (default 1G)
#   --runtime SECONDS      length of each random 4K job (default 20)
#   --files N              files in the small-files tree (default 20000)
#   --big-size SIZE        the sequential write whose curve is sampled
#                          (default 4G)
#   --rss-size SIZE        data written, then read, in the RSS job (default
#                          256M)
#   --results FILE         copy the figures there (default
#                          bench/results-disk-cache-DATE.tsv, and the curve
#                          beside it as ...-curve.tsv and .png; "-" keeps
#                          them in the work directory only)
#   --quick                256M region, 5 s random jobs, 5,000 files, 1G big
#                          write, 64M RSS job; results kept in the work
#                          directory only
#
# Systems: s3block-fuse with --cache-size 32M --cache-dir DIR
# --disk-cache-size 2G, with --durability local and remote ("s3block-local",
# "s3block-remote"); s3backer 2.1.6 (../shared/peers/build-s3backer.sh)
# with --blockCacheFile=FILE --blockCacheSize=2G/BS and its other options at
# their defaults (it verifies each block reloaded from the file with the
# store before its first use; "s3backer-noverify" is the same read with
# --blockCacheNoVerify); "plain": the same fio job on a plain file, or the
# unpack on ext4 over a loop device on a plain file, in the same directory
# (same disk) as the cache directories.
#
# Jobs, each figure with the 1-minute load average beside it:
#   read      write the region sequentially (1M, O_DIRECT, end fsync),
#             unmount, drop the page cache, mount again, random 4K reads
#             over the region (psync, O_DIRECT) for --runtime seconds;
#   fsync     then random 4K writes over the same region, psync, buffered,
#             --fsync=1, for --runtime seconds (fio's fsync latency
#             percentiles); s3block once with each durability;
#   unpack    mkfs.ext4 on a fresh volume through a loop device, then the
#             small-files tree (bench/make-tree.py) unpacked and `sync -f`
#             on it (syncfs: a global sync would wait for every other
#             filesystem on the machine too);
#             also how long after `sync` until nothing is left to upload;
#   bigwrite  --big-size written sequentially (1M, O_DIRECT); once a
#             second the writer's bytes (/proc/PID/io wchar) and the
#             daemon's bytes not yet in the bucket are sampled, until the
#             last is uploaded (the curve: TSV, and a PNG if matplotlib is
#             there);
#   rss       at each --rss-block-sizes size: a fresh volume, --rss-size
#             written sequentially, random 4K reads and writes with fsync,
#             unmount; the daemon's VmHWM (peak RSS), sampled every 0.25 s,
#             as for every mount of every job.
#
# It needs root, /dev/fuse, loop devices, fio, e2fsprogs, jq, python3,
# s3backer 2.1.6 and Garage (scripts/garage.sh install). It builds
# s3block-fuse in release mode unless S3BLOCK_FUSE_BIN names a binary, and
# finds s3backer with ../shared/peers/build-s3backer.sh unless S3BACKER_BIN
# names it. Everything it starts (its own Garage, the daemons, loop
# devices, mounts) is undone on exit, also on error or Ctrl-C; each step
# runs under `timeout`. The work directory (/tmp/s3block-disk-cache.*) holds
# the cache directories, the plain files and the logs; it is kept.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BS=256K
RSS_BLOCK_SIZES=4K,256K
SYSTEMS=s3block,s3backer,plain
JOBS=read,unpack,fsync,bigwrite,rss
CACHE_SIZE=32M
DISK_SIZE=2G
READ_SIZE=1G
RUNTIME=20
FILES=20000
BIG_SIZE=4G
RSS_SIZE=256M
RESULTS_OUT=$ROOT/bench/results-disk-cache-$(date -u +%Y-%m-%d).tsv
VOLUME_SIZE=8G
UNPACK_VOLUME_SIZE=4G
STEP_TIMEOUT=${BENCH_STEP_TIMEOUT:-900}

say() { printf '[disk-cache %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

while (($#)); do
    case $1 in
    --block-size) BS=$2; shift ;;
    --rss-block-sizes) RSS_BLOCK_SIZES=$2; shift ;;
    --systems) SYSTEMS=$2; shift ;;
    --jobs) JOBS=$2; shift ;;
    --cache-size) CACHE_SIZE=$2; shift ;;
    --disk-cache-size) DISK_SIZE=$2; shift ;;
    --read-size) READ_SIZE=$2; shift ;;
    --runtime) RUNTIME=$2; shift ;;
    --files) FILES=$2; shift ;;
    --big-size) BIG_SIZE=$2; shift ;;
    --rss-size) RSS_SIZE=$2; shift ;;
    --results) RESULTS_OUT=$2; shift ;;
    --quick) READ_SIZE=256M RUNTIME=5 FILES=5000 BIG_SIZE=1G RSS_SIZE=64M RESULTS_OUT=- ;;
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
if has "$JOBS" fsync && ! has "$JOBS" read; then JOBS=$JOBS,read; fi

((EUID == 0)) || die "run as root (FUSE mounts, loop devices, drop_caches)"
for tool in fio mkfs.ext4 e2fsck losetup python3 jq tar; do
    command -v $tool >/dev/null || die "$tool is missing (apt-get install -y fio e2fsprogs jq)"
done
[[ -e /dev/fuse ]] || die "/dev/fuse is missing"
DISK_BYTES=$(bytes "$DISK_SIZE")
READ_BYTES=$(bytes "$READ_SIZE")
BIG_BYTES=$(bytes "$BIG_SIZE")
((BIG_BYTES <= $(bytes "$VOLUME_SIZE"))) || die "--big-size $BIG_SIZE is larger than the $VOLUME_SIZE volume"

WORK=$(mktemp -d /tmp/s3block-disk-cache.XXXXXX)
RESULTS=$WORK/results.tsv
DISK_DEV=$(basename "$(findmnt -no SOURCE -T "$WORK")")
DISK_STAT=/sys/class/block/$DISK_DEV/stat
[[ -r $DISK_STAT ]] || die "no $DISK_STAT for the disk of $WORK"
CURVE=$WORK/curve.tsv
: >"$RESULTS"
printf 'system\tt_s\twritten_bytes\tnot_in_bucket_bytes\tputs\twaits\n' >"$CURVE"
RUN_ID=$(date +%H%M%S)
export S3BLOCK_GARAGE_STATE=$WORK/garage S3BLOCK_TEST_S3_BUCKET=bench-s3block
PIDS=()   # daemons and samplers we started
LOOPS=()  # loop devices we attached
MOUNTS=() # mount points we mounted (FUSE and ext4)

cleanup() {
    local rc=$? m l p
    set +e
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        m=${MOUNTS[i]}
        mountpoint -q "$m" && { umount "$m" 2>/dev/null || umount -l "$m"; }
    done
    for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done
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
calc() { python3 -c "print($1)"; }
load1() { cut -d' ' -f1 /proc/loadavg; }
# `sync -f` (syncfs) of the filesystems we use, never a global sync: that
# would also wait for every other filesystem on the machine (a FUSE mount
# whose daemon waits for its store holds a global sync for as long).
drop_caches() { sync -f "$WORK"; echo 3 >/proc/sys/vm/drop_caches; }
# disk_reads: reads completed by the disk that holds the work directory
# (the cache directories and the plain files), from /sys/block/DEV/stat.
disk_reads() { awk '{print $1}' "$DISK_STAT"; }

# ---------------------------------------------------------------- binaries
FUSE_BIN=${S3BLOCK_FUSE_BIN:-}
if [[ -z $FUSE_BIN ]]; then
    say "building s3block-fuse (release)"
    (cd "$ROOT" && timeout 1800 cargo build --release -q -p s3block-fuse) || die "cargo build failed"
    TARGET=$(cd "$ROOT" && cargo metadata --no-deps --format-version 1 | jq -r .target_directory)
    FUSE_BIN=$TARGET/release/s3block-fuse
fi
[[ -x $FUSE_BIN ]] || die "missing binary: $FUSE_BIN"
S3BACKER=${S3BACKER_BIN:-}
if has "$SYSTEMS" s3backer && [[ -z $S3BACKER ]]; then
    S3BACKER=$("$ROOT/../shared/peers/build-s3backer.sh" | tail -n1) || die "could not build s3backer 2.1.6"
fi
if has "$SYSTEMS" s3backer; then
    [[ -x $S3BACKER ]] || die "missing s3backer binary: $S3BACKER"
    "$S3BACKER" --version 2>&1 | grep -q '2\.1\.6' || say "warning: $S3BACKER is not s3backer 2.1.6"
fi

# ---------------------------------------------------------------- Garage
say "starting Garage in $S3BLOCK_GARAGE_STATE"
# A second try: under load, garage.sh's start can see the server's pid
# before it has become the Garage binary and give up; a second start
# replaces that server.
timeout 120 "$ROOT/scripts/garage.sh" start >"$WORK/garage-start.log" 2>&1 ||
    timeout 120 "$ROOT/scripts/garage.sh" start >>"$WORK/garage-start.log" 2>&1 ||
    die "Garage did not start; see $WORK/garage-start.log"
# shellcheck disable=SC1091
. "$S3BLOCK_GARAGE_STATE/env"
[[ ${AWS_REGION:-us-east-1} == us-east-1 ]] ||
    die "Garage signs for $AWS_REGION; s3backer with --baseURL and no --region signs for us-east-1"
ENDPOINT=$S3BLOCK_TEST_S3_ENDPOINT
timeout 60 "$ROOT/scripts/garage.sh" bucket bench-s3backer >>"$WORK/garage-start.log" 2>&1 || die "could not create buckets"
printf '%s:%s\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >"$WORK/s3backer-passwd"
chmod 600 "$WORK/s3backer-passwd"
say "Garage at $ENDPOINT, buckets bench-s3block, bench-s3backer; work directory $WORK"

# ---------------------------------------------------------------- daemons
# mount_volume SYSTEM BS PREFIX MNT [SIZE [EXTRA...]]: starts the daemon in
# the foreground (in the background of this shell, so its pid is ours),
# waits for its file. SYSTEM is s3block-local, s3block-remote or s3backer;
# the cache directory (file) is named after the prefix, so a remount of the
# same prefix finds it.
DAEMON_PID=
mount_volume() {
    local sys=$1 bs=$2 prefix=$3 mnt=$4 size=${5:-$VOLUME_SIZE} log=$WORK/$1-$2-$3.log t0
    shift 5 2>/dev/null || shift $#
    mkdir -p "$mnt"
    echo "---- mount $(date +%T)" >>"$log"
    t0=$(now)
    case $sys in
    s3block-local | s3block-remote)
        "$FUSE_BIN" -f --endpoint "$ENDPOINT" --force-path-style --size "$size" --block-size "$bs" \
            --cache-size "$CACHE_SIZE" --cache-dir "$WORK/cache-$prefix" --disk-cache-size "$DISK_SIZE" \
            --durability "${sys#s3block-}" "$@" "s3://bench-s3block/$prefix/" "$mnt" >>"$log" 2>&1 &
        ;;
    s3backer)
        "$S3BACKER" -f --baseURL="$ENDPOINT/" --accessFile="$WORK/s3backer-passwd" --blockSize="$bs" \
            --size="$size" --blockCacheFile="$WORK/cache-$prefix.bin" \
            --blockCacheSize=$((DISK_BYTES / $(bytes "$bs"))) --prefix="$prefix/" "$@" \
            bench-s3backer "$mnt" >>"$log" 2>&1 &
        ;;
    *) die "unknown system $sys" ;;
    esac
    DAEMON_PID=$!
    PIDS+=("$DAEMON_PID")
    MOUNTS+=("$mnt")
    local deadline=$((SECONDS + 120))
    until mountpoint -q "$mnt" && [[ -e $mnt/file ]]; do
        kill -0 "$DAEMON_PID" 2>/dev/null || { tail -n 20 "$log" >&2; die "$sys exited during mount; log $log"; }
        ((SECONDS < deadline)) || die "$sys did not mount $mnt in 120 s; log $log"
        sleep 0.05
    done
    MOUNT_S=$(since "$t0")
    cp "$mnt/stats" "$WORK/stats-base-$DAEMON_PID.txt"
    # Peak RSS: VmHWM is the high-water mark; keep the last value read before exit.
    (while kill -0 "$DAEMON_PID" 2>/dev/null; do
        v=$(awk '/^VmHWM/ {print $2}' "/proc/$DAEMON_PID/status" 2>/dev/null) && [[ -n $v ]] && echo "$v" >"$WORK/hwm-$DAEMON_PID"
        sleep 0.25
    done) &
    PIDS+=("$!")
}

wait_exit() {
    local deadline=$((SECONDS + STEP_TIMEOUT))
    while kill -0 "$1" 2>/dev/null; do
        ((SECONDS < deadline)) || return 1
        sleep 0.02
    done
}

# unmount_volume BS SYSTEM LABEL MNT: unmounts, times until the daemon has
# exited, records its peak RSS.
unmount_volume() {
    local bs=$1 sys=$2 label=$3 mnt=$4 pid=$DAEMON_PID t0
    cp "$mnt/stats" "$WORK/stats-final-$sys-$bs-$label.txt" 2>/dev/null || true
    t0=$(now)
    timeout "$STEP_TIMEOUT" umount "$mnt" || die "umount $mnt failed"
    wait_exit "$pid" || die "$sys (pid $pid) did not exit within ${STEP_TIMEOUT}s of the unmount"
    record "$bs" "$sys" "unmount_s_$label" "$(since "$t0")"
    sleep 0.3
    [[ -f $WORK/hwm-$pid ]] && record "$bs" "$sys" "hwm_kib_$label" "$(<"$WORK/hwm-$pid")"
    true
}

# stat_of SYSTEM MNT NAME: one counter from the daemon's stats file.
#   puts, gets: requests; unstored: bytes not yet in the bucket (s3block:
#   the [disk cache] section; s3backer: dirty blocks times the block size);
#   waits: s3block's writes that waited for the disk tier's dirty budget;
#   hits: reads the disk tier served.
stat_of() {
    local sys=$1 f=$2/stats
    case $sys:$3 in
    s3block*:puts) awk '$1 == "PUT" {print $2; exit}' "$f" ;;
    s3block*:gets) awk '$1 == "GET" {print $2; exit}' "$f" ;;
    s3block*:unstored) awk '/^not in bucket/ {gsub(",", "", $6); print $6; exit}' "$f" ;;
    s3block*:waits) awk '/^waits / {gsub(",", "", $2); print $2; exit}' "$f" ;;
    s3block*:hits) awk '/^disk hits / {gsub(",", "", $3); print $3; exit}' "$f" ;;
    s3backer:puts) awk '$1 == "http_puts" {print $2; exit}' "$f" ;;
    # Its GETs, and its checks of reloaded blocks (conditional GETs that
    # found the block unchanged, counted apart).
    s3backer:gets) awk '$1 == "http_gets" || $1 == "http_verified" {n += $2} END {print n + 0}' "$f" ;;
    # Its dirty ratio is over the configured size (--blockCacheSize, the
    # disk cache size over the block size).
    s3backer:unstored) awk -v size="$DISK_BYTES" '$1 == "block_cache_dirty_ratio" {printf "%.0f\n", $2 * size; exit}' "$f" ;;
    s3backer:*) echo 0 ;;
    esac
}

# wait_stored SYSTEM MNT BS: waits until nothing written is left to upload.
wait_stored() {
    local deadline=$((SECONDS + STEP_TIMEOUT)) v
    while :; do
        v=$(stat_of "$1" "$2" unstored "$(bytes "$3")")
        [[ $v == 0 ]] && return 0
        ((SECONDS < deadline)) || die "$1 still has $v bytes to upload after ${STEP_TIMEOUT}s"
        sleep 0.1
    done
}

# seed_for WORDS...: a seed of its own for each system and job. fio seeds
# its generator the same way in every run, so without one each system
# wrote the bytes the one before it wrote, and Garage, which keeps each
# distinct block once, skipped the disk write of the later system's blocks
# (docs/BENCHMARKS.md, "every write in bytes the store has not seen").
seed_for() { printf '%s\n' "$*" | cksum | cut -d' ' -f1; }

# fio_job BS SYSTEM JOB FILE ARGS...: one job, psync; records throughput,
# IOPS, fsync latency percentiles when it has them, and the load average.
fio_job() {
    local bs=$1 sys=$2 job=$3 file=$4 out=$WORK/fio-$2-$1-$3.json secs io_bytes ios load0 disk_reads0
    shift 4
    load0=$(load1)
    disk_reads0=$(disk_reads)
    # --refill_buffers: fresh random bytes for every write, as in bench/run.sh
    # (fio's default reused buffer is partly compressible, and Garage
    # compresses what it stores).
    timeout "$STEP_TIMEOUT" fio --name="$job" --filename="$file" --fallocate=none --ioengine=psync --thread \
        --refill_buffers=1 --randseed="$(seed_for "$sys" "$bs" "$job")" --output-format=json --output="$out" "$@" ||
        die "fio $job on $sys failed; see $out"
    secs=$(jq '.jobs[0].job_runtime / 1000' "$out")
    io_bytes=$(jq '[.jobs[0].read.io_bytes, .jobs[0].write.io_bytes] | add' "$out")
    ios=$(jq '[.jobs[0].read.total_ios, .jobs[0].write.total_ios] | add' "$out")
    python3 -c "import sys; sys.exit(not $secs > 0)" || die "fio $job on $sys: no runtime; see $out"
    record "$bs" "$sys" "${job}_s" "$secs"
    record "$bs" "$sys" "${job}_mibps" "$(calc "f'{$io_bytes / $secs / 2**20:.1f}'")"
    record "$bs" "$sys" "${job}_iops" "$(calc "f'{$ios / $secs:.0f}'")"
    record "$bs" "$sys" "${job}_load_before" "$load0"
    record "$bs" "$sys" "${job}_load_after" "$(load1)"
    record "$bs" "$sys" "${job}_disk_reads" "$(($(disk_reads) - disk_reads0))"
    local extra=""
    if [[ $(jq '.jobs[0].sync.total_ios // 0' "$out") != 0 ]]; then
        local p
        for p in 50 90 99; do
            record "$bs" "$sys" "${job}_fsync_p${p}_us" \
                "$(jq -r ".jobs[0].sync.lat_ns.percentile[\"$p.000000\"] / 1000" "$out")"
        done
        record "$bs" "$sys" "${job}_fsync_mean_us" "$(jq -r '.jobs[0].sync.lat_ns.mean / 1000 | floor' "$out")"
        extra=", fsync p50 $(tail -n4 "$RESULTS" | head -n1 | cut -f4) us"
    fi
    say "  $sys $bs $job: $(calc "f'{$io_bytes / $secs / 2**20:.1f} MiB/s, {$ios / $secs:.0f} IOPS, {$secs:.1f} s'")$extra, load $load0 -> $(load1)"
}

counter_delta() { # counter_delta SYSTEM MNT NAME BASEFILE-VALUE
    echo $(($(stat_of "$1" "$2" "$3") - $4))
}

# ---------------------------------------------------------------- read + fsync
# The region written, unmounted, the page cache dropped, remounted: random
# 4K reads over it, then random 4K writes with fsync after each.
run_read() {
    local sys=$1 bs=$BS mnt=$WORK/mnt-read-$1 prefix=read-$RUN_ID-$1 f g0 h0
    f=$mnt/file
    case $sys in
    s3block)
        say "read and fsync jobs on s3block at $bs"
        mount_volume s3block-local "$bs" "$prefix" "$mnt" "$VOLUME_SIZE"
        fio_job "$bs" s3block-local fill "$f" --rw=write --bs=1M --size="$READ_BYTES" --direct=1 --end_fsync=1
        wait_stored s3block-local "$mnt" "$bs"
        unmount_volume "$bs" s3block-local fill "$mnt"
        drop_caches
        mount_volume s3block-local "$bs" "$prefix" "$mnt" "$VOLUME_SIZE"
        record "$bs" s3block-local warm_mount_s "$MOUNT_S"
        g0=$(stat_of s3block "$mnt" gets) h0=$(stat_of s3block "$mnt" hits)
        fio_job "$bs" s3block-local randread "$f" --rw=randread --bs=4k --size="$READ_BYTES" --direct=1 \
            --time_based --runtime="$RUNTIME"
        record "$bs" s3block-local randread_gets "$(counter_delta s3block "$mnt" gets "$g0")"
        record "$bs" s3block-local randread_disk_hits "$(counter_delta s3block "$mnt" hits "$h0")"
        if has "$JOBS" fsync; then
            fio_job "$bs" s3block-local fsyncwrite "$f" --rw=randwrite --bs=4k --size="$READ_BYTES" --fsync=1 \
                --time_based --runtime="$RUNTIME"
            local t0
            t0=$(now)
            wait_stored s3block-local "$mnt" "$bs"
            record "$bs" s3block-local fsyncwrite_stored_extra_s "$(since "$t0")"
        fi
        unmount_volume "$bs" s3block-local read "$mnt"
        if has "$JOBS" fsync; then
            mount_volume s3block-remote "$bs" "$prefix" "$mnt" "$VOLUME_SIZE"
            fio_job "$bs" s3block-remote fsyncwrite "$f" --rw=randwrite --bs=4k --size="$READ_BYTES" --fsync=1 \
                --time_based --runtime="$RUNTIME"
            unmount_volume "$bs" s3block-remote fsync "$mnt"
        fi
        ;;
    s3backer)
        say "read and fsync jobs on s3backer 2.1.6 at $bs"
        mount_volume s3backer "$bs" "$prefix" "$mnt" "$VOLUME_SIZE"
        fio_job "$bs" s3backer fill "$f" --rw=write --bs=1M --size="$READ_BYTES" --direct=1 --end_fsync=1
        local t0
        t0=$(now)
        wait_stored s3backer "$mnt" "$bs"
        record "$bs" s3backer fill_stored_extra_s "$(since "$t0")"
        unmount_volume "$bs" s3backer fill "$mnt"
        drop_caches
        mount_volume s3backer "$bs" "$prefix" "$mnt" "$VOLUME_SIZE"
        record "$bs" s3backer warm_mount_s "$MOUNT_S"
        g0=$(stat_of s3backer "$mnt" gets)
        fio_job "$bs" s3backer randread "$f" --rw=randread --bs=4k --size="$READ_BYTES" --direct=1 \
            --time_based --runtime="$RUNTIME"
        record "$bs" s3backer randread_gets "$(counter_delta s3backer "$mnt" gets "$g0")"
        cp "$mnt/stats" "$WORK/stats-s3backer-after-randread.txt"
        if has "$JOBS" fsync; then
            fio_job "$bs" s3backer fsyncwrite "$f" --rw=randwrite --bs=4k --size="$READ_BYTES" --fsync=1 \
                --time_based --runtime="$RUNTIME"
            t0=$(now)
            wait_stored s3backer "$mnt" "$bs"
            record "$bs" s3backer fsyncwrite_stored_extra_s "$(since "$t0")"
        fi
        unmount_volume "$bs" s3backer read "$mnt"
        # The same read without the check against the store.
        drop_caches
        mount_volume s3backer "$bs" "$prefix" "$mnt" "$VOLUME_SIZE" --blockCacheNoVerify
        record "$bs" s3backer-noverify warm_mount_s "$MOUNT_S"
        g0=$(stat_of s3backer "$mnt" gets)
        fio_job "$bs" s3backer-noverify randread "$f" --rw=randread --bs=4k --size="$READ_BYTES" --direct=1 \
            --time_based --runtime="$RUNTIME"
        record "$bs" s3backer-noverify randread_gets "$(counter_delta s3backer "$mnt" gets "$g0")"
        unmount_volume "$bs" s3backer-noverify read "$mnt"
        ;;
    plain)
        say "read and fsync jobs on a plain file in $WORK"
        f=$WORK/plain-read.img
        fio_job "$bs" plain fill "$f" --rw=write --bs=1M --size="$READ_BYTES" --direct=1 --end_fsync=1
        drop_caches
        fio_job "$bs" plain randread "$f" --rw=randread --bs=4k --size="$READ_BYTES" --direct=1 \
            --time_based --runtime="$RUNTIME"
        # The same through the page cache (what a daemon's reads of its own
        # cache file get once they are cached).
        drop_caches
        fio_job "$bs" plain randread_buffered "$f" --rw=randread --bs=4k --size="$READ_BYTES" \
            --time_based --runtime="$RUNTIME"
        if has "$JOBS" fsync; then
            fio_job "$bs" plain fsyncwrite "$f" --rw=randwrite --bs=4k --size="$READ_BYTES" --fsync=1 \
                --time_based --runtime="$RUNTIME"
        fi
        rm -f "$f"
        ;;
    esac
}

# ---------------------------------------------------------------- unpack
timed() { # timed BS SYSTEM METRIC CMD...
    local bs=$1 sys=$2 metric=$3 t0 load0
    shift 3
    load0=$(load1)
    t0=$(now)
    timeout "$STEP_TIMEOUT" "$@" >>"$WORK/$sys-$bs-$metric.log" 2>&1 || die "$metric on $sys failed: $*; see $WORK/$sys-$bs-$metric.log"
    record "$bs" "$sys" "${metric}_s" "$(since "$t0")"
    record "$bs" "$sys" "${metric}_load_before" "$load0"
    say "  $sys $bs $metric: $(tail -n2 "$RESULTS" | head -n1 | cut -f4) s, load $load0 -> $(load1)"
}

run_unpack() {
    local sys=$1 bs=$BS mnt=$WORK/mnt-unpack-$1 fsmnt=$WORK/ext4-$1 prefix=unpack-$RUN_ID-$1 loop file p0 t0
    # The same names and sizes for every system, contents of its own.
    local tree=$WORK/tree-$sys.tar
    python3 "$ROOT/bench/make-tree.py" "$tree" "$FILES" "$(seed_for tree "$sys")" || die "bench/make-tree.py failed"
    say "unpack on $sys at $bs"
    if [[ $sys == plain ]]; then
        file=$WORK/plain-unpack.img
        truncate -s "$UNPACK_VOLUME_SIZE" "$file"
    else
        mount_volume "$sys" "$bs" "$prefix" "$mnt" "$UNPACK_VOLUME_SIZE"
        file=$mnt/file
    fi
    loop=$(losetup --find --show "$file") || die "losetup on $file failed"
    LOOPS+=("$loop")
    # Inode tables and journal written now, so no lazy init runs during the unpack.
    timed "$bs" "$sys" mkfs mkfs.ext4 -q -F -E nodiscard,lazy_itable_init=0,lazy_journal_init=0 "$loop"
    mkdir -p "$fsmnt"
    mount "$loop" "$fsmnt"
    MOUNTS+=("$fsmnt")
    sync -f "$fsmnt"
    [[ $sys == plain ]] || { wait_stored "$sys" "$mnt" "$bs"; p0=$(stat_of "$sys" "$mnt" puts); }
    local u0
    u0=$(now)
    timed "$bs" "$sys" untar sh -c "tar -xf '$tree' -C '$fsmnt' && date +%s.%N >'$WORK/untar-tar-end' && sync -f '$fsmnt'"
    # The two halves: tar (into the page cache) and the sync (ext4 writes
    # its blocks and journal out, through the daemon).
    record "$bs" "$sys" untar_tar_s "$(python3 -c "print(f'{$(<"$WORK/untar-tar-end") - $u0:.3f}')")"
    if [[ $sys != plain ]]; then
        t0=$(now)
        wait_stored "$sys" "$mnt" "$bs"
        record "$bs" "$sys" untar_stored_extra_s "$(since "$t0")"
        record "$bs" "$sys" untar_puts "$(counter_delta "$sys" "$mnt" puts "$p0")"
    fi
    # The data checked: the tree against the archive, the filesystem.
    (cd "$fsmnt" && timeout "$STEP_TIMEOUT" tar -df "$tree" >"$WORK/tar-diff-$sys.txt" 2>&1) ||
        die "the unpacked tree on $sys differs from the archive: $WORK/tar-diff-$sys.txt"
    umount "$fsmnt"
    timeout "$STEP_TIMEOUT" e2fsck -fn "$loop" >"$WORK/fsck-$sys.txt" 2>&1 || die "e2fsck -fn on $sys: $WORK/fsck-$sys.txt"
    losetup -d "$loop"
    while losetup -j "$file" | grep -q .; do sleep 0.1; done
    if [[ $sys == plain ]]; then rm -f "$file"; else unmount_volume "$bs" "$sys" unpack "$mnt"; fi
}

# ---------------------------------------------------------------- big write
# sample SYSTEM MNT BS WRITER_PID: once a second, one line of the curve.
sample() {
    local sys=$1 mnt=$2 bs=$3 wpid=$4 t0=${EPOCHREALTIME/./} w t
    while :; do
        w=$(awk '$1 == "wchar:" {print $2}' "/proc/$wpid/io" 2>/dev/null || true)
        [[ -n $w ]] || w=$(<"$WORK/big-last-written")
        echo "$w" >"$WORK/big-last-written"
        t=$((${EPOCHREALTIME/./} - t0))
        t=$((t / 1000000)).$(printf '%03d' $((t % 1000000 / 1000)))
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$sys" "$t" "$w" "$(stat_of "$sys" "$mnt" unstored "$(bytes "$bs")")" \
            "$(stat_of "$sys" "$mnt" puts)" "$(stat_of "$sys" "$mnt" waits)" >>"$CURVE"
        sleep 1
    done
}

run_bigwrite() {
    local sys=$1 bs=$BS mnt=$WORK/mnt-big-$1 prefix=big-$RUN_ID-$1 fpid spid t0 load0 rc
    [[ $sys == s3block ]] && sys=s3block-remote
    say "sequential write of $BIG_SIZE on $sys at $bs, sampled once a second"
    mount_volume "$sys" "$bs" "$prefix" "$mnt" "$VOLUME_SIZE"
    echo 0 >"$WORK/big-last-written"
    load0=$(load1)
    t0=$(now)
    fio --name=big --filename="$mnt/file" --fallocate=none --ioengine=psync --thread --rw=write --bs=1M \
        --size="$BIG_BYTES" --direct=1 --refill_buffers=1 --randseed="$(seed_for "$sys" "$bs" big)" \
        --output-format=json --output="$WORK/fio-$sys-big.json" &
    fpid=$!
    PIDS+=("$fpid")
    sample "$sys" "$mnt" "$bs" "$fpid" &
    spid=$!
    PIDS+=("$spid")
    rc=0
    timeout "$STEP_TIMEOUT" tail --pid="$fpid" -f /dev/null || rc=$?
    wait "$fpid" || die "fio big write on $sys failed (rc $? / $rc); see $WORK/fio-$sys-big.json"
    # fio exits after its close, which may wait for uploads: the writer's
    # last write is the first sample that shows every byte written.
    local exit_s written_s
    exit_s=$(since "$t0")
    record "$bs" "$sys" big_fio_exit_s "$exit_s"
    record "$bs" "$sys" big_load_before "$load0"
    wait_stored "$sys" "$mnt" "$bs"
    local stored_s
    stored_s=$(since "$t0")
    kill "$spid" 2>/dev/null
    wait "$spid" 2>/dev/null || true
    written_s=$(awk -F'\t' -v s="$sys" -v b="$BIG_BYTES" '$1 == s && $3 >= b {print $2; exit}' "$CURVE")
    [[ -n $written_s ]] || written_s=$exit_s
    record "$bs" "$sys" big_written_s "$written_s"
    record "$bs" "$sys" big_writer_mibps "$(calc "f'{$BIG_BYTES / $written_s / 2**20:.1f}'")"
    record "$bs" "$sys" big_stored_s "$stored_s"
    record "$bs" "$sys" big_upload_mibps "$(calc "f'{$BIG_BYTES / $stored_s / 2**20:.1f}'")"
    record "$bs" "$sys" big_load_after "$(load1)"
    [[ $sys == s3backer ]] || record "$bs" "$sys" big_waits "$(stat_of "$sys" "$mnt" waits)"
    say "  $sys big write: writer done in $written_s s (fio exited at $exit_s s), all stored at $stored_s s, load $load0 -> $(load1)"
    unmount_volume "$bs" "$sys" big "$mnt"
}

# ---------------------------------------------------------------- RSS
run_rss() {
    local sys=$1 bs=$2 mnt=$WORK/mnt-rss-$1-$2 prefix=rss-$RUN_ID-$1-$2 f size
    [[ $sys == s3block ]] && sys=s3block-local
    size=$(bytes "$RSS_SIZE")
    say "peak RSS of $sys at $bs"
    mount_volume "$sys" "$bs" "$prefix" "$mnt" "$VOLUME_SIZE"
    f=$mnt/file
    fio_job "$bs" "$sys" rss_fill "$f" --rw=write --bs=1M --size="$size" --direct=1 --end_fsync=1
    fio_job "$bs" "$sys" rss_randread "$f" --rw=randread --bs=4k --size="$size" --direct=1 \
        --time_based --runtime="$RUNTIME"
    fio_job "$bs" "$sys" rss_randwrite "$f" --rw=randwrite --bs=4k --size="$size" --fsync=1 \
        --time_based --runtime="$RUNTIME"
    wait_stored "$sys" "$mnt" "$bs"
    cp "$mnt/stats" "$WORK/stats-rss-$sys-$bs.txt"
    unmount_volume "$bs" "$sys" rss "$mnt"
}

# ---------------------------------------------------------------- run
START=$(date -u +%Y-%m-%dT%H:%MZ)
say "settings: block size $BS, RAM cache $CACHE_SIZE, disk cache $DISK_SIZE, region $READ_SIZE, ${RUNTIME}s random jobs, $FILES files, big write $BIG_SIZE, RSS job $RSS_SIZE at $RSS_BLOCK_SIZES"
record - - started "$START"
if has "$JOBS" read; then
    for sys in ${SYSTEMS//,/ }; do run_read "$sys"; done
fi
if has "$JOBS" unpack; then
    for sys in ${SYSTEMS//,/ }; do
        case $sys in
        s3block) run_unpack s3block-local; run_unpack s3block-remote ;;
        *) run_unpack "$sys" ;;
        esac
    done
fi
if has "$JOBS" bigwrite; then
    for sys in ${SYSTEMS//,/ }; do [[ $sys == plain ]] || run_bigwrite "$sys"; done
fi
if has "$JOBS" rss; then
    for bs in ${RSS_BLOCK_SIZES//,/ }; do
        for sys in ${SYSTEMS//,/ }; do [[ $sys == plain ]] || run_rss "$sys" "$bs"; done
    done
fi

python3 "$ROOT/bench/disk-cache-report.py" "$RESULTS" --curve "$CURVE" --png "$WORK/curve.png" \
    --block-size "$BS" --cache-size "$CACHE_SIZE" --disk-cache-size "$DISK_SIZE" --files "$FILES" \
    --big-size "$BIG_SIZE" >"$WORK/report.md" || say "report failed"
cat "$WORK/report.md"
if [[ $RESULTS_OUT != - ]]; then
    cp "$RESULTS" "$RESULTS_OUT"
    cp "$CURVE" "${RESULTS_OUT%.tsv}-curve.tsv"
    [[ -f $WORK/curve.png ]] && cp "$WORK/curve.png" "${RESULTS_OUT%.tsv}-curve.png"
    say "results in $RESULTS_OUT"
fi
