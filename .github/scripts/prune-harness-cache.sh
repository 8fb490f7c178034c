#!/usr/bin/env bash
# Keep a harness cache that CI restores and saves run after run from growing without
# bound: drop the kernel build directories this job did not use, and the kernel source
# trees that no kept build directory refers to.
#
# usage: prune-harness-cache.sh CACHE_DIR STAMP
#   CACHE_DIR  the harness cache (~/.cache/fuse-iomap-harness)
#   STAMP      a file made when the job started. Every use of kernel/<key>/ rewrites its
#              .lock, so a .lock not newer than STAMP belongs to a build this job skipped.
set -euo pipefail

if [ "$#" -ne 2 ]; then
    echo "usage: $0 CACHE_DIR STAMP" >&2
    exit 2
fi
cache=$1
stamp=$2
[ -f "$stamp" ] || { echo "prune: no stamp file $stamp" >&2; exit 2; }
[ -d "$cache/kernel" ] || exit 0

keep=()
for dir in "$cache"/kernel/*; do
    if [ ! -d "$dir" ] || [ -L "$dir" ]; then continue; fi
    if [ "$dir/.lock" -nt "$stamp" ]; then
        # kbuild writes an O= build directory's Makefile as `include <source tree>/Makefile`.
        src=$(sed -n 's|^include \(.*\)/Makefile$|\1|p' "$dir/build/Makefile" 2>/dev/null || true)
        case "$src" in
            */sources/*) keep+=("sources/${src##*/sources/}") ;;
        esac
    else
        echo "prune: $dir (unused by this job)"
        rm -rf "$dir"
    fi
done
# `<profile>-latest` links whose build directory is gone.
find "$cache/kernel" -maxdepth 1 -xtype l -print -delete | sed 's/^/prune: link /'

kept() {
    local k
    for k in "${keep[@]}"; do
        [ "$k" = "$1" ] && return 0
    done
    return 1
}
for kind in debian checkouts patched; do
    for tree in "$cache/sources/$kind"/*; do
        [ -d "$tree" ] || continue
        kept "sources/$kind/${tree##*/}" && continue
        echo "prune: $tree (no kept build uses it)"
        rm -rf "$tree" "$tree.ready"
    done
done
