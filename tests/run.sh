#!/usr/bin/env bash
# The project's one test command: installs the external tools the end-to-end
# tests drive, builds the workspace's binaries (cargo does not build another
# package's binary for the root package's integration tests), then runs every
# test. Extra arguments go to `cargo test`, e.g. `tests/run.sh -- intercept`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# command -> Debian package providing it
declare -A tools=(
    [curl]=curl
    [docker-registry]=docker-registry
    [skopeo]=skopeo
    [jq]=jq
)

missing=()
for cmd in "${!tools[@]}"; do
    if ! command -v "$cmd" >/dev/null 2>&1; then
        missing+=("${tools[$cmd]}")
    fi
done

if ((${#missing[@]} > 0)); then
    if [[ "$(id -u)" -eq 0 ]]; then
        echo "run.sh: installing ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q "${missing[@]}"
    else
        echo "run.sh: missing tools; install them first:" >&2
        echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi

cargo build --workspace --bins

# Fault and hostile-input tests record what they tried; a full run checks
# the README's reliability table against those records.
records=$(mktemp)
output=$(mktemp)
trap 'rm -f "$records" "$output"' EXIT
export PULLCACHE_RELIABILITY_LOG=$records
cargo test --workspace "$@" 2>&1 | tee "$output"

if (($# == 0)); then
    if [[ "${PULLCACHE_UPDATE_README:-}" == 1 ]]; then
        tests/reliability-table.sh "$records" --update
    else
        tests/reliability-table.sh "$records"
    fi
fi

# One closing line for the whole run: cargo prints a result per test binary,
# the last of which (doc tests) is often empty.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$output"
