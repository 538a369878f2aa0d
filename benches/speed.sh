#!/usr/bin/env bash
# The speed benchmark's one command: makes sure curl (its client) and
# Debian's nginx (two of its baselines) are installed, builds the release
# `pullcache` binary it drives (cargo does not build another package's
# binary for the root package's benches), then runs
# `cargo bench --bench speed`. Everything runs on 127.0.0.1. The
# environment passes through, e.g.
#   PULLCACHE_BENCH_LARGE=1 benches/speed.sh          # 256 MiB and 1 GiB
#   PULLCACHE_BENCH_SIZES_MIB=64 PULLCACHE_BENCH_ROUNDS=3 benches/speed.sh
#   PULLCACHE_BENCH_PHASES=hit,miss benches/speed.sh
# (docs/benchmarks.md lists every variable). Without nginx (not root, no
# apt-get) the nginx baselines are reported as not measured. Extra
# arguments go to `cargo bench`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
if ! command -v nginx >/dev/null 2>&1 && [[ ! -x /usr/sbin/nginx ]]; then
    missing+=(nginx)
fi
if ((${#missing[@]})); then
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "speed.sh: installing ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}"
        # The package's own service is not needed (the benchmark starts
        # its own nginx on a free port); don't leave it running.
        if [[ " ${missing[*]} " == *" nginx "* ]] && command -v systemctl >/dev/null 2>&1; then
            systemctl stop nginx >/dev/null 2>&1 || true
        fi
    elif [[ " ${missing[*]} " == *" curl "* ]]; then
        echo "speed.sh: curl is missing; install it first:" >&2
        echo "  sudo apt-get update && sudo apt-get install -y curl nginx" >&2
        exit 1
    else
        echo "speed.sh: nginx is missing (not root): its baselines will not be measured;" >&2
        echo "  sudo apt-get install -y nginx   to measure them" >&2
    fi
fi

cargo build --release -p pullcache
cargo bench --bench speed "$@"
