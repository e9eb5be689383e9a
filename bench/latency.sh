#!/bin/bash
# Latency hiding: every metadata call (stat, open, mkdir, chown, utimens, ...)
# of every tool sleeps LAT microseconds, through the LD_PRELOAD shim in
# tests/faults/shim.c (fd-based calls too: fstat, getdents64, xattrs, ioctl,
# close; bench/shimcount.sh checks it against strace), as on Lustre where
# each costs 0.1-1 ms. The sleep costs no CPU: only a tool with many
# operations in flight hides it. Then the downtime pass with `lmpi track`
# (final vs final --changes) and the tracker's overhead on a live copy.
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

# The downtime with `lmpi track` (docs/track.md), on bench/syscalls.sh's tree
# (200 dirs x 100 files + 40 symlinks) and churn: the full final pass against
# final --changes, both from the target as the tracked final pass left it.
# The source has a tmpfs of its own: fanotify marks a whole filesystem, and a
# migration's target is another one.
big=$root/big live=$root/live
"$GEN" "$big" --dirs 200 --files 100 --size 4096 --symlinks 40 > /dev/null
entries=$(find "$big" -mindepth 1 | wc -l)
mkdir -p "$live" && mount -t tmpfs -o size=2g tmpfs "$live"
trap 'umount -l "$live" 2>/dev/null || true' EXIT
cp -a "$big" "$live/chg"
"$LMPI" track --source "$live/chg" --journal "$root/J" --report-interval 0 > "$root/track.log" 2>&1 &
tracker=$!
sleep 2.1
rm -rf "$root/dst0" && mkdir "$root/dst0"
"$LMPI" --pass final --source "$live/chg" --target "$root/dst0" -q --error-log /dev/null > /dev/null
find "$live/chg" -type f | sort | awk 'NR % 100 == 1' | while read -r f; do echo >> "$f"; done
find "$live/chg" -type f | sort | awk 'NR % 100 == 50' | xargs rm -f
sleep 0.2 # the tracker reads the last events before it is told to stop
kill -TERM "$tracker" && wait "$tracker" || { echo "lmpi track failed: $(cat "$root/track.log")"; exit 1; }
final2() { # extra args...: wall s and lmpi's own pass s, on a fresh copy of dst0
    rm -rf "$root/dst" && cp -a "$root/dst0" "$root/dst"
    local t0 t1 out
    t0=$(date +%s.%N)
    out=$(mpirun --oversubscribe --bind-to none -np 2 -x LD_PRELOAD="$shim" -x LMPI_FAULT_SLOW_ALL=1 -x LMPI_FAULT_SLOW_US="$lat" \
        "$LMPI" --pass final --source "$live/chg" --target "$root/dst" --threads 16 -q --error-log /dev/null "$@" 2>&1)
    t1=$(date +%s.%N)
    printf '%.2f %s' "$(echo "$t1 - $t0" | bc)" "$(echo "$out" | sed -n 's/.*COMPLETE in \([0-9.]*\) s.*/\1/p' | head -1)"
    if [ $# -gt 0 ] && echo "$out" | grep -q 'the whole tree was walked'; then printf ' (walked: %s)' "$(echo "$out" | grep 'the whole tree was walked' | head -1)"; fi
    echo
}
{
    echo
    echo "| $entries entries, 1% touched + 1% deleted, 2 x 16 | run | wall s | lmpi pass s |"
    echo "|---|---:|---:|---:|"
} >> "$res"
for i in 1 2 3; do
    read -r w p rest < <(final2 --changes "$root/J")
    printf '| lmpi final --changes | %d | %s | %s %s |\n' "$i" "$w" "$p" "$rest" >> "$res"
    read -r w p rest < <(final2)
    printf '| lmpi final (full walk) | %d | %s | %s %s |\n' "$i" "$w" "$p" "$rest" >> "$res"
done

# The tracker's overhead on a live copy: the same copy (source on the
# tracked filesystem, target on another) with and without `lmpi track`
# watching the source, at full speed and at $lat us per metadata call.
copy2() { # slow|fast
    rm -rf "$root/dst" && mkdir "$root/dst"
    local t0 t1 env=()
    [ "$1" = slow ] && env=(-x LD_PRELOAD="$shim" -x LMPI_FAULT_SLOW_ALL=1 -x LMPI_FAULT_SLOW_US="$lat")
    t0=$(date +%s.%N)
    mpirun --oversubscribe --bind-to none -np 2 "${env[@]}" "$LMPI" --pass copy --source "$live/chg" \
        --target "$root/dst" --threads 16 -q --error-log /dev/null > /dev/null 2>&1
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc
}
{
    echo
    echo "| live copy of $entries entries, 2 x 16 | latency | without tracker, wall s (5 runs) | with tracker, wall s (5 runs) | median with / without |"
    echo "|---|---|---|---|---:|"
} >> "$res"
median() { tr ' ' '\n' | sed '/^$/d' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
for mode in fast slow; do
    without="" with=""
    for i in 1 2 3 4 5; do
        without+="$(printf '%.2f' "$(copy2 $mode)") "
        rm -f "$root/J2"
        "$LMPI" track --source "$live/chg" --journal "$root/J2" --report-interval 0 > "$root/track2.log" 2>&1 &
        tracker=$!
        sleep 0.5
        with+="$(printf '%.2f' "$(copy2 $mode)") "
        kill -TERM "$tracker" && wait "$tracker" || { echo "lmpi track failed: $(cat "$root/track2.log")"; exit 1; }
    done
    a=$(echo "$without" | median) b=$(echo "$with" | median)
    label="$lat us"; [ $mode = fast ] && label="none"
    printf '| lmpi copy | %s | %s | %s | %.3f |\n' "$label" "$without" "$with" "$(echo "$b / $a" | bc -l)" >> "$res"
done
umount -l "$live"
rm -rf "$root"
echo "metadata latency ${lat} us per call, $files files of 4 KiB in 20 dirs, tmpfs"
cat "$res"
