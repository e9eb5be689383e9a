#!/bin/bash
# Latency hiding: every metadata call (stat, open, mkdir, chown, utimens, ...)
# of every tool sleeps LAT microseconds, through the LD_PRELOAD shim in
# tests/faults/shim.c, as on Lustre where each costs 0.1-1 ms. The sleep costs
# no CPU: only a tool with many operations in flight hides it.
#   bash bench/latency.sh [LAT_US]     (default 200)
source "$(dirname "$0")/common.sh"
lat=${1:-200}
shim=$PWD/bench/out/latency-shim.so
cc -shared -fPIC -O2 -o "$shim" tests/faults/shim.c -ldl
root=/dev/shm/lmpi-latency
rm -rf "$root" && mkdir -p "$root"
"$GEN" "$root/src" --dirs 20 --files 100 --size 4096
files=2000
res=bench/out/latency.md
echo "| tool | ranks x threads | wall s | lmpi pass s | files/s (wall) |" > "$res"
echo "|---|---|---:|---:|---:|" >> "$res"
run() { # label rxt cmd...
    local label=$1 rxt=$2; shift 2
    rm -rf "$root/dst" && mkdir "$root/dst"
    local t0 t1 out pass=""
    t0=$(date +%s.%N)
    out=$("$@" 2>&1)
    t1=$(date +%s.%N)
    pass=$(echo "$out" | sed -n 's/.*COMPLETE in \([0-9.]*\) s.*/\1/p' | head -1)
    local w; w=$(echo "$t1 - $t0" | bc)
    printf '| %s | %s | %.2f | %s | %.0f |\n' "$label" "$rxt" "$w" "$pass" "$(echo "$files / $w" | bc -l)" >> "$res"
}
slow=(env LD_PRELOAD="$shim" LMPI_FAULT_SLOW_ALL=1 LMPI_FAULT_SLOW_US="$lat")
lmpi() { # np threads
    # -x: only the ranks get the latency; mpirun itself starts at full speed.
    mpirun --oversubscribe --bind-to none -np "$1" -x LD_PRELOAD="$shim" -x LMPI_FAULT_SLOW_ALL=1 -x LMPI_FAULT_SLOW_US="$lat" \
        "$LMPI" --pass copy --source "$root/src" --target "$root/dst" --threads "$2" -q --error-log /dev/null
}
run "rsync -a" "1 x 1" "${slow[@]}" rsync -a "$root/src/" "$root/dst/"
run "cp -a" "1 x 1" "${slow[@]}" cp -a "$root/src/." "$root/dst/"
for cfg in "1 1" "1 4" "1 16" "2 16" "4 16" "4 32"; do
    set -- $cfg
    run "lmpi" "$1 x $2" lmpi "$1" "$2"
done

# The downtime pass after 1% of files touched and 1% deleted: the three
# passes one after another against --pass final, both at 2 ranks x 16 threads.
passes() { # pass...
    for p in "$@"; do
        mpirun --oversubscribe --bind-to none -np 2 -x LD_PRELOAD="$shim" -x LMPI_FAULT_SLOW_ALL=1 -x LMPI_FAULT_SLOW_US="$lat" \
            "$LMPI" --pass "$p" --source "$root/chg" --target "$root/dst" --threads 16 -q --error-log /dev/null > /dev/null
    done
}
timed() { local t0 t1; t0=$(date +%s.%N); "$@"; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
rm -rf "$root/chg" && cp -a "$root/src" "$root/chg"
find "$root/chg" -type f | sort | awk 'NR % 100 == 1' | while read -r f; do echo >> "$f"; done
find "$root/chg" -type f | sort | awk 'NR % 100 == 50' | xargs rm -f
echo >> "$res"
echo "| after 1% touched + 1% deleted, 2 x 16 | wall s |" >> "$res"
echo "|---|---:|" >> "$res"
for form in "copy delete dirtime" "final"; do
    rm -rf "$root/dst" && cp -a "$root/src" "$root/dst"
    printf '| %s | %.2f |\n' "lmpi $form" "$(timed passes $form)" >> "$res"
done
rm -rf "$root"
echo "metadata latency ${lat} us per call, $files files of 4 KiB in 20 dirs, tmpfs"
cat "$res"
