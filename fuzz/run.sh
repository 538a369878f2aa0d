#!/usr/bin/env bash
# Fuzzes pullcache's parsers with cargo-fuzz (libFuzzer) on the STABLE
# toolchain: `--sanitizer none` makes cargo-fuzz pass only stable `-C` flags
# (see docs/fuzzing.md). Each target runs for FUZZ_SECONDS (default 60);
# the script exits non-zero if any target crashes, times out or runs out of
# memory, and prints the input that did it.
#
#   fuzz/run.sh                      # every target, 60 s each
#   FUZZ_SECONDS=600 fuzz/run.sh registry_route
#
# Environment:
#   FUZZ_SECONDS        seconds per target (default 60)
#   FUZZ_VERBOSE=1      stream libFuzzer's output instead of only a summary
#   CARGO_FUZZ_VERSION  cargo-fuzz to install if missing (default 0.13.2)
#
# Needs a Rust stable toolchain (cargo) and a C/C++ compiler (libFuzzer is
# C++, built by libfuzzer-sys; aws-lc-sys is C). As root on Debian the
# compilers are installed with apt-get when missing.
set -euo pipefail

fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$fuzz_dir"

all_targets=(connect_authority registry_route range_header www_authenticate config_toml)
seconds="${FUZZ_SECONDS:-60}"
cargo_fuzz_version="${CARGO_FUZZ_VERSION:-0.13.2}"

if (($# > 0)); then
    targets=("$@")
else
    targets=("${all_targets[@]}")
fi
for t in "${targets[@]}"; do
    if [[ ! -f "fuzz_targets/$t.rs" ]]; then
        echo "run.sh: unknown target $t (have: ${all_targets[*]})" >&2
        exit 2
    fi
done
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "run.sh: FUZZ_SECONDS must be a positive whole number, not '$seconds'" >&2
    exit 2
fi

# --- system packages -------------------------------------------------------
# command -> Debian package providing it
declare -A tools=([cc]=gcc [c++]=g++ [ar]=binutils)
missing=()
for cmd in "${!tools[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${tools[$cmd]}")
done
if ((${#missing[@]} > 0)); then
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "run.sh: installing ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}" libc6-dev
    else
        echo "run.sh: missing compilers; install them first:" >&2
        echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]} libc6-dev" >&2
        exit 1
    fi
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "run.sh: cargo not found; install a stable Rust toolchain (rustup) first" >&2
    exit 1
fi

# --- cargo-fuzz ------------------------------------------------------------
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "run.sh: installing cargo-fuzz $cargo_fuzz_version" >&2
    cargo install --locked cargo-fuzz --version "$cargo_fuzz_version"
fi
echo "run.sh: $(cargo fuzz --version), $(rustc --version)"

# The fuzz crate is its own workspace with its own target dir, so it never
# waits on (or invalidates) the main workspace's build.
export CARGO_TARGET_DIR="$fuzz_dir/target"

# -s none: no AddressSanitizer, which is what needs nightly (-Zsanitizer).
# Coverage instrumentation (-Cpasses=sancov-module, -Cllvm-args=...) and
# debug assertions are stable flags. Release mode with -Cdebug-assertions,
# so overflow checks and debug_assert! are on.
fuzz_flags=(--sanitizer none)

# `cargo fuzz build` takes one target or none (= all of them).
start=$SECONDS
if ((${#targets[@]} == ${#all_targets[@]})); then
    cargo fuzz build "${fuzz_flags[@]}"
else
    for t in "${targets[@]}"; do
        cargo fuzz build "${fuzz_flags[@]}" "$t"
    done
fi
echo "run.sh: build took $((SECONDS - start)) s"

# Per-target libFuzzer limits: inputs longer than a parser can accept only
# waste executions.
declare -A max_len=(
    [connect_authority]=512
    [registry_route]=1024
    [range_header]=256
    [www_authenticate]=2048
    [config_toml]=8192
)

log_dir="$fuzz_dir/target/fuzz-logs"
mkdir -p "$log_dir"
failed=()
summary=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t" "regressions/$t"
    # Seeds are committed; the corpus is not (it only grows locally).
    cp -f seeds/"$t"/* "corpus/$t/"
    dict=()
    [[ -f "dicts/$t.dict" ]] && dict=("-dict=dicts/$t.dict")
    log="$log_dir/$t.log"
    echo "run.sh: fuzzing $t for ${seconds}s (log: ${log#"$fuzz_dir"/})"
    # New inputs go to the first corpus dir; regressions are read too, so
    # every saved crash is re-run first.
    # ${dict[@]+...}: an empty array is "unbound" to set -u on old bash.
    set +e
    cargo fuzz run "${fuzz_flags[@]}" "$t" "corpus/$t" "regressions/$t" -- \
        -max_total_time="$seconds" \
        -timeout=10 \
        -rss_limit_mb=2048 \
        -max_len="${max_len[$t]}" \
        -print_final_stats=1 \
        ${dict[@]+"${dict[@]}"} \
        </dev/null >"$log" 2>&1 &
    pid=$!
    if [[ "${FUZZ_VERBOSE:-0}" == 1 ]]; then
        tail -n +1 -f "$log" --pid="$pid"
    fi
    wait "$pid"
    status=$?
    set -e

    done_line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)"
    [[ -n "$done_line" ]] || done_line="$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)"
    execs="$(sed -n 's/^stat::average_exec_per_sec:[[:space:]]*//p' "$log" | tail -n 1)"
    cov="$(sed -nE 's/.*cov: ([0-9]+) ft: ([0-9]+) corp: ([0-9]+\/[^ ]+).*/cov \1, ft \2, corpus \3/p' <<<"$done_line")"
    summary+=("$(printf '%-18s exit %-3s %8s exec/s  %s' "$t" "$status" "${execs:-?}" "${cov:-?}")")

    if ((status != 0)); then
        failed+=("$t")
        echo "run.sh: $t FAILED (exit $status)" >&2
        # The panic message (up to the backtrace) and libFuzzer's verdict
        # (deadly signal, timeout, out-of-memory); the whole log if neither.
        report="$(awk '/panicked at/ {p = 1} /^stack backtrace:|^note: run with/ {p = 0}
                      p || /^SUMMARY: / {print}' "$log")"
        if [[ -n "$report" ]]; then
            echo "$report" >&2
        else
            tail -n 40 "$log" >&2
        fi
        # libFuzzer names the input it saved: crash-, timeout-, oom-, slow-unit-...
        while read -r unit; do
            [[ -f "$unit" ]] || continue
            rel="${unit#"$fuzz_dir"/}"
            echo "run.sh: $t: input saved at fuzz/$rel ($(wc -c <"$unit") bytes):" >&2
            od -A d -c "$unit" | head -n 40 >&2
            echo "run.sh: reproduce: (cd fuzz && cargo fuzz run -s none $t $rel)" >&2
            echo "run.sh: keep it:   cp fuzz/$rel fuzz/regressions/$t/<short-name>" >&2
        done < <(sed -n 's/.*Test unit written to //p' "$log")
    fi
done

echo
echo "run.sh: summary (${seconds}s per target; cov = covered edges, ft = features)"
printf '  %s\n' "${summary[@]}"
if ((${#failed[@]} > 0)); then
    echo "run.sh: findings in: ${failed[*]}" >&2
    exit 1
fi
echo "run.sh: no crashes"
