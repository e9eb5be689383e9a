#!/bin/bash
# Peak RSS per rank on a 1,000,000-entry tree (1,000 dirs x 1,000 empty files),
# tmpfs: memory follows the queue, never the size of the tree.
#   bash bench/million.sh        -> bench/out/million.md
source "$(dirname "$0")/common.sh"
root=/dev/shm/lmpi-million
out=bench/out/million.md
rm -rf "$root" && mkdir -p "$root/dst"
trap 'rm -rf "$root"' EXIT
"$GEN" "$root/src" --dirs 1000 --files 1000 --size 0 > /dev/null
log=$(mktemp)
run() { # label np pass
    : > "$log"
    local t0 t1 pre=()
    [ "$2" = 0 ] || pre=(mpirun --oversubscribe --bind-to none -np "$2")
    t0=$(date +%s.%N)
    "${pre[@]}" /usr/bin/time -a -o "$log" -f '%M' "$LMPI" --pass "$3" --source "$root/src" --target "$root/dst" -q --error-log /dev/null > /dev/null
    t1=$(date +%s.%N)
    echo "| $1 | $(echo "scale=2; ($t1 - $t0) / 1" | bc) | $(( $(sort -n "$log" | tail -1) / 1024 )) |"
}
{
    echo "| 1,000,000 files, tmpfs | seconds | peak RSS/rank MiB |"
    echo "|---|---:|---:|"
    run "copy, initial, alone" 0 copy
    run "copy, no change, alone" 0 copy
    rm -rf "$root/dst" && mkdir "$root/dst"
    run "copy, initial, np 4" 4 copy
    run "copy, no change, np 4" 4 copy
    run "delete, nothing to do, np 4" 4 delete
    run "dirtime, np 4" 4 dirtime
    t0=$(date +%s.%N); rsync -a "$root/src/" "$root/dst/"; t1=$(date +%s.%N)
    echo "| rsync -a, no change | $(echo "scale=2; ($t1 - $t0) / 1" | bc) | |"
} | tee "$out"
