#!/bin/bash
# Install what lmpi needs on Debian 12, as root: the build (Rust, clang for
# the mpi crate's bindgen, OpenMPI) and the test services (Slurm + munge,
# RabbitMQ, memcached, Graphite carbon, the celery CLI). Installs only what is
# missing, so a second run takes a second.
set -euo pipefail
say() { echo "setup-deps: $*"; }
[ "$(id -u)" = 0 ] || { echo "setup-deps: must run as root (apt-get)" >&2; exit 1; }

pkgs=(
    build-essential pkg-config clang libclang-dev curl ca-certificates
    openmpi-bin libopenmpi-dev
    rsync fpart attr acl libcap2-bin bc time procps util-linux iproute2 xfsprogs
    memcached munge slurm-wlm rabbitmq-server graphite-carbon python3-whisper
    python3-venv groff-base
)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Services must not start themselves from the package scripts: our scripts start them.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get install -y -qq "${missing[@]}" > /tmp/lmpi-apt.log 2>&1 || { tail -20 /tmp/lmpi-apt.log >&2; rm -f /usr/sbin/policy-rc.d; exit 1; }
    rm -f /usr/sbin/policy-rc.d
else
    say "Debian packages present"
fi

export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo > /dev/null; then
    say "installing the Rust toolchain (rustup, stable)"
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain stable > /dev/null
fi
say "$(cargo --version)"

# The real celery CLI, for the control-bridge tests (Debian's python, own venv).
venv=/opt/lmpi-venv
if [ ! -x "$venv/bin/celery" ]; then
    say "installing celery into $venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q celery
fi
say "ready"
