#!/usr/bin/env bash
# The load benchmark's one command: makes sure curl (the benchmark's client)
# is installed, builds the release `pullcache` binary the benchmark drives
# (cargo does not build another package's binary for the root package's
# benches), then runs `cargo bench --bench load`. The environment passes
# through, e.g.
#   PULLCACHE_BENCH_MIB=64 PULLCACHE_BENCH_ROUNDS=3 benches/run.sh
# Extra arguments go to `cargo bench`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v curl >/dev/null 2>&1; then
    if [[ "$(id -u)" -eq 0 ]]; then
        echo "run.sh: installing curl" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q curl
    else
        echo "run.sh: curl is missing; install it first:" >&2
        echo "  sudo apt-get update && sudo apt-get install -y curl" >&2
        exit 1
    fi
fi

cargo build --release -p pullcache
cargo bench --bench load "$@"
