#!/usr/bin/env bash
# Benchmark: validation time against trigger size.
#
# A trigger with N promotion targets, cycling through a deploy target, a tag-docker target and a
# notify target (so two thirds of them repeat a target already listed: the hostile shape, which
# also makes thousands of problems), validated by `release-coordinator validate` against the
# demo's configuration. Validation must stay linear in N: each line reports N, the file's size,
# the problems found and the wall time (best of 3).
#
# usage: bench/validate.sh [N ...]          (default 1000 3000 10000 30000)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000 3000 10000 30000)
command -v bc >/dev/null || { echo "needs bc (apt-get install bc)" >&2; exit 1; }
work="$root/target/bench/validate"
rm -rf "$work" && mkdir -p "$work"

echo "== building release-coordinator (release profile)"
cargo build --quiet --release --locked --manifest-path "$root/Cargo.toml" --bin release-coordinator
bin="$root/target/release/release-coordinator"

printf '%8s %10s %9s %9s\n' targets bytes problems seconds
for n in "${sizes[@]}"; do
  app="$work/app-$n"
  cp -r "$root/demo/app" "$app"
  python3 - "$app/promotion-trigger.yaml" "$n" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
head, tail = open(path).read().split("promotion_targets:\n")
cycle = ["  - deploy-to-staging\n", "  - tag-docker: podinfo, guestbook\n", "  - notify: teams\n"]
rest = "\n".join(l for l in tail.split("\n") if not l.startswith("  -"))
open(path, "w").write(head + "promotion_targets:\n" + "".join(cycle[i % 3] for i in range(n)) + rest)
PY
  best=""
  for _ in 1 2 3; do
    start=$(date +%s.%N)
    problems=$("$bin" validate "$app" --config "$root/demo/config/orchestration-config.yaml" 2>&1 | tail -1 | cut -d' ' -f1 || true)
    t=$(echo "$(date +%s.%N) - $start" | bc)
    if [ -z "$best" ] || [ "$(echo "$t < $best" | bc)" = 1 ]; then best=$t; fi
  done
  printf '%8d %10d %9s %9.3f\n' "$n" "$(stat -c %s "$app/promotion-trigger.yaml")" "$problems" "$best"
done
