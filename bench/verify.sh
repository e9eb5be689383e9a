#!/bin/bash
# The verify pass against rsync -anc (the usual "is it all there" check;
# mpiFileUtils' dsync --contents plays the same role on a cluster), on
# dataset A (100,000 small files) and C (4 x 1 GiB), tmpfs, in one run; and
# dd's read bandwidth over the same files on both sides, the ceiling.
#   bash bench/verify.sh            (BENCH_DATA="C" for one dataset)
source "$(dirname "$0")/common.sh"
root=/dev/shm/lmpi-verify
res=bench/out/verify.md
read -r -a datasets <<< "${BENCH_DATA:-A C}"
echo "| data | tool | wall s | GB/s read (both sides) | vs rsync -anc | vs plain reads |" > "$res"
echo "|---|---|---:|---:|---:|---:|" >> "$res"
secs() { local t0 t1; t0=$(date +%s.%N); "$@" > /dev/null 2>> bench/out/stderr.log; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
for ds in "${datasets[@]}"; do
    rm -rf "$root" && mkdir -p "$root/dst"
    case $ds in
        A) "$GEN" "$root/src" --dirs 1000 --files 100 --size 4096 --symlinks 200 ;;
        C) "$GEN" "$root/src" --dirs 0 --files 0 --big 4 --big-size 1073741824 ;;
    esac
    for p in copy dirtime; do "$LMPI" --pass "$p" --source "$root/src" --target "$root/dst" -q --error-log /dev/null > /dev/null; done
    bytes=$(( $(du -sb --apparent-size "$root/src" | cut -f1) * 2 ))
    # Warm-up: every page both tools read is in memory for both.
    find "$root" -type f -exec cat {} + > /dev/null
    # The ceiling: plain reads of every file of both sides, two at a time
    # (dd per file for the big files, cat in groups for the small ones).
    if [ "$ds" = C ]; then
        reader=(xargs -0 -n1 -P2 sh -c 'dd bs=4M status=none of=/dev/null if="$0"')
    else
        reader=(xargs -0 -n256 -P2 cat)
    fi
    dd_s=$(secs bash -c 'find "$1/src" "$1/dst" -type f -print0 | "${@:2}" > /dev/null' _ "$root" "${reader[@]}")
    rs_s=$(secs rsync -anc "$root/src/" "$root/dst/")
    v1=$(secs "$LMPI" --pass verify --content --source "$root/src" --target "$root/dst" -q --error-log /dev/null)
    v2=$(secs mpirun --oversubscribe --bind-to none -np 2 "$LMPI" --pass verify --content --source "$root/src" --target "$root/dst" -q --error-log /dev/null)
    row() { printf '| %s | %s | %.2f | %.2f | %.2f | %.2f |\n' "$ds" "$1" "$2" "$(echo "$bytes / $2 / 1000000000" | bc -l)" "$(echo "$rs_s / $2" | bc -l)" "$(echo "$dd_s / $2" | bc -l)" >> "$res"; }
    row "plain reads (dd for C, cat for A; 2 readers)" "$dd_s"
    row "rsync -anc" "$rs_s"
    row "lmpi verify --content, alone" "$v1"
    row "lmpi verify --content, np 2" "$v2"
done
rm -rf "$root"
cat "$res"
