#!/bin/bash
# The engine's balance at scale (issue 14): the real engine on 16, 64 and 256
# simulated ranks of the in-process transport; an entry costs a 200 us sleep
# (a metadata round trip), a readdir page of 1,000 names another, a message
# 20 us. Sleeping threads cost no CPU, so this runs on a small machine.
#   bash bench/balance.sh [RANKS...]      (default 16 64 256)
# Extra flags go to the example: BALANCE_ARGS="--threads 4 --batch 1000".
source "$(dirname "$0")/common.sh"
cargo build --release --quiet --example engine_balance
out=bench/out/balance.txt
ranks=("$@")
[ ${#ranks[@]} -gt 0 ] || ranks=(16 64 256)
# shellcheck disable=SC2086
/usr/bin/time -f '%e s wall, %U s user, %S s system CPU (the simulation host)' \
    target/release/examples/engine_balance "${ranks[@]}" ${BALANCE_ARGS:---threads 2 --batch 100 --seconds 4} \
    2>&1 | tee "$out"
echo "written to $out"
