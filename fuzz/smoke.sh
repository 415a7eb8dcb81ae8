#!/bin/sh
# A short smoke run of every fuzz target (30 s each by default; SECONDS_PER_TARGET=N to change).
# Needs cargo-fuzz (`cargo install cargo-fuzz`); nightly features through RUSTC_BOOTSTRAP.
# Each run is seeded with the corpus kept in corpus/<target>/; new inputs go to a scratch
# directory, so the kept corpus stays small (merge interesting ones by hand with `cargo fuzz cmin`).
set -eu
cd "$(dirname "$0")"
seconds="${SECONDS_PER_TARGET:-30}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in decode typed recorded; do
    echo "== $target ($seconds s)"
    mkdir -p "$scratch/$target"
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1
done
