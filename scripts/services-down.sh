#!/bin/bash
# Stop the services that services-up.sh started (by recorded pid), nothing else.
#   scripts/services-down.sh [memcached|rabbitmq|carbon|slurm|all]
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
LMPI_RUN=${LMPI_RUN:-/run/lmpi-test}
stop_pid() { # name
    local f="$LMPI_RUN/$1.pid" pid
    [ -s "$f" ] || return 0
    pid=$(tr -dc 0-9 < "$f")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        echo "services-down: stopped $1 (pid $pid)"
    fi
    rm -f "$f"
}
what=${1:-all}
for s in memcached rabbitmq carbon slurm; do
    [ "$what" = all ] || [ "$what" = "$s" ] || continue
    case $s in
        rabbitmq)
            # rabbitmqctl stop lets the node shut down cleanly; the pid is the fallback.
            if [ -s "$LMPI_RUN/rabbitmq.pid" ]; then
                rabbitmqctl stop > /dev/null 2>&1 || stop_pid rabbitmq
                rm -f "$LMPI_RUN/rabbitmq.pid"
                echo "services-down: stopped rabbitmq"
            fi ;;
        slurm) bash "$here/slurm-down.sh" ;;
        *) stop_pid "$s" ;;
    esac
done
