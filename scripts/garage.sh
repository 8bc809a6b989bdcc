#!/usr/bin/env bash
# A single-node Garage S3 server on loopback for the s3block tests.
#
#   scripts/garage.sh install        build Garage once into the cache (~10 min on 2 cores)
#   scripts/garage.sh start          start it, create a bucket and a key, write the env file
#   scripts/garage.sh bucket NAME..  create more buckets the test key can use
#   scripts/garage.sh status         exit 0 when a started server answers
#   scripts/garage.sh env            print the env file's path (`. "$(scripts/garage.sh env)"`)
#   scripts/garage.sh stop           stop the server and delete its data
#
# Settings (environment):
#   S3BLOCK_GARAGE_STATE  directory for config, data, log, pid and env file
#                         (default /tmp/s3block-garage); set it to run more than one
#   S3BLOCK_GARAGE_CACHE  where the Garage binary is cached (default ~/.cache/s3block)
#   S3BLOCK_GARAGE_REGION the region the server signs for (default us-east-1, which s3backer uses)
#   S3BLOCK_TEST_S3_BUCKET  name of the first bucket (default s3block-test)
set -euo pipefail

GARAGE_VERSION=2.5.0
CACHE_DIR=${S3BLOCK_GARAGE_CACHE:-$HOME/.cache/s3block}
GARAGE_ROOT=$CACHE_DIR/garage-$GARAGE_VERSION
GARAGE_BIN=$GARAGE_ROOT/bin/garage
INSTALL_LOG=$CACHE_DIR/garage-install.log
STATE=${S3BLOCK_GARAGE_STATE:-/tmp/s3block-garage}
CONF=$STATE/garage.toml
ENV_FILE=$STATE/env
PID_FILE=$STATE/garage.pid
LOG_FILE=$STATE/garage.log
# us-east-1, so that s3backer (which signs for us-east-1 unless given --region,
# and --region forces virtual-host URLs) can share the server with s3block.
REGION=${S3BLOCK_GARAGE_REGION:-us-east-1}
START_TIMEOUT=${S3BLOCK_GARAGE_START_TIMEOUT:-60}

say() { printf 'garage.sh: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

# The install command, matched exactly so we only ever wait for our own kind of build.
install_pattern() { printf 'cargo install --locked garage --version %s' "$GARAGE_VERSION"; }

cmd_install() {
    if [[ -x $GARAGE_BIN ]]; then
        say "Garage $GARAGE_VERSION already installed at $GARAGE_BIN"
        return 0
    fi
    mkdir -p "$CACHE_DIR"
    local pids
    if pids=$(pgrep -f "$(install_pattern)"); then
        say "a Garage build is already running (pid $(echo "$pids" | tr '\n' ' ')); waiting for it"
        say "its log: $INSTALL_LOG"
        while pgrep -f "$(install_pattern)" >/dev/null; do sleep 5; done
        [[ -x $GARAGE_BIN ]] || die "the running Garage build ended without $GARAGE_BIN; see $INSTALL_LOG"
        say "Garage $GARAGE_VERSION installed at $GARAGE_BIN"
        return 0
    fi
    command -v cargo >/dev/null || die "cargo is needed to build Garage (crates.io garage $GARAGE_VERSION)"
    say "building Garage $GARAGE_VERSION from crates.io into $GARAGE_ROOT (about 10 minutes on 2 cores)"
    say "build log: $INSTALL_LOG"
    local start=$SECONDS
    if ! cargo install --locked garage --version "$GARAGE_VERSION" --root "$GARAGE_ROOT" >"$INSTALL_LOG" 2>&1; then
        tail -n 30 "$INSTALL_LOG" >&2
        die "building Garage failed; full log in $INSTALL_LOG"
    fi
    say "Garage $GARAGE_VERSION built in $((SECONDS - start)) s"
}

# The Garage CLI against this server; bounded so a hung server cannot hang us.
garage() { timeout "${S3BLOCK_GARAGE_CLI_TIMEOUT:-30}" "$GARAGE_BIN" -c "$CONF" "$@"; }

# The pid of the server this state directory started, if that process is
# alive and still our Garage binary (a reused pid is not ours).
running_pid() {
    [[ -f $PID_FILE ]] || return 1
    local pid exe
    pid=$(<"$PID_FILE")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
    [[ $exe == "$(readlink -f "$GARAGE_BIN")" ]] || return 1
    echo "$pid"
}

# A TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
    local port tries=0
    while ((tries++ < 200)); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    die "found no free TCP port on 127.0.0.1"
}

random_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

# Waits until the CLI reaches the server over RPC.
wait_for_rpc() {
    local deadline=$((SECONDS + START_TIMEOUT))
    until S3BLOCK_GARAGE_CLI_TIMEOUT=5 garage status >/dev/null 2>&1; do
        if ! running_pid >/dev/null; then
            tail -n 30 "$LOG_FILE" >&2 || true
            die "Garage exited during start; log: $LOG_FILE"
        fi
        ((SECONDS < deadline)) || die "Garage did not answer within ${START_TIMEOUT}s; log: $LOG_FILE"
        sleep 0.3
    done
}

# Waits until the S3 port accepts connections.
wait_for_s3() {
    local port=$1 deadline=$((SECONDS + START_TIMEOUT))
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        ((SECONDS < deadline)) || die "Garage's S3 port $port did not open within ${START_TIMEOUT}s; log: $LOG_FILE"
        sleep 0.3
    done
}

create_buckets() {
    local key_id=$1 name
    shift
    for name in "$@"; do
        if garage bucket info "$name" >/dev/null 2>&1; then
            say "bucket $name exists"
        else
            garage bucket create "$name" >/dev/null || die "could not create bucket $name"
        fi
        garage bucket allow --read --write --owner "$name" --key "$key_id" >/dev/null ||
            die "could not grant key $key_id on bucket $name"
    done
}

cmd_start() {
    [[ -x $GARAGE_BIN ]] || die "Garage is not installed at $GARAGE_BIN; run: scripts/garage.sh install"
    local pid
    if pid=$(running_pid) && S3BLOCK_GARAGE_CLI_TIMEOUT=10 garage status >/dev/null 2>&1 && [[ -f $ENV_FILE ]]; then
        say "Garage already running (pid $pid); env file: $ENV_FILE"
        return 0
    fi
    # A server from this state directory that no longer answers is replaced.
    if [[ -n ${pid:-} ]]; then cmd_stop; fi
    if [[ -d $STATE ]] && [[ -n $(ls -A "$STATE") ]]; then
        [[ -f $CONF ]] && grep -q 'Written by scripts/garage.sh' "$CONF" ||
            die "$STATE exists and was not made by scripts/garage.sh; choose another S3BLOCK_GARAGE_STATE"
        rm -rf "$STATE"
    fi
    mkdir -p "$STATE/meta" "$STATE/data"
    chmod 700 "$STATE"
    local rpc_port s3_port bucket key_id secret
    rpc_port=$(free_port)
    s3_port=$(free_port)
    while [[ $s3_port == "$rpc_port" ]]; do s3_port=$(free_port); done
    bucket=${S3BLOCK_TEST_S3_BUCKET:-s3block-test}
    key_id=GK$(random_hex 12)
    secret=$(random_hex 32)

    cat >"$CONF" <<EOF
# Written by scripts/garage.sh: a throwaway single-node Garage for tests.
metadata_dir = "$STATE/meta"
data_dir = "$STATE/data"
db_engine = "lmdb"
replication_factor = 1
metadata_fsync = false
data_fsync = false
rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$(random_hex 32)"

[s3_api]
s3_region = "$REGION"
api_bind_addr = "127.0.0.1:$s3_port"
EOF
    chmod 600 "$CONF"

    say "starting Garage $GARAGE_VERSION on 127.0.0.1:$s3_port (rpc $rpc_port), state in $STATE"
    RUST_LOG=${GARAGE_RUST_LOG:-warn} nohup "$GARAGE_BIN" -c "$CONF" server >"$LOG_FILE" 2>&1 </dev/null &
    echo $! >"$PID_FILE"
    wait_for_rpc

    local node_id
    node_id=$(garage node id -q) || die "could not read the node id"
    node_id=${node_id%%@*}
    garage layout assign -z dc1 -c 1G "$node_id" >/dev/null || die "layout assign failed for node $node_id"
    garage layout apply --version 1 >/dev/null || die "layout apply failed"
    garage key import --yes -n s3block-test "$key_id" "$secret" >/dev/null || die "could not create the test key"
    create_buckets "$key_id" "$bucket"
    wait_for_s3 "$s3_port"

    cat >"$ENV_FILE" <<EOF
export AWS_ACCESS_KEY_ID=$key_id
export AWS_SECRET_ACCESS_KEY=$secret
export AWS_REGION=$REGION
export AWS_DEFAULT_REGION=$REGION
export S3BLOCK_TEST_S3_ENDPOINT=http://127.0.0.1:$s3_port
export S3BLOCK_TEST_S3_BUCKET=$bucket
export S3BLOCK_GARAGE_STATE=$STATE
export S3BLOCK_GARAGE_PID=$(<"$PID_FILE")
export S3BLOCK_GARAGE_CONF=$CONF
EOF
    chmod 600 "$ENV_FILE"
    say "ready: bucket $bucket at http://127.0.0.1:$s3_port; env file: $ENV_FILE"
}

cmd_bucket() {
    (($# > 0)) || die "usage: scripts/garage.sh bucket NAME..."
    running_pid >/dev/null || die "Garage is not running; run: scripts/garage.sh start"
    local key_id
    key_id=$(sed -n 's/^export AWS_ACCESS_KEY_ID=//p' "$ENV_FILE")
    [[ -n $key_id ]] || die "no access key in $ENV_FILE"
    create_buckets "$key_id" "$@"
    say "buckets ready: $*"
}

cmd_status() {
    local pid
    if pid=$(running_pid) && S3BLOCK_GARAGE_CLI_TIMEOUT=10 garage status >/dev/null 2>&1; then
        say "Garage running (pid $pid); env file: $ENV_FILE"
        return 0
    fi
    say "Garage is not running (state $STATE)"
    return 1
}

cmd_env() {
    [[ -f $ENV_FILE ]] || die "no env file at $ENV_FILE; run: scripts/garage.sh start"
    echo "$ENV_FILE"
}

cmd_stop() {
    local pid
    if pid=$(running_pid); then
        kill "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 15))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
            say "Garage (pid $pid) did not stop in 15 s; killing it"
            kill -9 "$pid" 2>/dev/null || true
        fi
        say "Garage stopped (pid $pid)"
    else
        say "Garage was not running"
    fi
    # Only ever remove a directory this script made.
    if [[ -f $CONF ]] && grep -q 'Written by scripts/garage.sh' "$CONF"; then
        rm -rf "$STATE"
    fi
}

case ${1:-} in
install) cmd_install ;;
start) cmd_start ;;
bucket)
    shift
    cmd_bucket "$@"
    ;;
status) cmd_status ;;
env) cmd_env ;;
stop) cmd_stop ;;
*)
    sed -n '2,15s/^# \{0,1\}//p' "$0" >&2
    exit 2
    ;;
esac
