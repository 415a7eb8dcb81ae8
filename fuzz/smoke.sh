#!/bin/sh
# A short smoke run of every fuzz target (30 s each by default; SECONDS_PER_TARGET=N to change).
# Needs cargo-fuzz (`cargo install cargo-fuzz`); nightly features through RUSTC_BOOTSTRAP.
# Each run starts from the kept corpus (corpus/<target>/: what earlier runs found, minimised with
# `cargo fuzz cmin`) and the hand-made seeds (seeds/<target>/); new inputs go to a scratch
# directory, so a smoke run never changes the repository (see docs/RELIABILITY.md to grow it).
set -eu
cd "$(dirname "$0")"
seconds="${SECONDS_PER_TARGET:-30}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in decode typed recorded journal snapshot; do
    echo "== $target ($seconds s)"
    mkdir -p "$scratch/$target"
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "$scratch/$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1
done
