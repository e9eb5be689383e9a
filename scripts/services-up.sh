#!/bin/bash
# Start the test services on loopback, each only if it is not already up:
#   scripts/services-up.sh [memcached|rabbitmq|carbon|slurm|all]   (default: all)
# What this starts is recorded in $LMPI_RUN/<name>.pid, so services-down.sh
# stops exactly that. No systemd needed.
#   memcached 127.0.0.1:11211 | RabbitMQ localhost:5672, vhost/user data_move,
#   password $LMPI_AMQP_PASSWORD (data_move_test), old-style files in
#   $LMPI_STATE/rabbitmq/ | carbon plaintext 127.0.0.1:2003, whisper files in
#   $LMPI_STATE/whisper | Slurm: scripts/slurm-up.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export LMPI_STATE=${LMPI_STATE:-/var/lib/lmpi-test}
export LMPI_RUN=${LMPI_RUN:-/run/lmpi-test}
mkdir -p "$LMPI_STATE" "$LMPI_RUN"
say() { echo "services-up: $*"; }
die() { echo "services-up: $*" >&2; exit 1; }
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
wait_port() { # host port what
    for _ in $(seq 1 100); do port_open "$1" "$2" && return 0; sleep 0.1; done
    die "$3 did not open $1:$2"
}

memcached_up() {
    if port_open 127.0.0.1 11211; then say "memcached already up"; return; fi
    # memcached drops to its user before it could write a pid file here: record it ourselves.
    memcached -d -u memcache -l 127.0.0.1 -p 11211 -m 64
    wait_port 127.0.0.1 11211 memcached
    pgrep -n -f "memcached -d -u memcache -l 127.0.0.1 -p 11211" > "$LMPI_RUN/memcached.pid"
    say "memcached up on 127.0.0.1:11211"
}

rabbitmq_up() {
    local pw=${LMPI_AMQP_PASSWORD:-data_move_test}
    if ! port_open 127.0.0.1 5672; then
        rabbitmq-server -detached > "$LMPI_STATE/rabbitmq-start.log" 2>&1
        # await_startup fails at once while the node is not even reachable yet: retry.
        local ok=""
        for _ in $(seq 1 60); do
            if timeout 60 rabbitmqctl await_startup > /dev/null 2>&1; then ok=1; break; fi
            sleep 1
        done
        [ -n "$ok" ] || die "RabbitMQ did not start (see /var/log/rabbitmq/)"
        rabbitmqctl eval 'os:getpid().' | tr -dc 0-9 > "$LMPI_RUN/rabbitmq.pid"
    fi
    # Like the old rabbitmq_init.sh; each step is a no-op when already done.
    rabbitmqctl add_user data_move "$pw" > /dev/null 2>&1 || rabbitmqctl change_password data_move "$pw" > /dev/null
    rabbitmqctl add_vhost data_move > /dev/null 2>&1 || true
    rabbitmqctl set_permissions -p data_move data_move ".*" ".*" ".*" > /dev/null
    mkdir -p "$LMPI_STATE/rabbitmq"
    echo localhost > "$LMPI_STATE/rabbitmq/rabbitmq.conf"
    echo "$pw" > "$LMPI_STATE/rabbitmq/rabbitmq_data_move.conf"
    chmod 600 "$LMPI_STATE/rabbitmq/rabbitmq_data_move.conf"
    say "RabbitMQ up on localhost:5672 (vhost data_move, user data_move; files in $LMPI_STATE/rabbitmq)"
}

carbon_up() {
    if port_open 127.0.0.1 2003; then say "carbon already up"; return; fi
    local c="$LMPI_STATE/carbon"
    mkdir -p "$c/log" "$c/storage/lists" "$LMPI_STATE/whisper"
    cat > "$c/carbon.conf" <<CONF
[cache]
STORAGE_DIR = $c/storage/
LOCAL_DATA_DIR = $LMPI_STATE/whisper/
WHITELISTS_DIR = $c/storage/lists/
CONF_DIR = $c/
LOG_DIR = $c/log/
PID_DIR = $LMPI_RUN/
ENABLE_LOGROTATION = False
USER =
MAX_CACHE_SIZE = inf
MAX_UPDATES_PER_SECOND = 5000
MAX_CREATES_PER_MINUTE = inf
LINE_RECEIVER_INTERFACE = 127.0.0.1
LINE_RECEIVER_PORT = 2003
ENABLE_UDP_LISTENER = False
PICKLE_RECEIVER_INTERFACE = 127.0.0.1
PICKLE_RECEIVER_PORT = 2004
CACHE_QUERY_INTERFACE = 127.0.0.1
CACHE_QUERY_PORT = 7002
LOG_UPDATES = False
CONF
    # One-second points for a day: tests read back what they sent at once.
    printf '[all]\npattern = .*\nretentions = 1s:1d\n' > "$c/storage-schemas.conf"
    (cd "$c" && carbon-cache --config="$c/carbon.conf" --pidfile="$LMPI_RUN/carbon.pid" start > "$c/log/start.log" 2>&1) \
        || die "carbon-cache did not start (see $c/log/start.log)"
    wait_port 127.0.0.1 2003 carbon-cache
    say "carbon up on 127.0.0.1:2003 (whisper files in $LMPI_STATE/whisper)"
}

what=${1:-all}
case $what in
    memcached) memcached_up ;;
    rabbitmq) rabbitmq_up ;;
    carbon) carbon_up ;;
    slurm) bash "$here/slurm-up.sh" ;;
    all) memcached_up; rabbitmq_up; carbon_up; bash "$here/slurm-up.sh" ;;
    *) die "unknown service '$what' (memcached|rabbitmq|carbon|slurm|all)" ;;
esac
