#!/bin/bash
# lmpi against cp -a, rsync -a and fpsync on the same data, in one run.
#   bash bench/run.sh [quick]       (quick: dataset A only, tmpfs only)
# Prints a markdown table and writes it to bench/out/results.md; BENCHMARKS.md
# records a run with the machine's description.
source "$(dirname "$0")/common.sh"
mode=${1:-full}
res=${BENCH_OUT:-bench/out/results.md}
roots=("/dev/shm/lmpi-bench")
[ "$mode" = quick ] || roots+=("/var/tmp/lmpi-bench")
datasets=(A)
[ "$mode" = quick ] || datasets+=(B C)
# Narrow a run: BENCH_ROOTS="/dev/shm/lmpi-bench" BENCH_DATA="C" bash bench/run.sh
[ -z "${BENCH_ROOTS:-}" ] || read -r -a roots <<< "$BENCH_ROOTS"
[ -z "${BENCH_DATA:-}" ] || read -r -a datasets <<< "$BENCH_DATA"

gen() { # dataset dir
    case $1 in
        A) "$GEN" "$2" --dirs 1000 --files 100 --size 4096 --symlinks 200 ;;
        B) "$GEN" "$2" --dirs 20 --files 100 --size 1048576 ;;
        C) "$GEN" "$2" --dirs 0 --files 0 --big 4 --big-size 1073741824 ;;
    esac
}
nfiles() { find "$1" -type f | wc -l; }

# Seconds (wall) of a command; peak RSS (KiB) of the largest process in $rss_file.
timeit() {
    local t0 t1
    t0=$(date +%s.%N)
    "$@" > /dev/null 2>> bench/out/stderr.log || return 1
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc
}
rss_file=bench/out/rss
lmpi_np() { # np pass src dst    (np 0: one rank started by hand, no launcher, no MPI)
    local np=$1; shift
    if [ "$np" = 0 ]; then
        /usr/bin/time -a -o "$rss_file" -f '%M' "$LMPI" --pass "$1" --source "$2" --target "$3" -q --error-log /dev/null
        return
    fi
    mpirun --oversubscribe --bind-to none -np "$np" /usr/bin/time -a -o "$rss_file" -f '%M' "$LMPI" --pass "$1" --source "$2" --target "$3" -q --error-log /dev/null
}
tools=("lmpi-alone" "lmpi-np1" "lmpi-np2" "lmpi-np4" "cp -a" "rsync -a" "fpsync -n 4")
run_tool() { # tool scenario src dst
    local tool=$1 sc=$2 src=$3 dst=$4
    case $tool in
        lmpi-*) local np=${tool#lmpi-np}; [ "$tool" = lmpi-alone ] && np=0
            if [ "$sc" = churn ]; then lmpi_np "$np" copy "$src" "$dst" && lmpi_np "$np" delete "$src" "$dst"
            else lmpi_np "$np" copy "$src" "$dst"; fi ;;
        "cp -a") if [ "$sc" = initial ]; then cp -a "$src/." "$dst/"; else return 99; fi ;;
        "rsync -a") if [ "$sc" = churn ]; then rsync -a --delete "$src/" "$dst/"; else rsync -a "$src/" "$dst/"; fi ;;
        "fpsync -n 4") local e=""; [ "$sc" = churn ] && e="-E"
            fpsync -n 4 $e -t /tmp/fpsync-bench "$src/" "$dst/" ;;
    esac
}
churn() { # 1% of files touched (appended), 1% deleted
    local src=$1 n
    n=$(nfiles "$src"); n=$(( n / 100 )); [ "$n" -ge 1 ] || n=1
    find "$src" -type f | sort > bench/out/files.lst
    head -n "$n" bench/out/files.lst | while read -r f; do echo x >> "$f"; done
    tail -n "$n" bench/out/files.lst | xargs -r rm -f
}

{
echo "| fs | data | scenario | tool | seconds | vs rsync | vs cp -a | files/s | GB/s | peak RSS/rank MiB |"
echo "|---|---|---|---|---:|---:|---:|---:|---:|---:|"
} > "$res"
for root in "${roots[@]}"; do
    fs=$(stat -f -c %T "$root" 2>/dev/null || (mkdir -p "$root" && stat -f -c %T "$root"))
    for ds in "${datasets[@]}"; do
        rm -rf "$root" && mkdir -p "$root"
        gen "$ds" "$root/src-$ds"
        # Untimed warm-up: the first big write after freeing memory pays for
        # reclaiming it, and would be charged to whichever tool ran first.
        cp -a "$root/src-$ds" "$root/warm" && rm -rf "$root/warm" && sync
        files=$(nfiles "$root/src-$ds")
        bytes=$(du -sb "$root/src-$ds" | cut -f1)
        if [ "$ds" = C ]; then
            t=$(timeit dd if="$root/src-$ds/big0" of="$root/dd.out" bs=4M)
            rm -f "$root/dd.out"
            echo "| $fs | $ds | dd bs=4M, 1 GiB | dd | $t | | | | $(echo "scale=2; 1073741824 / $t / 1000000000" | bc) | |" >> "$res"
        fi
        declare -A T=() R=()
        for sc in initial resync churn; do
            for tool in "${tools[@]}"; do
                dst="$root/dst"
                rm -rf "$dst" /tmp/fpsync-bench && mkdir -p "$dst" /tmp/fpsync-bench
                src="$root/src-$ds"
                if [ "$sc" != initial ]; then
                    cp -a "$src/." "$dst/"           # start from an identical target
                fi
                if [ "$sc" = churn ]; then
                    rm -rf "$root/src-churn" && cp -a "$src" "$root/src-churn" && src="$root/src-churn"
                    churn "$src"
                fi
                sync; : > "$rss_file"
                t=$(timeit run_tool "$tool" "$sc" "$src" "$dst") || continue
                T["$sc/$tool"]=$t
                rss=$( [ -s "$rss_file" ] && sort -n "$rss_file" | tail -1 || echo "")
                [ -n "$rss" ] && rss=$(( rss / 1024 ))
                R["$sc/$tool"]=$rss
            done
            # Ratios once every tool of the scenario has run.
            for tool in "${tools[@]}"; do
                t=${T[$sc/$tool]:-}; [ -n "$t" ] || continue
                vr=""; vc=""
                [ -n "${T[$sc/rsync -a]:-}" ] && vr=$(echo "scale=2; ${T[$sc/rsync -a]} / $t" | bc)
                [ -n "${T[$sc/cp -a]:-}" ] && vc=$(echo "scale=2; ${T[$sc/cp -a]} / $t" | bc)
                fps=$(echo "$files / $t" | bc); gbs=$(echo "scale=2; $bytes / $t / 1000000000" | bc)
                echo "| $fs | $ds | $sc | $tool | $t | $vr | $vc | $fps | $gbs | ${R[$sc/$tool]:-} |" >> "$res"
            done
        done
        unset T R
    done
    rm -rf "$root"
done
sed -i -E 's/\| ([0-9]*\.[0-9]{2})[0-9]* \|/| \1 |/g' "$res"
cat "$res"
echo "(ratios: how many times faster than rsync -a / cp -a measured in the same run, where that tool ran the scenario)"
