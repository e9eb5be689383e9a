#!/bin/bash
# System calls per entry, counted exactly with `strace -f -c` (immune to a
# noisy host): on Lustre every metadata call is a round trip to a metadata
# server all movers share, so this count is the downtime at scale.
#   bash bench/syscalls.sh            -> bench/out/syscalls.md
# Tree: 200 dirs x 100 files x 4 KiB + 40 symlinks, on tmpfs. Scenarios:
# initial copy; no-change re-sync; final after 1% of files touched and 1%
# deleted, by a full final pass and by `final --changes` with `lmpi track`
# running through the churn. lmpi runs alone (one rank, no launcher) so only its own calls count.
source "$(dirname "$0")/common.sh"
root=/dev/shm/lmpi-syscalls
res=bench/out/syscalls.md
rm -rf "$root" && mkdir -p "$root"
"$GEN" "$root/src" --dirs 200 --files 100 --size 4096 --symlinks 40 > /dev/null
entries=$(find "$root/src" -mindepth 1 | wc -l)
q=(-q --error-log /dev/null)

# meta_re and data_re (common.sh) split the calls: metadata goes to a Lustre
# MDS, data to the OSTs, the rest stays on the client.

# count FILE... -> "total metadata data" summed over strace -c outputs
count() {
    awk -v m="$meta_re" -v d="$data_re" '
        $NF == "total" || $4 !~ /^[0-9]+$/ { next }
        { t += $4; if ($NF ~ m) md += $4; else if ($NF ~ d) dd += $4 }
        END { printf "%d %d %d\n", t, md, dd }' "$@"
}
trace() { # out-file cmd...   ("lmpi PASS SRC" runs the lmpi binary itself)
    local f=$1; shift
    if [ "$1" = lmpi ]; then
        set -- "$LMPI" --pass "$2" --source "$3" --target "$root/dst" "${q[@]}"
    fi
    strace -f -c -o "$f" "$@" > /dev/null 2>&1 || true
}
row() { # scenario tool files...
    local scen=$1 tool=$2; shift 2
    read -r t m d < <(count "$@")
    printf '| %s | %s | %d | %d | %d | %.2f | %.2f |\n' "$scen" "$tool" "$t" "$m" "$d" \
        "$(echo "$t / $entries" | bc -l)" "$(echo "$m / $entries" | bc -l)" >> "$res"
}
fresh() { rm -rf "$root/dst" && mkdir "$root/dst"; }
churn_in() { # DIR: 1% of its files touched (a byte appended), 1% deleted
    find "$1" -type f | sort | awk 'NR % 100 == 1' | while read -r f; do echo >> "$f"; done
    find "$1" -type f | sort | awk 'NR % 100 == 50' | xargs rm -f
}
churn() { # the same on a copy of the source
    rm -rf "$root/chg" && cp -a "$root/src" "$root/chg"
    churn_in "$root/chg"
}
lmpi() { "$LMPI" --pass "$1" --source "$2" --target "$root/dst" "${q[@]}"; }
o=$root/trace; mkdir -p "$o"

{
    echo "Entries: $entries (tmpfs). Calls counted with strace -f -c; metadata = stat/open/close/readdir/mkdir/unlink/rename/link/symlink/readlink/chown/chmod/utimens/xattr calls."
    echo
    echo "| scenario | tool | all calls | metadata | data | all / entry | metadata / entry |"
    echo "|---|---|---:|---:|---:|---:|---:|"
} > "$res"

fresh; trace "$o/c1" lmpi copy "$root/src"; trace "$o/c2" lmpi dirtime "$root/src"
row "initial copy" "lmpi copy + dirtime" "$o/c1" "$o/c2"
fresh; trace "$o/f1" lmpi final "$root/src"; row "initial copy" "lmpi final" "$o/f1"
fresh; trace "$o/r1" rsync -a "$root/src/" "$root/dst/"; row "initial copy" "rsync -a" "$o/r1"
fresh; trace "$o/p1" cp -a "$root/src/." "$root/dst/"; row "initial copy" "cp -a" "$o/p1"

fresh; lmpi final "$root/src" > /dev/null
trace "$o/c3" lmpi copy "$root/src"; row "no-change re-sync" "lmpi copy" "$o/c3"
trace "$o/f3" lmpi final "$root/src"; row "no-change re-sync" "lmpi final" "$o/f3"
trace "$o/r3" rsync -a --delete "$root/src/" "$root/dst/"; row "no-change re-sync" "rsync -a --delete" "$o/r3"

churn
fresh; lmpi final "$root/src" > /dev/null
trace "$o/c4" lmpi copy "$root/chg"; trace "$o/c5" lmpi delete "$root/chg"; trace "$o/c6" lmpi dirtime "$root/chg"
row "final after 1% touched + 1% deleted" "lmpi copy + delete + dirtime" "$o/c4" "$o/c5" "$o/c6"
fresh; lmpi final "$root/src" > /dev/null
trace "$o/f4" lmpi final "$root/chg"; row "final after 1% touched + 1% deleted" "lmpi final" "$o/f4"
fresh; lmpi final "$root/src" > /dev/null
trace "$o/r4" rsync -a --delete "$root/chg/" "$root/dst/"
row "final after 1% touched + 1% deleted" "rsync -a --delete" "$o/r4"

# The same churn seen by `lmpi track` (docs/track.md): the tracker runs while
# a full final pass copies the tree and records it clean on the target, the
# churn happens, the tracker stops; then only the journal's changes are
# visited. The source has a tmpfs of its own: fanotify marks a whole
# filesystem, and the target on the same one would fill the journal with the
# copy's own writes (a migration's target is another filesystem).
live=$root/live
mkdir -p "$live" && mount -t tmpfs -o size=1g tmpfs "$live"
trap 'umount -l "$live" 2>/dev/null || true' EXIT
cp -a "$root/src" "$live/chg"
"$LMPI" track --source "$live/chg" --journal "$root/J" --report-interval 0 > "$o/track.log" 2>&1 &
tracker=$!
sleep 2.1
fresh; lmpi final "$live/chg" > /dev/null
churn_in "$live/chg"
sleep 0.2 # let the tracker read the last events before it is told to stop
kill -TERM "$tracker" && wait "$tracker" || { echo "lmpi track failed: $(cat "$o/track.log")"; exit 1; }
strace -f -c -o "$o/k1" "$LMPI" --pass final --source "$live/chg" --target "$root/dst" --changes "$root/J" \
    "${q[@]}" > "$o/k1.out" 2>&1 || true
row "final after 1% touched + 1% deleted" "lmpi final --changes (tracked)" "$o/k1"
# Converged? Itemized differences left (lmpi's own trusted.lmpi.* aside): 0.
left=$(rsync -anicHAX --delete --filter='-x trusted.lmpi.*' "$live/chg/" "$root/dst/" | wc -l)
walked=$(grep -c 'the whole tree was walked' "$o/k1.out" || true)
{
    echo
    echo "final --changes: journal $(wc -l < "$root/J") lines; differences left after it (rsync -anicHAX --delete): $left; notes of a full walk: $walked."
    echo
    echo "Its calls by kind (strace -f -c):"
    echo
    echo "| syscall | calls | per entry |"
    echo "|---|---:|---:|"
    awk -v m="$meta_re" -v n="$entries" '$NF != "total" && $4 ~ /^[0-9]+$/ {
        printf "| %s%s | %d | %.4f |\n", $NF, ($NF ~ m ? " (metadata)" : ""), $4, $4 / n }' "$o/k1" | sort -t'|' -k3 -rn
} >> "$res"
cat "$res"
umount -l "$live"
rm -rf "$root"
