#!/usr/bin/env bash
# Benchmark: N releases at once in one deployment repository (benches/many_releases.rs): N
# triggers pushed one after another, the time until all N pull requests are open, then every one
# approved and the time until all are merged.
#
# usage: bench/many-releases.sh [N] [github|gitlab]      (default 500 github)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo bench --locked --bench many_releases -- "${1:-500}" "${2:-github}"
