#!/usr/bin/env bash
# s3block beside s3backer 2.1.6 (the main peer) and s3backer 1.5.4
# (Debian's), on one Garage server on loopback, optionally behind a proxy
# that adds a round-trip time.
#
#   bench/run.sh [options]
#
#   --block-sizes LIST   block sizes to run, comma-separated (default
#                        4K,256K,1M)
#   --systems LIST       s3block,s3backer2,s3backer1 (default all three:
#                        s3block, s3backer 2.1.6, s3backer 1.5.4)
#   --parts LIST         ceiling,fio,ext4 (default all three)
#   --cache-size SIZE    cache of each daemon (default 64M)
#   --runtime SECONDS    length of each random 4K job (default 20)
#   --seq-size SIZE      size of the sequential jobs, and the region of the
#                        random ones (default 1G)
#   --small-seq-size SIZE the same below 64K blocks (default 32M: the peers
#                        read 4K blocks sequentially at well under 1 MB/s)
#   --files N            files in the small-files tree (default 20000)
#   --unpack-samples N   unpacks of the small-files tree per system and block
#                        size, each into a directory of its own on the same
#                        ext4 (default 3 from 64K blocks, 1 below); the
#                        figures are the sample of median time until stored,
#                        and every sample is kept. At 256K the same binaries
#                        made 0.78× and 1.42× of s3backer 2.1.6 in two runs
#                        of one sample; at 4K, 0.83× and 0.85×
#   --ext4-size SIZE     the ext4 volume (default 16G; 512M below 64K blocks,
#                        where the peers' mkfs deletes every block of the
#                        volume one request at a time; 2G with --rtt, where
#                        its 65,536 DELETEs at 16G and 256K would take
#                        minutes)
#   --rtt MS             round-trip time added between every daemon (and
#                        the raw ceiling) and Garage by a TCP proxy
#                        (examples/latency_proxy.rs, MS/2 each way; default
#                        0: direct)
#   --rate BYTES         with --rtt, also caps the link at BYTES per second
#                        each way, shared by every connection, as a
#                        server's network is (suffixes K, M, G; default: no
#                        cap)
#   --quickack           every client on this host ACKs each segment at once
#                        (the loopback routes get `quickack 1` for the run,
#                        put back on exit). Garage holds a response's body
#                        until its headers are ACKed, and Linux delays an
#                        ACK up to 40 ms, so without this every GET of a
#                        body under 64 KiB (4K blocks) waits about 43 ms
#                        for the peers and for the proxy of --rtt; s3block
#                        and the raw ceiling ACK at once on their own on
#                        http:// (S3BLOCK_QUICKACK=0 turns that off). A
#                        store that sends headers and body together, as a
#                        user's S3 service may, does not wait
#   --label NAME         the run's name in the report (default loopback,
#                        rtt-MSms, or rtt-MSms-RATE with --rate; -quickack
#                        added with --quickack)
#   --report FILE        splice the run's section into FILE, at the top,
#                        replacing only an earlier section of the same label
#                        (default "-": print it only)
#   --results FILE       copy the raw figures there (default: kept in the
#                        work directory only)
#   --quick              256K only, 256M sequential, 5 s random, 2,000
#                        files, 512M ext4 volume (options after it still
#                        apply, e.g. --quick --block-sizes 4K,1M)
#
# Each daemon's CPU seconds (user + system, /proc/PID/stat) are taken around
# every job and given per GiB moved; the 1-minute load average before and
# after each job is kept beside its figures.
#
# It needs root, /dev/fuse, loop devices, fio, e2fsprogs, jq, python3,
# Garage (scripts/garage.sh install), s3backer 1.5.4 for s3backer1
# (apt-get install s3backer; S3BACKER1_BIN names another) and s3backer
# 2.1.6 for s3backer2 (../shared/peers/build-s3backer.sh builds it unless
# S3BACKER2_BIN names it). It builds s3block-fuse and the raw_store and
# latency_proxy examples in release mode unless S3BLOCK_FUSE_BIN,
# S3BLOCK_RAW_STORE_BIN and S3BLOCK_PROXY_BIN name binaries (and the
# bare_fuse_file example unless S3BLOCK_BARE_FUSE_BIN names it). Everything it
# starts (Garage, the daemons, the proxy, loop devices, mounts) is undone
# on exit, also on error or Ctrl-C. Each step runs under `timeout`. Each
# block size runs on a Garage of its own, started fresh: a store pays for
# deletes partly on later writes, and the peers' mkfs.ext4 deletes every
# block of its volume.
# BENCH_NOTES=FILE appends that text (the analysis of a run) to the report.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BLOCK_SIZES=4K,256K,1M
SYSTEMS=s3block,s3backer2,s3backer1
PARTS=ceiling,fio,ext4
CACHE_SIZE=64M
RUNTIME=20
SEQ_SIZE=1G
SMALL_SEQ_SIZE=32M
FILES=20000
EXT4_SIZE=
UNPACK_SAMPLES=
RTT=0
RATE=
QUICKACK=0
LABEL=
REPORT=-
RESULTS_OUT=-
VOLUME_SIZE=16G
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
    --small-seq-size) SMALL_SEQ_SIZE=$2; shift ;;
    --files) FILES=$2; shift ;;
    --ext4-size) EXT4_SIZE=$2; shift ;;
    --unpack-samples) UNPACK_SAMPLES=$2; shift ;;
    --rtt) RTT=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --quickack) QUICKACK=1 ;;
    --label) LABEL=$2; shift ;;
    --report) REPORT=$2; shift ;;
    --results) RESULTS_OUT=$2; shift ;;
    --quick) BLOCK_SIZES=256K SEQ_SIZE=256M RUNTIME=5 FILES=2000 EXT4_SIZE=512M ;;
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
[[ -z $UNPACK_SAMPLES || $UNPACK_SAMPLES =~ ^[1-9][0-9]*$ ]] ||
    die "--unpack-samples takes a whole number of unpacks, 1 or more, not '$UNPACK_SAMPLES'"

((EUID == 0)) || die "run as root (FUSE mounts, loop devices, drop_caches)"
for tool in fio mkfs.ext4 e2fsck losetup python3 jq; do
    command -v $tool >/dev/null || die "$tool is missing (apt-get install -y fio e2fsprogs jq)"
done
[[ -e /dev/fuse ]] || die "/dev/fuse is missing"
for sys in ${SYSTEMS//,/ }; do
    case $sys in s3block | s3backer1 | s3backer2) ;; *) die "unknown system $sys (s3block, s3backer2, s3backer1)" ;; esac
done
[[ $RTT =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--rtt $RTT: give milliseconds (0: direct)"
if [[ -n $RATE ]]; then
    [[ $RTT != 0 ]] || die "--rate $RATE needs --rtt (the cap is applied by the latency proxy)"
    [[ $RATE =~ ^[1-9][0-9]*[KkMmGg]?$ ]] || die "--rate $RATE: give bytes per second, e.g. 12M"
fi
QUICKACK_SUFFIX=
((QUICKACK)) && QUICKACK_SUFFIX=-quickack
LABEL=${LABEL:-$(python3 -c "import sys; r = float(sys.argv[1]); print('loopback' if r == 0 else f'rtt-{r:g}ms')" "$RTT")${RATE:+-$RATE}$QUICKACK_SUFFIX}
CACHE_BYTES=$(bytes "$CACHE_SIZE")
SEQ_BYTES=$(bytes "$SEQ_SIZE")
CLK_TCK=$(getconf CLK_TCK)
S3BACKER1=${S3BACKER1_BIN:-}
S3BACKER2=${S3BACKER2_BIN:-}
if has "$SYSTEMS" s3backer1; then
    S3BACKER1=${S3BACKER1:-$(command -v s3backer || true)}
    [[ -x $S3BACKER1 ]] || die "s3backer 1.5.4 is missing (apt-get install -y s3backer, or S3BACKER1_BIN=PATH)"
    [[ $("$S3BACKER1" --version 2>&1 || true) == *1.5.* ]] || say "warning: $S3BACKER1 is not s3backer 1.5.x"
fi
if has "$SYSTEMS" s3backer2; then
    if [[ -z $S3BACKER2 ]]; then
        S3BACKER2=$("$ROOT/../shared/peers/build-s3backer.sh" | tail -n1) ||
            die "could not build s3backer 2.1.6 (../shared/peers/build-s3backer.sh), or give S3BACKER2_BIN=PATH"
    fi
    [[ -x $S3BACKER2 ]] || die "missing s3backer 2.1.6 binary: $S3BACKER2"
    [[ $("$S3BACKER2" --version 2>&1 || true) == *2.1.6* ]] || say "warning: $S3BACKER2 is not s3backer 2.1.6"
fi

WORK=$(mktemp -d /tmp/s3block-bench.XXXXXX)
RESULTS=$WORK/results.tsv
: >"$RESULTS"
export S3BLOCK_GARAGE_STATE=$WORK/garage S3BLOCK_TEST_S3_BUCKET=bench-s3block
PIDS=()   # daemons we started
LOOPS=()  # loop devices we attached
MOUNTS=() # mount points we mounted (FUSE and ext4)
FILES_MADE=() # files to delete (the RAM-backed ext4 image)
ROUTES=()     # loopback routes given quickack 1, as they were

cleanup() {
    local rc=$? m l p
    set +e
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        m=${MOUNTS[i]}
        mountpoint -q "$m" && { umount "$m" 2>/dev/null || umount -l "$m"; }
    done
    for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done
    for f in "${FILES_MADE[@]}"; do rm -f "$f"; done
    # Newest first: the daemons, then the proxy they store through.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        p=${PIDS[i]}
        kill -0 "$p" 2>/dev/null && { kill "$p"; timeout 60 tail --pid="$p" -f /dev/null; }
    done
    "$ROOT/scripts/garage.sh" stop >/dev/null 2>&1
    for r in "${ROUTES[@]}"; do
        # shellcheck disable=SC2086 # a route's words, as ip printed them
        ip route change table local $r quickack 0 || say "could not put back the route: $r (table local)"
    done
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
# cpu_s PID: user + system CPU seconds of a process so far (fields 14 and
# 15 of /proc/PID/stat, counted after the command name).
cpu_s() { awk -v t="$CLK_TCK" '{sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / t}' "/proc/$1/stat"; }
is_s3backer() { [[ $1 == s3backer* ]]; }

# ---------------------------------------------------------------- binaries
FUSE_BIN=${S3BLOCK_FUSE_BIN:-}
RAW_BIN=${S3BLOCK_RAW_STORE_BIN:-}
PROXY_BIN=${S3BLOCK_PROXY_BIN:-}
BARE_BIN=${S3BLOCK_BARE_FUSE_BIN:-}
if [[ -z $FUSE_BIN || -z $RAW_BIN || -z $PROXY_BIN || -z $BARE_BIN ]]; then
    say "building s3block-fuse and the raw_store, latency_proxy and bare_fuse_file examples (release)"
    (cd "$ROOT" && timeout 1800 cargo build --release -q -p s3block-fuse &&
        timeout 1800 cargo build --release -q -p s3block-examples --example raw_store --example latency_proxy \
            --example bare_fuse_file) ||
        die "cargo build failed"
    TARGET=$(cd "$ROOT" && cargo metadata --no-deps --format-version 1 | jq -r .target_directory)
    FUSE_BIN=${FUSE_BIN:-$TARGET/release/s3block-fuse}
    RAW_BIN=${RAW_BIN:-$TARGET/release/examples/raw_store}
    PROXY_BIN=${PROXY_BIN:-$TARGET/release/examples/latency_proxy}
    BARE_BIN=${BARE_BIN:-$TARGET/release/examples/bare_fuse_file}
fi
[[ -x $FUSE_BIN && -x $RAW_BIN && -x $PROXY_BIN && -x $BARE_BIN ]] ||
    die "missing binaries: $FUSE_BIN $RAW_BIN $PROXY_BIN $BARE_BIN"

# ---------------------------------------------------------------- Garage
# s3backer 1.5.4 switches to virtual-host URLs whenever --region is given,
# so it runs without one, which means us-east-1: this Garage answers to that
# region. garage.sh writes "garage"; we restart its server with the region
# changed (the layout, key and buckets live in its metadata and survive).
# start_store starts a Garage of its own in $S3BLOCK_GARAGE_STATE (and the
# latency proxy in front of it with --rtt), and sets ENDPOINT, GARAGE_PID
# and the keys for the daemons.
start_store() {
    say "starting Garage in $S3BLOCK_GARAGE_STATE"
    timeout 120 "$ROOT/scripts/garage.sh" start >>"$WORK/garage-start.log" 2>&1 || die "Garage did not start; see $WORK/garage-start.log"
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
    GARAGE_PID=$(<"$S3BLOCK_GARAGE_STATE/garage.pid")

    # With --rtt, every daemon and the raw ceiling reach Garage through one
    # proxy that holds each chunk RTT/2 in each direction (pipelined, so the
    # throughput of a connection is not one chunk per round trip).
    if [[ $RTT != 0 ]]; then
        # A restarted proxy must not be read from the last one's file.
        rm -f "$WORK/proxy.out"
        "$PROXY_BIN" --listen 127.0.0.1:0 --upstream "$hp" --delay-ms "$(calc "$RTT / 2")" ${RATE:+--rate "$RATE"} \
            >"$WORK/proxy.out" 2>"$WORK/proxy.log" &
        PROXY_PID=$!
        PIDS+=("$PROXY_PID")
        for _ in $(seq 100); do grep -q '^LISTEN ' "$WORK/proxy.out" 2>/dev/null && break; sleep 0.1; done
        grep -q '^LISTEN ' "$WORK/proxy.out" || die "the latency proxy did not start; see $WORK/proxy.log"
        ENDPOINT=http://$(awk '/^LISTEN / {print $2; exit}' "$WORK/proxy.out")
        say "latency proxy (pid $PROXY_PID) at $ENDPOINT: ${RTT} ms round trip to Garage${RATE:+, a link of $RATE bytes/s each way}"
    fi
}

# stop_store stops the proxy and Garage and throws Garage's state away.
stop_store() {
    if [[ -n ${PROXY_PID:-} ]] && kill -0 "$PROXY_PID" 2>/dev/null; then
        kill "$PROXY_PID"
        timeout 30 tail --pid="$PROXY_PID" -f /dev/null
    fi
    timeout 120 "$ROOT/scripts/garage.sh" stop >>"$WORK/garage-start.log" 2>&1 || die "Garage did not stop"
    rm -rf "$S3BLOCK_GARAGE_STATE"
}

start_store
record - setup rtt_ms "$RTT"
record - setup fresh_garage_per_block_size 1
record - setup bytes_of_their_own 1

# With --quickack, the loopback routes (every connection of the run: the
# daemons, the raw ceiling and the proxy to Garage) ACK at once.
if ((QUICKACK)); then
    command -v ip >/dev/null || die "--quickack needs ip (apt-get install -y iproute2)"
    while read -r r; do
        # shellcheck disable=SC2086 # a route's words, as ip printed them
        ip route change table local $r quickack 1 || die "could not set quickack on the route: $r (table local)"
        ROUTES+=("$r")
    done < <(ip route show table local | grep -E '^local 127\.' | grep -v quickack)
    ((${#ROUTES[@]})) || die "--quickack: no loopback route without quickack in table local"
    say "quickack on ${#ROUTES[@]} loopback routes until the run ends"
fi
record - setup quickack "$QUICKACK"
[[ -z $RATE ]] || record - setup link_bytes_per_s "$(bytes "$RATE")"

# fio's own start and exit: the wall time of a 1 MiB write job on tmpfs
# less its job runtime, the median of three. The report takes it out of the
# "first write to stored" figures, so that they time the daemon from the
# first write, as the raw ceiling times the store from the first PUT; the
# close, in which s3backer 2.1.6 stores what it holds, stays counted.
fio_start_exit() {
    local dir t0 wall secs times=()
    dir=$(mktemp -d /dev/shm/s3block-bench-fio.XXXXXX)
    for _ in 1 2 3; do
        t0=$(now)
        fio --name=start --filename="$dir/file" --fallocate=none --ioengine=psync --rw=write --bs=1M \
            --size=1M --end_fsync=1 --output-format=json --output="$dir/out.json" >/dev/null ||
            die "fio failed on $dir (tmpfs)"
        wall=$(since "$t0")
        secs=$(jq '.jobs[0].job_runtime / 1000' "$dir/out.json")
        times+=("$(calc "round(max(0, $wall - $secs), 3)")")
    done
    rm -rf "$dir"
    FIO_START_EXIT=$(printf '%s\n' "${times[@]}" | sort -g | sed -n 2p)
}
fio_start_exit
record - setup fio_start_exit_s "$FIO_START_EXIT"
say "fio's own start and exit: $FIO_START_EXIT s"

# ---------------------------------------------------------------- daemons
# mount_volume SYSTEM BS PREFIX MNT: starts the daemon in the foreground (in
# the background of this shell, so its pid is ours), waits for the file.
DAEMON_PID=
mount_volume() {
    local sys=$1 bs=$2 prefix=$3 mnt=$4 size=${5:-$VOLUME_SIZE} log=$WORK/$1-$2-$3.log bin
    mkdir -p "$mnt"
    case $sys in
    s3block)
        "$FUSE_BIN" -f --endpoint "$ENDPOINT" --force-path-style --size "$size" --block-size "$bs" \
            --cache-size "$CACHE_SIZE" "s3://bench-s3block/$prefix/" "$mnt" >>"$log" 2>&1 &
        ;;
    s3backer1 | s3backer2)
        # Each version on its own prefix of one bucket; its options at
        # their defaults but for the cache (in blocks).
        if [[ $sys == s3backer1 ]]; then bin=$S3BACKER1; else bin=$S3BACKER2; fi
        "$bin" -f --baseURL="$ENDPOINT/" --accessFile="$WORK/s3backer-passwd" --blockSize="$bs" \
            --size="$size" --blockCacheSize=$((CACHE_BYTES / $(bytes "$bs"))) --prefix="$prefix/" \
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

# wait_clean polls a daemon's stats until no dirty block is left, so its
# figures can be given up to the point the data is really in the store.
# s3backer's fsync does not wait for its uploads (its fsync leaves dirty
# blocks). s3block's does, but a sync of ext4 writes some of its metadata to
# the loop device after the last flush (the superblock and the inode tables
# it has just journalled: 42 blocks of 256K after the unpack), and those wait
# for the write delay like any other write.
wait_clean() {
    local sys=$1 mnt=$2 deadline=$((SECONDS + STEP_TIMEOUT)) clean
    if is_s3backer "$sys"; then
        clean='^block_cache_dirty_ratio +0\.0000'
    else
        clean='^dirty +0 blocks, 0 bytes; 0 uploads in flight'
    fi
    until grep -Eq "$clean" "$mnt/stats"; do
        ((SECONDS < deadline)) || die "$sys still has dirty blocks after ${STEP_TIMEOUT}s"
        sleep 0.1
    done
}

# requests BS SYSTEM LABEL MNT: records the requests made since the mount
# finished (its own requests, lock and descriptor, are not counted).
requests() {
    local bs=$1 sys=$2 label=$3 mnt=$4 f=$WORK/stats-$2-$1-$3.txt base=$WORK/stats-base-$DAEMON_PID.txt k name
    cat "$mnt/stats" >"$f"
    for k in get put delete; do
        if is_s3backer "$sys"; then name=http_${k}s; else name=${k^^}; fi
        record "$bs" "$sys" "${k}s_$label" "$(awk -v k="$name" '$1 == k && $2 ~ /^[0-9,]+$/ {gsub(",", "", $2); n[FILENAME] = $2}
            END {print n[ARGV[2]] - n[ARGV[1]]}' "$base" "$f")"
    done
    # Why s3block's uploads started (the mount's counters from its start):
    # written whole, after the write delay, for a flush, over the dirty limit.
    if ! is_s3backer "$sys"; then
        for k in written_whole delay flush dirty_limit; do
            record "$bs" "$sys" "uploads_${k}_$label" "$(jq ".write_back.started.$k // 0" "$mnt/stats.json")"
        done
    fi
}

# counter SYSTEM MOUNT NAME: one counter from the daemon's stats file: get,
# put (requests so far) or received (s3block's bytes of response bodies;
# s3backer counts none: empty).
counter() {
    local name
    case $(is_s3backer "$1" && echo s3backer)$3 in
    s3backerget) name=http_gets ;; s3backerput) name=http_puts ;; s3backerreceived) return 0 ;;
    get) name=GET ;; put) name=PUT ;;
    received) awk '$1 == "bytes" && $2 == "received" {gsub(",", "", $3); print $3; exit}' "$2/stats"; return ;;
    esac
    # (s3block's "GET time" lines share the first word: the count is a number.)
    awk -v k="$name" '$1 == k && $2 ~ /^[0-9,]+$/ {gsub(",", "", $2); n = $2} END {print n + 0}' "$2/stats"
}

# put_count SYSTEM MOUNT: the PUTs the daemon has made since it started.
put_count() { counter "$1" "$2" put; }

# CPU and load around a job: cpu_mark before it, cpu_done BS SYSTEM JOB
# BYTES after it (after its data is stored, for writes) records the
# daemon's CPU seconds, per GiB of BYTES, and the load before and after.
CPU0='' LOAD0='' GCPU0=''
cpu_mark() {
    store_quiet
    CPU0=$(cpu_s "$DAEMON_PID")
    GCPU0=$(cpu_s "$GARAGE_PID")
    LOAD0=$(load1)
}

# store_quiet: waits until Garage has used under 5% of a CPU for a whole
# second, at most a minute, so that no job pays for the one before it.
# Garage goes on working for seconds after a burst of writes or deletes (by
# a profile, its tables' Merkle trees in the background): 5.4 CPU seconds in
# the 5 s after the 4K ceiling's 32,768 PUTs, GETs and DELETEs, which fell
# on the first system's sequential write and took it from about 5 MB/s to
# 2.5. (Part of a delete's cost comes later still, on the next writes
# after Garage is quiet: the ceiling no longer deletes; see run_ceiling.)
# QUIET_WAITED holds the seconds waited.
QUIET_WAITED=0
store_quiet() {
    local t0 a b
    t0=$(now)
    for _ in $(seq 60); do
        a=$(cpu_s "$GARAGE_PID")
        sleep 1
        b=$(cpu_s "$GARAGE_PID")
        if python3 -c "import sys; sys.exit(not $b - $a < 0.05)"; then
            QUIET_WAITED=$(since "$t0")
            return 0
        fi
    done
    QUIET_WAITED=$(since "$t0")
    say "  Garage still busy after ${QUIET_WAITED} s; going on"
}
cpu_done() {
    local bs=$1 sys=$2 job=$3 moved=$4 cpu gcpu
    cpu=$(calc "round($(cpu_s "$DAEMON_PID") - $CPU0, 2)")
    gcpu=$(calc "round($(cpu_s "$GARAGE_PID") - $GCPU0, 2)")
    record "$bs" "$sys" "${job}_cpu_s" "$cpu"
    record "$bs" "$sys" "${job}_moved_bytes" "$moved"
    record "$bs" "$sys" "${job}_cpu_s_per_gib" "$(calc "round($cpu / ($moved / 2**30), 3)")"
    record "$bs" "$sys" "${job}_garage_cpu_s_per_gib" "$(calc "round($gcpu / ($moved / 2**30), 3)")"
    record "$bs" "$sys" "${job}_load_before" "$LOAD0"
    record "$bs" "$sys" "${job}_settle_s" "$QUIET_WAITED"
    record "$bs" "$sys" "${job}_load_after" "$(load1)"
    say "    CPU $cpu s ($(calc "round($cpu / ($moved / 2**30), 2)") s/GiB), Garage $gcpu s, load $LOAD0 -> $(load1), Garage settled in ${QUIET_WAITED} s before"
}

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# What the write jobs that reach the store write: fresh random bytes for
# every request, as raw_store's objects are. fio's default reuses one
# buffer with a few bytes changed per write, which zstd shrinks by about
# 7%; Garage compresses what it stores, and spent 60% more CPU on those
# buffers (3.97 s against 2.5 s per 256 MiB written in 1 MiB blocks), which
# moved both daemons' write figures against a ceiling measured on random
# bytes.
STORED_DATA=(--refill_buffers=1)

# seed_for WORDS...: a seed of its own for each system, block size and job.
# fio seeds its generator the same way in every run, so without one the
# second system at a block size wrote the very bytes the first had written,
# and the unpacks all unpacked the same files. Garage keeps each distinct
# block once, under its hash, so a PUT of bytes it already holds skips its
# disk write: through 20 ms at 1M, Garage spent 8.6 to 9.1 CPU seconds per
# GiB of s3block's sequential write and 5.1 to 5.7 of s3backer 2.1.6's,
# which ran second, and a profile of Garage put 27% of its samples during
# s3block's write in the copy into its data files and none during
# s3backer's. With a seed each, every write is of bytes the store has not
# seen, as a user's are.
seed_for() { printf '%s\n' "$*" | cksum | cut -d' ' -f1; }

# tree_for SYSTEM SAMPLE: the small-files tree for that unpack, made on
# first use: the same names and sizes for every unpack, contents of its own.
tree_for() {
    local t=$WORK/tree-$1-$2.tar
    [[ -s $t ]] || python3 "$ROOT/bench/make-tree.py" "$t" "$FILES" "$(seed_for tree "$1" "$2")" ||
        die "bench/make-tree.py failed"
    printf '%s\n' "$t"
}

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
    JOB_BYTES=$io_bytes JOB_IOS=$ios
    record "$bs" "$sys" "${metric}_ios" "$ios"
    record "$bs" "$sys" "${metric}_s" "$secs"
    # The wall time counts the close too: s3backer 2.1.6 stores its dirty
    # blocks when fio closes the file, after fio's job runtime ends.
    record "$bs" "$sys" "${metric}_wall_s" "$wall"
    record "$bs" "$sys" "${metric}_bytes" "$io_bytes"
    record "$bs" "$sys" "${metric}_fio_overhead_s" "$(python3 -c "print(f'{$wall - $secs:.3f}')")"
    record "$bs" "$sys" "${metric}_mbps" "$(python3 -c "print(f'{$io_bytes / $secs / 1e6:.1f}')")"
    record "$bs" "$sys" "${metric}_iops" "$(python3 -c "print(f'{$ios / $secs:.0f}')")"
    say "  $sys $bs $metric: $(python3 -c "print(f'{$io_bytes / $secs / 1e6:.1f} MB/s, {$ios / $secs:.0f} IOPS, {$secs:.1f} s')")"
}

# ---------------------------------------------------------------- parts
run_ceiling() {
    local bs=$1 size count
    size=$(bytes "$bs")
    # 512 MiB of objects, at most 32,768 (128 MiB at 4K: the small objects
    # are limited by requests, not bytes).
    count=$((512 * 1024 * 1024 / size))
    ((count <= 32768)) || count=32768
    # raw_store keeps as many requests in flight as s3block does at this
    # block size (s3block_cache::default_requests_in_flight).
    # Above 64K it also times one-at-a-time GETs of 64 KiB ranges, what
    # s3block's ranged reads fetch per miss (s3block-cache's RANGE_ALIGN).
    local ranged=()
    ((size > 65536)) && ranged=(--single-range 64K)
    # The objects stay (--keep): Garage pays for deletes later, on the next
    # writes, even after it has gone quiet. With the ceiling's 32,768
    # DELETEs at 4K, the first system's sequential write took 2 s more of
    # Garage's CPU than the second's, whichever system went first (by hand:
    # 972 against 688 ticks, then 895 against 731 with the order swapped;
    # after a ceiling that kept its objects, 766 and 762). The fixed order
    # made that s3block's every time: 5.0 MB/s against s3backer 2.1.6's
    # 5.9 at 4K, and 5.9 against 4.6 with the order swapped.
    say "raw store ceiling at $bs: $count objects"
    store_quiet
    timeout "$STEP_TIMEOUT" "$RAW_BIN" --endpoint "$ENDPOINT" --force-path-style --object-size "$bs" \
        --count "$count" --cold --keep --settle-pid "$GARAGE_PID" "${ranged[@]}" "s3://bench-raw/raw-$bs/" \
        >"$WORK/raw-$bs.txt" ||
        die "raw_store failed; see $WORK/raw-$bs.txt"
    cat "$WORK/raw-$bs.txt" >&2
    local line m
    line=$(grep '^RESULT' "$WORK/raw-$bs.txt")
    # Each figure of the RESULT line, recorded under raw_ and its name.
    local figures=(put_mbps get_mbps single_get_ops in_flight single_get_p50_ms)
    ((${#ranged[@]})) && figures+=(single_range_ops single_range_p50_ms single_range_p90_ms)
    for m in "${figures[@]}"; do
        record "$bs" ceiling "raw_$m" "$(sed "s/.* $m=\([0-9.]*\).*/\1/" <<<"$line")"
    done
}

# The memory store through FUSE, on three fresh mounts, then the same jobs
# on a bare in-memory FUSE file (examples/bare_fuse_file.rs: the same FUSE
# settings, nothing behind them but one buffer); the median of each figure
# is recorded. The writes' speed is mostly that of faulting in fresh memory,
# which varies by a fifth or more from run to run on a virtual machine.
run_memory_fuse() {
    local mnt=$WORK/mnt-memory r m pid
    say "memory store through FUSE (1M, direct I/O), three mounts"
    for r in 1 2 3; do
        mount_volume memory 1M "mem$r" "$mnt"
        fio_job 1M memory "mem_write_$r" "$mnt/file" --rw=write --bs=1M --size=2G --direct=1
        fio_job 1M memory "mem_read_$r" "$mnt/file" --rw=read --bs=1M --size=2G --direct=1
        unmount_volume 1M memory "mem$r" "$mnt"
    done
    say "bare in-memory FUSE file (1M, direct I/O), three mounts"
    mkdir -p "$mnt"
    for r in 1 2 3; do
        "$BARE_BIN" "$mnt" 2G >"$WORK/bare-$r.log" 2>&1 &
        pid=$!
        PIDS+=("$pid")
        MOUNTS+=("$mnt")
        for _ in $(seq 100); do [[ -e $mnt/file ]] && break; sleep 0.1; done
        [[ -e $mnt/file ]] || die "bare_fuse_file did not mount; see $WORK/bare-$r.log"
        fio_job 1M memory "bare_write_$r" "$mnt/file" --rw=write --bs=1M --size=2G --direct=1
        fio_job 1M memory "bare_read_$r" "$mnt/file" --rw=read --bs=1M --size=2G --direct=1
        fusermount -u "$mnt" || die "cannot unmount the bare FUSE file at $mnt"
        timeout 60 tail --pid="$pid" -f /dev/null || die "bare_fuse_file (pid $pid) did not exit"
    done
    for m in mem_write mem_read bare_write bare_read; do
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
    sync
    timed - native untar sh -c "tar -xf '$TREE' -C '$fsmnt' && sync -f '$fsmnt'"
    umount "$fsmnt"
    losetup -d "$loop"
    rm -f "$img"
}

# Sequential write (cold); remount (cold): sequential read; remount (cold):
# random 4K read, then random 4K write with an fsync at the end. Each
# system on its own prefix; "cold": after the page cache is dropped.
run_fio() {
    local bs=$1 sys=$2 mnt=$WORK/mnt-$2-$1 f prefix=$2-fio-$1 SEQ_BYTES=$SEQ_BYTES
    f=$mnt/file
    (($(bytes "$bs") >= 65536)) || SEQ_BYTES=$(bytes "$SMALL_SEQ_SIZE")
    record "$bs" setup seq_bytes "$SEQ_BYTES"
    say "fio on $sys at $bs ($SEQ_BYTES bytes sequential)"
    # Each system's write starts from the same cold page cache. Garage's
    # state before it differs otherwise: the first system follows the
    # ceiling's GETs (which dropped the page cache), the second the first
    # system's ext4 part, and the first one's write cost Garage 14% more CPU
    # per GiB at 256K and 1M in the nineteenth run. By hand, 256 MiB at
    # 256K with a drop before each write: s3block 2.20 and 2.27 s,
    # s3backer 2.1.6 2.61 and 2.65 s, alternating.
    drop_caches
    mount_volume "$sys" "$bs" "$prefix" "$mnt"
    cpu_mark
    fio_job "$bs" "$sys" seqwrite "$f" --rw=write --bs=1M --size="$SEQ_BYTES" --end_fsync=1 "${STORED_DATA[@]}" \
        --randseed="$(seed_for "$sys" "$bs" seqwrite)"
    local t0
    t0=$(now)
    wait_clean "$sys" "$mnt"
    record "$bs" "$sys" seqwrite_clean_extra_s "$(since "$t0")"
    cpu_done "$bs" "$sys" seqwrite "$JOB_BYTES"
    requests "$bs" "$sys" seqwrite "$mnt"
    unmount_volume "$bs" "$sys" seqwrite "$mnt"
    drop_caches
    mount_volume "$sys" "$bs" "$prefix" "$mnt"
    cpu_mark
    fio_job "$bs" "$sys" seqread "$f" --rw=read --bs=1M --size="$SEQ_BYTES"
    cpu_done "$bs" "$sys" seqread "$JOB_BYTES"
    unmount_volume "$bs" "$sys" seqread "$mnt"
    drop_caches
    mount_volume "$sys" "$bs" "$prefix" "$mnt"
    local g0 b0
    g0=$(counter "$sys" "$mnt" get) b0=$(counter "$sys" "$mnt" received)
    cpu_mark
    fio_job "$bs" "$sys" randread "$f" --rw=randread --bs=4k --size="$SEQ_BYTES" --time_based --runtime="$RUNTIME"
    cpu_done "$bs" "$sys" randread "$JOB_BYTES"
    # What a cold random 4K read downloads: s3block counts the bytes it
    # received; s3backer counts none, so its GETs times the block size
    # (every GET of s3backer is of a whole block).
    # The stats as the job left them, kept with the run's logs: how many
    # fetches were ranged, and the hit ratio, say why the bytes are what
    # they are.
    cat "$mnt/stats" >"$WORK/stats-$sys-$bs-randread.txt"
    local gets
    gets=$(($(counter "$sys" "$mnt" get) - g0))
    record "$bs" "$sys" randread_gets "$gets"
    if [[ -n $b0 ]]; then
        record "$bs" "$sys" randread_bytes_per_read "$(calc "round(($(counter "$sys" "$mnt" received) - $b0) / $JOB_IOS)")"
        # The misses that waited for a whole block instead of fetching a
        # part (the volume was mounted for this job, so they are its own).
        record "$bs" "$sys" randread_whole_fetches "$(jq '[.reads.whole_block[]] | add // 0' "$mnt/stats.json")"
    else
        record "$bs" "$sys" randread_bytes_per_read "$(calc "round($gets * $(bytes "$bs") / $JOB_IOS)")"
    fi
    cpu_mark
    fio_job "$bs" "$sys" randwrite "$f" --rw=randwrite --bs=4k --size="$SEQ_BYTES" --time_based \
        --runtime="$RUNTIME" --end_fsync=1 "${STORED_DATA[@]}" --randseed="$(seed_for "$sys" "$bs" randwrite)"
    t0=$(now)
    wait_clean "$sys" "$mnt"
    record "$bs" "$sys" randwrite_clean_extra_s "$(since "$t0")"
    cpu_done "$bs" "$sys" randwrite "$JOB_BYTES"
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
    local bs=$1 sys=$2 mnt=$WORK/mnt-$2-$1 fsmnt=$WORK/ext4-$2-$1 loop size=$EXT4_SIZE
    if [[ -z $size ]]; then
        if (($(bytes "$bs") < 65536)); then
            size=512M
        elif [[ $RTT != 0 ]]; then
            size=2G
        else
            size=$VOLUME_SIZE
        fi
    fi
    say "ext4 on $sys at $bs ($size volume)"
    record "$bs" "$sys" ext4_volume_bytes "$(bytes "$size")"
    mount_volume "$sys" "$bs" "$sys-ext4-$bs" "$mnt" "$size"
    loop=$(losetup --find --show "$mnt/file") || die "losetup on $mnt/file failed"
    LOOPS+=("$loop")
    timed "$bs" "$sys" mkfs mkfs.ext4 -q -F "$loop"
    mkdir -p "$fsmnt"
    mount "$loop" "$fsmnt"
    MOUNTS+=("$fsmnt")
    local samples=$UNPACK_SAMPLES i t1 extra puts0 totals='' median tree
    if [[ -z $samples ]]; then
        samples=1
        (($(bytes "$bs") < 65536)) || samples=3
    fi
    record "$bs" "$sys" untar_samples "$samples"
    for ((i = 1; i <= samples; i++)); do
        tree=$(tree_for "$sys" "$i")
        puts0=$(put_count "$sys" "$mnt")
        # The untar syncs its own filesystem, not the host's: a plain `sync`
        # also waits for every dirty page of the host, such as Garage's files
        # from the jobs before it (gigabytes after the random write), and the
        # unpack took 4.8 s instead of 1.2 s. Those are flushed before the
        # clock starts; the ext4's sync flushes the loop device, so the daemon
        # gets the same fsync as from a plain `sync`.
        sync
        cpu_mark
        timed "$bs" "$sys" "untar_$i" sh -c "mkdir '$fsmnt/$i' && tar -xf '$tree' -C '$fsmnt/$i' && sync -f '$fsmnt'"
        # Either daemon may hold blocks dirty after the sync (see wait_clean):
        # the time until it does not, too.
        t1=$(now)
        wait_clean "$sys" "$mnt"
        extra=$(since "$t1")
        # (timed's figure is the last line of the results.)
        totals+="$(calc "$(tail -n1 "$RESULTS" | cut -f4) + $extra") $i"$'\n'
        record "$bs" "$sys" "untar_${i}_clean_extra_s" "$extra"
        cpu_done "$bs" "$sys" "untar_$i" "$(stat -c %s "$tree")"
        record "$bs" "$sys" "puts_untar_$i" "$(($(put_count "$sys" "$mnt") - puts0))"
    done
    # The sample of median time until stored gives the untar figures.
    median=$(printf '%s' "$totals" | sort -g | sed -n "$(((samples + 1) / 2))p" | cut -d' ' -f2)
    [[ -n $median ]] || die "no unpack samples recorded for $sys at $bs"
    awk -F'\t' -v OFS='\t' -v bs="$bs" -v sys="$sys" -v m="$median" '$1 == bs && $2 == sys {
            if (index($3, "untar_" m "_") == 1) { $3 = "untar_" substr($3, length("untar_" m "_") + 1); print }
            else if ($3 == "puts_untar_" m) { $3 = "puts_untar"; print } }' "$RESULTS" >"$WORK/median.tsv"
    cat "$WORK/median.tsv" >>"$RESULTS"
    record "$bs" "$sys" untar_median_sample "$median"
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
# Each block size after the first gets a Garage of its own. A store pays
# for deletes partly later, on the next writes: before this, the 256K
# jobs came right after the peers' 4K mkfs.ext4, which deleted 263,208
# objects, and the first system's 256K write ran at 155 MB/s where the
# same binary wrote 197 to 229 MB/s on a fresh Garage (2026-12-04).
first_size=1
for bs in ${BLOCK_SIZES//,/ }; do
    if ((!first_size)); then
        say "a fresh Garage for $bs"
        stop_store
        start_store
    fi
    first_size=0
    if has "$PARTS" ceiling; then run_ceiling "$bs"; fi
    for sys in ${SYSTEMS//,/ }; do
        if has "$PARTS" fio; then run_fio "$bs" "$sys"; fi
        if has "$PARTS" ext4; then run_ext4 "$bs" "$sys"; fi
    done
done

COMMIT=${BENCH_COMMIT:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo ?)}
python3 "$ROOT/bench/report.py" "$RESULTS" --round2 --label "$LABEL" --rtt "$RTT" --rate "$RATE" --started "$START" \
    --commit "$COMMIT" --minutes "$(((SECONDS + 59) / 60))" --cache-size "$CACHE_SIZE" --seq-size "$SEQ_SIZE" \
    --runtime "$RUNTIME" --files "$FILES" --report "$REPORT" ${BENCH_NOTES:+--notes "$BENCH_NOTES"}
[[ $RESULTS_OUT == - ]] || cp "$RESULTS" "$RESULTS_OUT"
