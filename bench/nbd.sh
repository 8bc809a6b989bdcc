#!/usr/bin/env bash
# s3block-nbd beside s3backer 2.1.6's NBD mode (nbdkit's s3backer plugin),
# with s3block-fuse on the same jobs for the CPU comparison, on one Garage
# server on loopback.
#
#   bench/nbd.sh [options]
#
#   --block-sizes LIST   block sizes to run, comma-separated (default 64K,1M)
#   --systems LIST       nbd,s3backer,fuse (default all three): s3block-nbd,
#                        `nbdkit s3backer`, s3block-fuse
#   --cache-size SIZE    cache of each server (default 64M; s3backer's
#                        blockCacheSize is this over the block size)
#   --seq-size SIZE      the volume's size, which the sequential jobs and
#                        the copies cover whole (default 1G)
#   --runtime SECONDS    length of each random 4K job (default 20)
#   --seq-depth N        requests in flight, sequential jobs (default 8)
#   --rand-depth N       requests in flight, random jobs (default 32)
#   --connections N      nbdcopy's --connections (default 4)
#   --report FILE        splice the NBD section into FILE (default
#                        docs/BENCHMARKS.md; "-" prints it only)
#   --quick              64K only, 256M volume, 5 s random, report printed only
#
# On a fresh prefix for each block size and system, the three side by side
# (each job runs on all three before the next), the servers restarted (cold
# cache) between phases:
#   1. fio sequential write of the whole volume, 1M requests, end_fsync=1;
#   2. fio cold sequential read, then random 4K read, then random 4K write
#      with an fsync at the end (time-based, over the whole volume);
#   3. nbdcopy of a random file in (--flush);
#   4. nbdcopy of the volume out to null: (cold).
# NBD servers are driven by fio's nbd engine and nbdcopy over a Unix socket;
# s3block-fuse by fio (libaio, O_DIRECT, the same depth) and nbdcopy on its
# file. Recorded per job: MiB/s, IOPS, the server process's CPU seconds
# (utime+stime from /proc/PID/stat) and Garage's, fio's own CPU, the load.
#
# It needs root, /dev/fuse, fio (with its nbd engine), nbdcopy, nbdkit,
# s3backer 2.1.6's nbdkit plugin (../shared/peers/build-s3backer.sh installs
# it), jq, python3 and Garage (scripts/garage.sh install). It builds
# s3block-nbd and s3block-fuse in release mode unless S3BLOCK_NBD_BIN and
# S3BLOCK_FUSE_BIN name binaries. Everything it starts (Garage, the servers,
# mounts, the source file in /dev/shm) is undone on exit, also on error or
# Ctrl-C. Each step runs under `timeout`. BENCH_NOTES=FILE adds that text
# (the analysis of a run) to the section.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BLOCK_SIZES=64K,1M
SYSTEMS=nbd,s3backer,fuse
CACHE_SIZE=64M
SEQ_SIZE=1G
RUNTIME=20
SEQ_DEPTH=8
RAND_DEPTH=32
CONNECTIONS=4
REPORT=$ROOT/docs/BENCHMARKS.md
STEP_TIMEOUT=${BENCH_STEP_TIMEOUT:-600}

say() { printf '[nbd-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

while (($#)); do
    case $1 in
    --block-sizes) BLOCK_SIZES=$2; shift ;;
    --systems) SYSTEMS=$2; shift ;;
    --cache-size) CACHE_SIZE=$2; shift ;;
    --seq-size) SEQ_SIZE=$2; shift ;;
    --runtime) RUNTIME=$2; shift ;;
    --seq-depth) SEQ_DEPTH=$2; shift ;;
    --rand-depth) RAND_DEPTH=$2; shift ;;
    --connections) CONNECTIONS=$2; shift ;;
    --report) REPORT=$2; shift ;;
    --quick) BLOCK_SIZES=64K SEQ_SIZE=256M RUNTIME=5 REPORT=- ;;
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

((EUID == 0)) || die "run as root (FUSE mounts, drop_caches)"
for tool in fio nbdcopy nbdinfo nbdkit python3 jq; do
    command -v $tool >/dev/null || die "$tool is missing (apt-get install -y fio libnbd-bin nbdkit jq)"
done
fio --enghelp=nbd >/dev/null 2>&1 || die "this fio has no nbd engine"
if has "$SYSTEMS" s3backer; then
    nbdkit s3backer --dump-plugin >/dev/null 2>&1 ||
        die "nbdkit has no s3backer plugin: run ../shared/peers/build-s3backer.sh"
fi
if has "$SYSTEMS" fuse; then [[ -e /dev/fuse ]] || die "/dev/fuse is missing"; fi
CACHE_BYTES=$(bytes "$CACHE_SIZE")
SEQ_BYTES=$(bytes "$SEQ_SIZE")
CLK_TCK=$(getconf CLK_TCK)

WORK=$(mktemp -d /tmp/s3block-nbd-bench.XXXXXX)
RESULTS=$WORK/results.tsv
: >"$RESULTS"
RUN_ID=$(date +%H%M%S)
export S3BLOCK_GARAGE_STATE=$WORK/garage S3BLOCK_TEST_S3_BUCKET=bench-s3block
SRC=/dev/shm/s3block-nbd-bench-$$.src
PIDS=()   # servers we started
MOUNTS=() # FUSE mount points we mounted

cleanup() {
    local rc=$? m p
    set +e
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        m=${MOUNTS[i]}
        mountpoint -q "$m" && { umount "$m" 2>/dev/null || umount -l "$m"; }
    done
    for p in "${PIDS[@]}"; do
        kill -0 "$p" 2>/dev/null && { kill "$p"; timeout 60 tail --pid="$p" -f /dev/null; }
    done
    rm -f "$SRC"
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
# cpu_s PID: user + system CPU seconds of a process so far.
cpu_s() { awk -v t="$CLK_TCK" '{sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / t}' "/proc/$1/stat"; }

# ---------------------------------------------------------------- binaries
NBD_BIN=${S3BLOCK_NBD_BIN:-}
FUSE_BIN=${S3BLOCK_FUSE_BIN:-}
if [[ -z $NBD_BIN || -z $FUSE_BIN ]]; then
    say "building s3block-nbd and s3block-fuse (release)"
    (cd "$ROOT" && timeout 1800 cargo build --release -q -p s3block-nbd -p s3block-fuse) || die "cargo build failed"
    TARGET=$(cd "$ROOT" && cargo metadata --no-deps --format-version 1 | jq -r .target_directory)
    NBD_BIN=${NBD_BIN:-$TARGET/release/s3block-nbd}
    FUSE_BIN=${FUSE_BIN:-$TARGET/release/s3block-fuse}
fi
[[ -x $NBD_BIN && -x $FUSE_BIN ]] || die "missing binaries: $NBD_BIN $FUSE_BIN"

# ---------------------------------------------------------------- Garage
say "starting Garage in $S3BLOCK_GARAGE_STATE"
timeout 120 "$ROOT/scripts/garage.sh" start >"$WORK/garage-start.log" 2>&1 || die "Garage did not start; see $WORK/garage-start.log"
# shellcheck disable=SC1091
. "$S3BLOCK_GARAGE_STATE/env"
[[ ${AWS_REGION:-us-east-1} == us-east-1 ]] ||
    die "Garage signs for $AWS_REGION; s3backer with --baseURL and no --region signs for us-east-1"
GARAGE_PID=$(<"$S3BLOCK_GARAGE_STATE/garage.pid")
ENDPOINT=$S3BLOCK_TEST_S3_ENDPOINT
timeout 60 "$ROOT/scripts/garage.sh" bucket bench-s3backer >>"$WORK/garage-start.log" 2>&1 || die "could not create buckets"
printf '%s:%s\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >"$WORK/s3backer-passwd"
chmod 600 "$WORK/s3backer-passwd"
say "Garage at $ENDPOINT (pid $GARAGE_PID), buckets bench-s3block, bench-s3backer"

say "writing the nbdcopy source: $SEQ_SIZE of random bytes in $SRC"
timeout "$STEP_TIMEOUT" head -c "$SEQ_BYTES" /dev/urandom >"$SRC"

# ---------------------------------------------------------------- servers
# start_server SYS BS PREFIX: starts the server in the foreground (in the
# background of this shell, so its pid is ours) and waits until it answers.
# Sets SERVER_PID and TARGET (an NBD URI, or the FUSE file).
SERVER_PID=
TARGET=
MNT=
start_server() {
    local sys=$1 bs=$2 prefix=$3 log=$WORK/$1-$2.log sock=$WORK/$1-$2.sock
    echo "---- start $(date +%T) prefix $prefix" >>"$log"
    rm -f "$sock" # nbdkit leaves its socket behind
    case $sys in
    nbd)
        "$NBD_BIN" --socket "$sock" --endpoint "$ENDPOINT" --force-path-style --size "$SEQ_SIZE" \
            --block-size "$bs" --cache-size "$CACHE_SIZE" --stats-file "$WORK/stats-$sys-$bs" \
            --stats-interval 1 "s3://bench-s3block/$prefix/" >>"$log" 2>&1 &
        TARGET="nbd+unix:///?socket=$sock"
        ;;
    s3backer)
        # nbdkit's defaults (16 threads); s3backer's own defaults otherwise
        # (20 upload threads, 250 ms write delay, no read-ahead in NBD mode).
        nbdkit -f -U "$sock" s3backer "bucket=bench-s3backer/$prefix" "baseURL=$ENDPOINT/" \
            "accessFile=$WORK/s3backer-passwd" "size=$SEQ_SIZE" "blockSize=$bs" \
            "blockCacheSize=$((CACHE_BYTES / $(bytes "$bs")))" \
            "statsFileMirror=$WORK/stats-$sys-$bs" >>"$log" 2>&1 &
        TARGET="nbd+unix:///?socket=$sock"
        ;;
    fuse)
        MNT=$WORK/mnt-$bs
        mkdir -p "$MNT"
        "$FUSE_BIN" -f --endpoint "$ENDPOINT" --force-path-style --size "$SEQ_SIZE" --block-size "$bs" \
            --cache-size "$CACHE_SIZE" "s3://bench-s3block/$prefix/" "$MNT" >>"$log" 2>&1 &
        MOUNTS+=("$MNT")
        TARGET=$MNT/file
        ;;
    esac
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    local deadline=$((SECONDS + 60))
    while :; do
        kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 20 "$log" >&2; die "$sys exited while starting; log $log"; }
        case $sys in
        fuse) mountpoint -q "$MNT" && [[ -e $MNT/file ]] && break ;;
        *) [[ -S $sock ]] && nbdinfo --size "$TARGET" >/dev/null 2>&1 && break ;;
        esac
        ((SECONDS < deadline)) || die "$sys did not answer in 60 s; log $log"
        sleep 0.2
    done
}

# wait_exit PID: waits for a process to end, polling every 20 ms.
wait_exit() {
    local deadline=$((SECONDS + STEP_TIMEOUT))
    while kill -0 "$1" 2>/dev/null; do
        ((SECONDS < deadline)) || return 1
        sleep 0.02
    done
}

# stop_server SYS BS PHASE: stops the server (SIGTERM, or the unmount),
# which stores every written block first; records how long that took and
# keeps its final statistics.
stop_server() {
    local sys=$1 bs=$2 phase=$3 t0
    [[ $sys == fuse ]] && cp "$MNT/stats" "$WORK/stats-$sys-$bs-$phase" 2>/dev/null
    t0=$(now)
    case $sys in
    fuse) timeout "$STEP_TIMEOUT" umount "$MNT" || die "umount $MNT failed" ;;
    *) kill -TERM "$SERVER_PID" ;;
    esac
    wait_exit "$SERVER_PID" || die "$sys (pid $SERVER_PID) did not exit within ${STEP_TIMEOUT}s"
    record "$bs" "$sys" "stop_s_$phase" "$(since "$t0")"
    [[ $sys == fuse ]] || cp "$WORK/stats-$sys-$bs" "$WORK/stats-$sys-$bs-$phase" 2>/dev/null
    true
}

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# measured BS SYS JOB BYTES IOS SECS: the CPU figures of one job (the
# CPU0/GCPU0 marks were taken before it), and the throughput.
CPU0= GCPU0= LOAD0=
mark() { CPU0=$(cpu_s "$SERVER_PID"); GCPU0=$(cpu_s "$GARAGE_PID"); LOAD0=$(load1); }
measured() {
    local bs=$1 sys=$2 job=$3 io_bytes=$4 ios=$5 secs=$6 cpu gcpu gib
    cpu=$(calc "$(cpu_s "$SERVER_PID") - $CPU0")
    gcpu=$(calc "$(cpu_s "$GARAGE_PID") - $GCPU0")
    gib=$(calc "$io_bytes / 2**30")
    record "$bs" "$sys" "${job}_s" "$secs"
    record "$bs" "$sys" "${job}_bytes" "$io_bytes"
    record "$bs" "$sys" "${job}_mibps" "$(calc "f'{$io_bytes / $secs / 2**20:.1f}'")"
    record "$bs" "$sys" "${job}_iops" "$(calc "f'{$ios / $secs:.0f}'")"
    record "$bs" "$sys" "${job}_cpu_s" "$cpu"
    record "$bs" "$sys" "${job}_cpu_s_per_gib" "$(calc "f'{$cpu / $gib:.2f}'")"
    record "$bs" "$sys" "${job}_garage_cpu_s_per_gib" "$(calc "f'{$gcpu / $gib:.2f}'")"
    record "$bs" "$sys" "${job}_load_before" "$LOAD0"
    record "$bs" "$sys" "${job}_load_after" "$(load1)"
    say "  $sys $bs $job: $(calc "f'{$io_bytes / $secs / 2**20:.1f} MiB/s, {$ios / $secs:.0f} IOPS, {$secs:.1f} s, server CPU {$cpu:.2f} s ({$cpu / $gib:.2f} s/GiB), load {$LOAD0} -> $(load1)'")"
}

# fio_job BS SYS JOB ARGS...: one fio job against the running server,
# throughput over fio's job runtime (which includes the end fsync).
fio_job() {
    local bs=$1 sys=$2 job=$3 out=$WORK/fio-$2-$1-$3.json engine
    shift 3
    case $sys in
    fuse) engine=(--ioengine=libaio --direct=1 "--filename=$TARGET") ;;
    *) engine=(--ioengine=nbd "--uri=$TARGET") ;;
    esac
    mark
    # --refill_buffers: fresh random bytes for every write, as in bench/run.sh
    # (fio's default reused buffer is partly compressible, and Garage
    # compresses what it stores). --randseed: bytes of each system's own;
    # with fio's fixed seed each system wrote the bytes the one before it
    # wrote, and Garage, which keeps each distinct block once, skipped the
    # disk write of the later system's blocks (docs/BENCHMARKS.md, "every
    # write in bytes the store has not seen").
    timeout "$STEP_TIMEOUT" fio --name="$job" "${engine[@]}" --size="$SEQ_BYTES" --refill_buffers=1 \
        --randseed="$(printf '%s\n' "$sys $bs $job" | cksum | cut -d' ' -f1)" \
        --output-format=json --output="$out" "$@" >>"$WORK/fio.log" 2>&1 || die "fio $job on $sys failed; see $out"
    local secs io_bytes ios
    secs=$(jq '.jobs[0].job_runtime / 1000' "$out")
    io_bytes=$(jq '[.jobs[0].read.io_bytes, .jobs[0].write.io_bytes] | add' "$out")
    ios=$(jq '[.jobs[0].read.total_ios, .jobs[0].write.total_ios] | add' "$out")
    [[ $secs =~ ^[0-9.]+$ ]] && python3 -c "import sys; sys.exit(not $secs > 0)" || die "fio $job: no runtime; see $out"
    measured "$bs" "$sys" "$job" "$io_bytes" "$ios" "$secs"
    record "$bs" "$sys" "${job}_client_cpu_s" "$(jq '.jobs[0] | (.usr_cpu + .sys_cpu) / 100 * .job_runtime / 1000' "$out")"
}

# copy_job BS SYS JOB SOURCE DEST ARGS...: nbdcopy, timed on the wall clock.
# nbdcopy truncates a file destination (s3block-fuse's file has a fixed
# size), so s3block-fuse's file is served to nbdcopy by `nbdkit file`, whose
# CPU is the client's, as fio's is.
copy_job() {
    local bs=$1 sys=$2 job=$3 src=$4 dst=$5 t0 secs proxy= sock=$WORK/file-proxy.sock
    shift 5
    if [[ $sys == fuse ]]; then
        rm -f "$sock"
        nbdkit -f -U "$sock" file "$TARGET" >>"$WORK/nbdkit-file.log" 2>&1 &
        proxy=$!
        PIDS+=("$proxy")
        for _ in $(seq 100); do nbdinfo --size "nbd+unix:///?socket=$sock" >/dev/null 2>&1 && break; sleep 0.1; done
        [[ $src == "$TARGET" ]] && src="nbd+unix:///?socket=$sock"
        [[ $dst == "$TARGET" ]] && dst="nbd+unix:///?socket=$sock"
    fi
    mark
    t0=$(now)
    # nbdcopy opens at most --threads connections, and --threads defaults to
    # the number of CPUs.
    timeout "$STEP_TIMEOUT" nbdcopy --connections="$CONNECTIONS" --threads="$CONNECTIONS" "$@" "$src" "$dst" >>"$WORK/nbdcopy.log" 2>&1 ||
        die "nbdcopy $job on $sys failed; see $WORK/nbdcopy.log"
    secs=$(since "$t0")
    local req=$((256 << 10)) # nbdcopy's default request size
    measured "$bs" "$sys" "$job" "$SEQ_BYTES" "$((SEQ_BYTES / req))" "$secs"
    if [[ -n $proxy ]]; then
        kill "$proxy"
        wait_exit "$proxy" || die "nbdkit file (pid $proxy) did not exit"
    fi
}

job_seqwrite() { fio_job "$1" "$2" seqwrite --rw=write --bs=1M --iodepth="$SEQ_DEPTH" --end_fsync=1; }
job_seqread() { fio_job "$1" "$2" seqread --rw=read --bs=1M --iodepth="$SEQ_DEPTH"; }
job_randread() {
    fio_job "$1" "$2" randread --rw=randread --bs=4k --iodepth="$RAND_DEPTH" --time_based --runtime="$RUNTIME"
}
job_randwrite() {
    fio_job "$1" "$2" randwrite --rw=randwrite --bs=4k --iodepth="$RAND_DEPTH" --time_based \
        --runtime="$RUNTIME" --end_fsync=1
}
job_copyin() { copy_job "$1" "$2" copyin "$SRC" "$TARGET" --flush; }
job_copyout() { copy_job "$1" "$2" copyout "$TARGET" null:; }

# The systems run side by side, each on its own prefix, one job at a time:
# a job runs on every system before the next job starts (the order rotated
# from job to job), so that the load other work puts on a shared machine
# weighs on all three alike. An idle server costs nothing.
read -ra SYS_LIST <<<"${SYSTEMS//,/ }"
declare -A SPID STGT
ROT=0
use() { SERVER_PID=${SPID[$1]}; TARGET=${STGT[$1]}; }
start_all() {
    local bs=$1 sys
    for sys in "${SYS_LIST[@]}"; do
        start_server "$sys" "$bs" "nbd-$RUN_ID-$sys-$bs"
        SPID[$sys]=$SERVER_PID
        STGT[$sys]=$TARGET
    done
}
stop_all() {
    local bs=$1 phase=$2 sys
    for sys in "${SYS_LIST[@]}"; do
        use "$sys"
        stop_server "$sys" "$bs" "$phase"
    done
}
each() { # each BS JOB: the job on every system
    local bs=$1 job=$2 n=${#SYS_LIST[@]} i sys
    for ((i = 0; i < n; i++)); do
        sys=${SYS_LIST[(i + ROT) % n]}
        use "$sys"
        "job_$job" "$bs" "$sys"
    done
    ROT=$((ROT + 1))
}

run_block_size() {
    local bs=$1
    say "block size $bs: ${SYS_LIST[*]} (prefixes nbd-$RUN_ID-SYSTEM-$bs)"
    start_all "$bs"
    each "$bs" seqwrite
    stop_all "$bs" write
    drop_caches
    start_all "$bs"
    each "$bs" seqread
    each "$bs" randread
    each "$bs" randwrite
    stop_all "$bs" fio
    start_all "$bs"
    each "$bs" copyin
    stop_all "$bs" copyin
    drop_caches
    start_all "$bs"
    each "$bs" copyout
    stop_all "$bs" copyout
}

# ---------------------------------------------------------------- run
START=$(date -u +%Y-%m-%dT%H:%MZ)
for bs in ${BLOCK_SIZES//,/ }; do
    run_block_size "$bs"
done

COMMIT=${BENCH_COMMIT:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo ?)}
python3 "$ROOT/bench/report.py" "$RESULTS" --nbd --started "$START" --commit "$COMMIT" --minutes "$(((SECONDS + 59) / 60))" \
    --cache-size "$CACHE_SIZE" \
    --seq-size "$SEQ_SIZE" --runtime "$RUNTIME" --seq-depth "$SEQ_DEPTH" --rand-depth "$RAND_DEPTH" \
    --connections "$CONNECTIONS" --report "$REPORT" ${BENCH_NOTES:+--notes "$BENCH_NOTES"}
[[ $REPORT == - ]] || cp "$RESULTS" "$ROOT/bench/results-nbd-$(date -u +%Y-%m-%d).tsv"
