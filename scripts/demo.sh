#!/bin/bash
# Fresh Debian 12, as root: install what is missing, build lmpi, and run a real
# demo migration of a generated tree with 4 MPI ranks (copy while "live",
# changes, then the downtime passes: copy, delete, dirtime), checked with rsync.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# One host, no InfiniBand: skip UCX probing (0.2 s per MPI start). On a cluster, leave the default.
export OMPI_MCA_pml=${OMPI_MCA_pml:-ob1}
echo "demo: building lmpi (release)"
cargo build --release --quiet --bin lmpi --example gentree
demo=${LMPI_DEMO_DIR:-/tmp/lmpi-demo}
rm -rf "$demo" && mkdir -p "$demo/src" "$demo/dst"
echo "demo: generating a source tree in $demo/src (20,000 files, 4 x 96 MiB, odd names)"
target/release/examples/gentree "$demo/src" --dirs 200 --files 100 --size 4096 --symlinks 50 --big 4 --big-size 100663296 --odd
lmpi=(mpirun --oversubscribe --bind-to none -np 4 target/release/lmpi --source "$demo/src" --target "$demo/dst" --report-interval 1 --error-log "$demo/errors.log")

echo; echo "demo: pass 1 (while the source is live): copy"
"${lmpi[@]}" --pass copy
echo; echo "demo: users change things: 50 files edited, 1 dir removed, 1 file added"
for f in $(seq -f '%05g' 0 49); do echo changed >> "$demo/src/d00001/f$f"; done
rm -rf "$demo/src/d00002"
echo "new" > "$demo/src/d00003/added"
echo; echo "demo: downtime: copy, delete, dirtime"
"${lmpi[@]}" --pass copy
"${lmpi[@]}" --pass delete
"${lmpi[@]}" --pass dirtime
echo
if [ -z "$(rsync -anicHAX --delete "$demo/src/" "$demo/dst/")" ]; then
    echo "demo: OK: rsync -anicHAX --delete finds no difference between $demo/src and $demo/dst"
else
    echo "demo: FAILED: rsync still sees differences" >&2
    rsync -anicHAX --delete "$demo/src/" "$demo/dst/" | head >&2
    exit 1
fi
