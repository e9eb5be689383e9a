#!/bin/bash
# System calls per entry, counted exactly with `strace -f -c` (immune to a
# noisy host): on Lustre every metadata call is a round trip to a metadata
# server all movers share, so this count is the downtime at scale.
#   bash bench/syscalls.sh            -> bench/out/syscalls.md
# Tree: 200 dirs x 100 files x 4 KiB + 40 symlinks, on tmpfs. Scenarios:
# initial copy; no-change re-sync; final after 1% of files touched and 1%
# deleted. lmpi runs alone (one rank, no launcher) so only its own calls count.
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
churn() { # 1% of files touched (a byte appended), 1% deleted, on a copy of the source
    rm -rf "$root/chg" && cp -a "$root/src" "$root/chg"
    find "$root/chg" -type f | sort | awk 'NR % 100 == 1' | while read -r f; do echo >> "$f"; done
    find "$root/chg" -type f | sort | awk 'NR % 100 == 50' | xargs rm -f
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
cat "$res"
rm -rf "$root"
