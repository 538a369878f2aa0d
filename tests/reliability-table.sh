#!/usr/bin/env bash
# Renders the reliability table from the records the fault and hostile-input
# tests wrote (one JSON object per line: fault, tries, outcome) and checks
# that README.md carries exactly that table between its reliability markers.
# With --update it rewrites the README's copy instead of failing.
#
#   tests/reliability-table.sh RECORDS [--update]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

records=$1
mode=${2:-check}
readme=README.md
begin='<!-- reliability-table:begin -->'
end='<!-- reliability-table:end -->'

table=$(jq -rs '
  group_by([.fault, .outcome])
  | map({fault: .[0].fault, outcome: .[0].outcome, tries: (map(.tries) | add)})
  | sort_by(.fault | ascii_downcase)
  | (["| Fault or hostile input | Tries | Outcome |", "| --- | ---: | --- |"]
     + map("| \(.fault) | \(.tries) | \(.outcome) |"))
  | .[]' "$records")

current=$(awk -v b="$begin" -v e="$end" '$0==e{inside=0} inside{print} $0==b{inside=1}' "$readme")

if [[ "$table" == "$current" ]]; then
    echo "reliability table: README.md matches the test run ($(wc -l < "$records") records)"
    exit 0
fi

if [[ "$mode" == "--update" ]]; then
    tmp=$(mktemp)
    awk -v b="$begin" -v e="$end" -v t="$table" '
        $0==b {print; print t; skip=1; next}
        $0==e {skip=0}
        !skip {print}' "$readme" > "$tmp"
    mv "$tmp" "$readme"
    echo "reliability table: README.md updated"
    exit 0
fi

echo "reliability table: README.md differs from what the tests did." >&2
echo "Run 'PULLCACHE_UPDATE_README=1 tests/run.sh' and commit README.md. The table from this run:" >&2
echo "$table" >&2
diff <(echo "$current") <(echo "$table") >&2 || true
exit 1
