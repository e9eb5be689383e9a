#!/bin/bash
# Does the latency shim (tests/faults/shim.c, LMPI_FAULT_SLOW_ALL=1) slow
# every metadata call? Each tool runs once under `strace -f -c` with the shim
# in counting mode (LMPI_FAULT_COUNT, no sleep): strace counts the system
# calls made, the shim the calls it slowed, in the same run.
#   bash bench/shimcount.sh          -> bench/out/shimcount.md
# Each tool copies an empty tree and a small one; the difference is what the
# entries cost, without start-up (the loader's opens, locale files: glibc
# makes those where LD_PRELOAD cannot see them). The shim leaves system
# files alone (/dev/urandom, /proc, /sys...: local on a cluster node); the
# last column counts the opens of those the tools make per entry (each
# comes with a close).
source "$(dirname "$0")/common.sh"
shim=$PWD/bench/out/latency-shim.so
cc -shared -fPIC -O2 -o "$shim" tests/faults/shim.c -ldl
root=/dev/shm/lmpi-shimcount
res=bench/out/shimcount.md
rm -rf "$root" && mkdir -p "$root/empty" "$root/t"
"$GEN" "$root/tree" --dirs 20 --files 50 --size 4096 --symlinks 20 > /dev/null
entries=$(find "$root/tree" -mindepth 1 | wc -l)
counted_re="${meta_re%)\$}|ioctl)\$"

measure() { # tag src tool...  -> $root/t/tag.{st,cnt}
    local tag=$1 src=$2 tool=$3
    rm -rf "$root/dst" && mkdir "$root/dst" && rm -f "$root/t/$tag.cnt"
    case $tool in
        cp) set -- cp -a "$src/." "$root/dst/" ;;
        rsync) set -- rsync -a "$src/" "$root/dst/" ;;
        lmpi) set -- "$LMPI" --pass copy --source "$src" --target "$root/dst" -q --error-log /dev/null ;;
    esac
    strace -f -C -o "$root/t/$tag.st" env LD_PRELOAD="$shim" LMPI_FAULT_SLOW_ALL=1 \
        LMPI_FAULT_SLOW_US=0 LMPI_FAULT_COUNT="$root/t/$tag.cnt" "$@" > /dev/null 2>&1
    touch "$root/t/$tag.cnt"
}
# opens of files the shim leaves alone (local on a cluster node), from the trace
sysopens() { # tag
    grep -cE 'open(at)?\((AT_FDCWD, )?"(/proc/|/sys/|/etc/|/usr/|/lib|/run/|/dev/[^s]|/tmp/ompi\.)' "$root/t/$1.st" || true
}
# per-syscall "name strace shim" for one run
table() { # tag
    {
        awk -v m="$counted_re" '$NF != "total" && $4 ~ /^[0-9]+$/ && $NF ~ m { print $NF, $4, "s" }' "$root/t/$1.st"
        awk '{ n[$1]++ } END { for (k in n) print k, n[k], "c" }' "$root/t/$1.cnt"
    } | awk '{ if ($3 == "s") s[$1] += $2; else c[$1] += $2; k[$1] = 1 }
             END { for (x in k) printf "%s %d %d\n", x, s[x], c[x] }' | sort
}

{
    echo "Tree: $entries entries (20 dirs x 50 files of 4 KiB + 20 symlinks), tmpfs; an empty tree for start-up."
    echo "Per entry = (tree - empty) / $entries. strace: metadata calls made (bench/common.sh's meta_re, plus ioctl);"
    echo "slowed: calls the shim slept in (LMPI_FAULT_SLOW_ALL=1, counted with LMPI_FAULT_COUNT)."
    echo
    echo "| tool | syscall | strace, tree | slowed, tree | strace, empty | slowed, empty | strace / entry | slowed / entry |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
} > "$res"
sum=$(mktemp) sys=$(mktemp)
for tool in cp rsync lmpi; do
    measure "$tool-e" "$root/empty" "$tool"
    measure "$tool-t" "$root/tree" "$tool"
    join -a1 -a2 -e0 -o 0,1.2,1.3,2.2,2.3 <(table "$tool-t") <(table "$tool-e") |
        while read -r name st sc et ec; do
            printf '| %s | %s | %d | %d | %d | %d | %.2f | %.2f |\n' "$tool" "$name" "$st" "$sc" "$et" "$ec" \
                "$(echo "($st - $et) / $entries" | bc -l)" "$(echo "($sc - $ec) / $entries" | bc -l)"
            echo "$tool $st $sc $et $ec" >> "$sum"
        done >> "$res"
    echo "$tool $(sysopens "$tool-t") $(sysopens "$tool-e")" >> "$sys"
done
{
    echo
    echo "| tool | metadata calls / entry (strace) | slowed / entry | covered | made, not slowed (tree) | made, not slowed (empty) | opens of system files / entry |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    awk -v n="$entries" 'FNR == NR { so[$1] = ($2 - $3) / n; next }
        { st[$1] += $2; sc[$1] += $3; et[$1] += $4; ec[$1] += $5 }
        END { for (t in st) printf "| %s | %.2f | %.2f | %.1f%% | %d | %d | %.2f |\n", t, (st[t] - et[t]) / n,
              (sc[t] - ec[t]) / n, 100 * (sc[t] - ec[t]) / (st[t] - et[t]), st[t] - sc[t], et[t] - ec[t], so[t] }' "$sys" "$sum" | sort
} >> "$res"
rm -f "$sum" "$sys"
cat "$res"
rm -rf "$root"
