#!/bin/bash
# One line per service, up or down; non-zero if any asked-for service is down.
#   scripts/services-check.sh [memcached rabbitmq carbon slurm]   (default: all)
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
rc=0
for s in ${@:-memcached rabbitmq carbon slurm}; do
    case $s in
        memcached) port_open 127.0.0.1 11211 ;;
        rabbitmq) port_open 127.0.0.1 5672 ;;
        carbon) port_open 127.0.0.1 2003 ;;
        slurm) sinfo -h -o %T 2>/dev/null | grep -qE "idle|mixed|allocated" ;;
        *) false ;;
    esac && echo "$s: up" || { echo "$s: DOWN"; rc=1; }
done
exit $rc
