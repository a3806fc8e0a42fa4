#!/usr/bin/env bash
# Fails when a source file of the workspace is over 700 lines, its unit tests aside (a
# `tests.rs` or `*_tests.rs` file, and everything from the first `#[cfg(test)]` on).
set -euo pipefail
cd "$(dirname "$0")/.."
limit=700
over=0
while read -r f; do
    n=$(sed '/#\[cfg(test)\]/q' "$f" | wc -l)
    if [ "$n" -gt "$limit" ]; then
        echo "$f: $n lines (limit $limit, tests aside)"
        over=1
    fi
done < <(git ls-files 'crates/*.rs' | grep -v -E '/tests/|/benches/|(^|/)tests\.rs$|_tests\.rs$')
[ "$over" -eq 0 ] && echo "no source file over $limit lines"
exit "$over"
