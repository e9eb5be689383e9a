#!/bin/bash
# Stop the Slurm test cluster that slurm-up.sh started (by recorded pid).
#   scripts/slurm-down.sh [--keep-munge]
set -uo pipefail
LMPI_RUN=${LMPI_RUN:-/run/lmpi-test}
stop() { # pidfile name
    [ -s "$1" ] || return 0
    local pid; pid=$(tr -dc 0-9 < "$1")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        echo "slurm-down: stopped $2 (pid $pid)"
    fi
    rm -f "$1"
}
for f in "$LMPI_RUN"/slurmd*.pid; do [ -e "$f" ] && stop "$f" "$(basename "$f" .pid)"; done
stop "$LMPI_RUN/slurmctld.pid" slurmctld
[ "${1:-}" = --keep-munge ] || stop "$LMPI_RUN/munged.pid" munged
exit 0
