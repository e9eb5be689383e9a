# Sourced by the bench scripts: one environment for every measurement.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH" OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# One host, no InfiniBand: skip UCX probing (0.2 s per start). On a cluster, leave the default.
export OMPI_MCA_pml=${OMPI_MCA_pml:-ob1}
cargo build --release --quiet --bin lmpi --example gentree
LMPI=$PWD/target/release/lmpi
GEN=$PWD/target/release/examples/gentree
mkdir -p bench/out

# Metadata: what goes to a Lustre MDS. Data: what moves bytes (OSTs).
# Everything else (futex, sched_yield, mmap, ...) stays on the client.
meta_re='^(statx|newfstatat|fstat|lstat|stat|openat|openat2|open|open_by_handle_at|name_to_handle_at|close|getdents64|mkdir|mkdirat|unlink|unlinkat|rmdir|rename|renameat|renameat2|link|linkat|symlink|symlinkat|readlink|readlinkat|chown|fchown|fchownat|lchown|chmod|fchmod|fchmodat|fchmodat2|utimensat|utimes|futimesat|mknod|mknodat|access|faccessat|faccessat2|[lf]?(get|set|list|remove)xattr)$'
data_re='^(read|write|pread64|pwrite64|readv|writev|copy_file_range|sendfile|splice|lseek|fadvise64|ftruncate|fallocate|fsync|fdatasync)$'
