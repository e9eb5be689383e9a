#!/bin/bash
# Site check after a copy pass between two Lustre filesystems: do the target's
# layouts follow the source's, and where did the first-level dirs land?
#
#   scripts/lustre-verify.sh SOURCE TARGET [SAMPLE]
#
# Compares the layout template (stripe count/size, pattern, pool, PFL extents;
# never OST indexes or object ids, which differ by design) of SAMPLE random
# files (default 200) and of every first-level directory's default layout,
# then prints the MDT of each first-level target directory. Read-only on both
# sides. Exit 0 when everything compared matches, 1 otherwise.
#
# This runs `lfs`, so it needs a Lustre client; the test suite checks the same
# properties against a test double of liblustreapi (tests/lustre.rs).
set -u
[ $# -ge 2 ] || { echo "usage: $0 SOURCE TARGET [SAMPLE]" >&2; exit 2; }
src=${1%/} dst=${2%/} sample=${3:-200}
command -v lfs >/dev/null || { echo "lustre-verify: lfs not found (no Lustre client here)" >&2; exit 2; }
for d in "$src" "$dst"; do
    [ -d "$d" ] || { echo "lustre-verify: $d: not a directory" >&2; exit 2; }
done

# The template lines of `lfs getstripe -y`; object placement filtered out.
template() {
    lfs getstripe -y "$@" 2>&1 |
        grep -E '^\s*(lcm_entry_count|lcme_extent\.e_start|lcme_extent\.e_end|lmm_stripe_count|lmm_stripe_size|lmm_pattern|lmm_pool|stripe_count|stripe_size|pattern|pool):' |
        sed 's/^\s*//'
}

bad=0 checked=0
check() { # kind, relative path, extra lfs flags
    local kind=$1 rel=$2; shift 2
    local a b
    a=$(template "$@" "$src/$rel") b=$(template "$@" "$dst/$rel")
    checked=$((checked + 1))
    if [ "$a" != "$b" ]; then
        bad=$((bad + 1))
        printf 'lustre-verify: %s %q: layouts differ\n  source: %s\n  target: %s\n' \
            "$kind" "$rel" "$(echo $a)" "$(echo $b)"
    fi
}

# NUL-separated all the way: any byte string is a file name.
while IFS= read -r -d '' f; do
    rel=${f#"$src"/}
    [ -e "$dst/$rel" ] || { echo "lustre-verify: file $(printf %q "$rel"): missing on the target"; bad=$((bad + 1)); continue; }
    check file "$rel"
done < <(find "$src" -type f -print0 | shuf -z -n "$sample")

while IFS= read -r -d '' d; do
    rel=${d#"$src"/}
    [ -d "$dst/$rel" ] || continue
    check dir "$rel" -d
    printf 'lustre-verify: dir %q on MDT %s\n' "$rel" "$(lfs getdirstripe -m "$dst/$rel" 2>&1 | head -1)"
done < <(find "$src" -mindepth 1 -maxdepth 1 -type d -print0)

echo "lustre-verify: $checked layouts compared, $bad differ"
[ "$bad" = 0 ]
