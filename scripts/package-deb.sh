#!/bin/bash
# Build the Debian package: target/debian/lmpi_<version>_<arch>.deb.
# Needs cargo-deb (`cargo install cargo-deb`; not needed to build or test lmpi).
# The binary writes its own man page and completions into target/assets first,
# so they always match the options it takes.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || { echo "package-deb: cargo-deb is missing: cargo install cargo-deb" >&2; exit 2; }
cargo build --release --bin lmpi
mkdir -p target/assets
bin=target/release/lmpi
"$bin" man | gzip -9n > target/assets/lmpi.1.gz
"$bin" completions bash > target/assets/lmpi.bash
"$bin" completions zsh > target/assets/_lmpi
"$bin" completions fish > target/assets/lmpi.fish
cargo deb --no-build "$@"
