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
