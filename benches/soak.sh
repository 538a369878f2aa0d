#!/usr/bin/env bash
# The soak test's one command: makes sure curl (a few of the soak's clients
# are the real curl) is installed, builds the release `pullcache` binary the
# soak drives (cargo does not build another package's binary for the root
# package's benches), then runs `cargo bench --bench soak`. The environment
# passes through, e.g.
#   PULLCACHE_SOAK_SECONDS=30 PULLCACHE_SOAK_CLIENTS=50 benches/soak.sh
# Defaults: 180 s, 200 clients (4 of them curl loops). Everything runs on
# 127.0.0.1. Extra arguments go to `cargo bench`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v curl >/dev/null 2>&1; then
    if [[ "$(id -u)" -eq 0 ]]; then
        echo "soak.sh: installing curl" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q curl
    else
        echo "soak.sh: curl is missing; install it first:" >&2
        echo "  sudo apt-get update && sudo apt-get install -y curl" >&2
        exit 1
    fi
fi

cargo build --release -p pullcache
cargo bench --bench soak "$@"
