#!/bin/bash
# Install and start the test services (OpenMPI, Slurm, RabbitMQ, memcached,
# Graphite carbon), then run the whole test suite. In CI (CI=true) a test whose
# service is missing fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-deps.sh
bash scripts/services-up.sh all
export PATH="$HOME/.cargo/bin:$PATH"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# One host, no InfiniBand: skip UCX probing (0.2 s per MPI start). On a cluster, leave the default.
export OMPI_MCA_pml=${OMPI_MCA_pml:-ob1}
cargo build --workspace --all-targets --quiet
cargo test --workspace --no-fail-fast 2>&1
