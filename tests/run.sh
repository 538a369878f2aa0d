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
cargo test --workspace "$@"
