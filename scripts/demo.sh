#!/bin/bash
# Fresh Debian 12, as root: install what is missing, build lmpi, and run a real
# demo migration of a generated tree with 4 MPI ranks, the way an admin runs one:
#   1. copy while the source is live (users keep working), as often as needed;
#   2. `lmpi track` records every change on the source from then on, and a
#      live final pass (full walk) leaves the target clean and marked;
#   3. the downtime: stop the tracker, `--pass final --changes JOURNAL` visits
#      only what changed since;
#   4. sign-off: `--pass verify --content` (every entry, file data included),
#      then rsync as a second opinion.
# Environment: LMPI_DEMO_DIR (default /tmp/lmpi-demo, wiped), LMPI_DEMO_NP (4),
# LMPI_DEMO_DIRS (200 directories of 100 files), LMPI_BIN (an lmpi binary to use:
# skips the setup and the build; the tree generator is then built in debug).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# One host, no InfiniBand: skip UCX probing (0.2 s per MPI start). On a cluster, leave the default.
export OMPI_MCA_pml=${OMPI_MCA_pml:-ob1}
if [ -n "${LMPI_BIN:-}" ]; then
    bin=$LMPI_BIN
    cargo build --quiet --example gentree
    gentree=target/debug/examples/gentree
else
    bash scripts/setup-deps.sh
    echo "demo: building lmpi (release)"
    cargo build --release --quiet --bin lmpi --example gentree
    bin=target/release/lmpi
    gentree=target/release/examples/gentree
fi
demo=${LMPI_DEMO_DIR:-/tmp/lmpi-demo}
dirs=${LMPI_DEMO_DIRS:-200}
rm -rf "$demo" && mkdir -p "$demo/src" "$demo/dst"
echo "demo: generating a source tree in $demo/src ($dirs x 100 files, 4 x 96 MiB, odd names)"
"$gentree" "$demo/src" --dirs "$dirs" --files 100 --size 4096 --symlinks 50 --big 4 --big-size 100663296 --odd
lmpi=(mpirun --oversubscribe --bind-to none -np "${LMPI_DEMO_NP:-4}" "$bin"
    --source "$demo/src" --target "$demo/dst" --report-interval 1 --error-log "$demo/errors.log")
# Users at work: some files edited, a directory removed, a file added.
users_work() {
    local d=$1 n
    for n in $(seq -f '%05g' 0 19); do echo "changed $2" >> "$demo/src/d0000$d/f$n"; done
    rm -rf "$demo/src/d0000$((d + 1))"
    echo "new $2" > "$demo/src/d0000$((d + 2))/added-$2"
}

echo; echo "demo: 1. while the source is live: copy"
"${lmpi[@]}" --pass copy
users_work 1 a

echo; echo "demo: 2. start the change tracker, then a live final pass (full walk)"
"$bin" track --source "$demo/src" --journal "$demo/journal" --report-interval 0 &
tracker=$!
trap 'kill -TERM $tracker 2>/dev/null || true' EXIT
# The pass must begin at least 2 s after the tracker (docs/track.md).
sleep 3
"${lmpi[@]}" --pass final
users_work 4 b

echo; echo "demo: 3. downtime: stop the tracker, final pass over the recorded changes only"
kill -TERM "$tracker"
wait "$tracker"
trap - EXIT
"${lmpi[@]}" --pass final --changes "$demo/journal" --manifest "$demo/final.manifest"

echo; echo "demo: 4. sign-off: verify every entry, data included"
"${lmpi[@]}" --pass verify --content
echo
# lmpi's own record of the last clean final pass is trusted.lmpi.* on the target root.
if [ -z "$(rsync -anicHAX --delete --filter='-x trusted.lmpi.*' "$demo/src/" "$demo/dst/")" ]; then
    echo "demo: OK: verify is clean and rsync -anicHAX --delete finds no difference between $demo/src and $demo/dst"
else
    echo "demo: FAILED: rsync still sees differences" >&2
    rsync -anicHAX --delete --filter='-x trusted.lmpi.*' "$demo/src/" "$demo/dst/" | head >&2
    exit 1
fi
