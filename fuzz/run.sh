#!/usr/bin/env bash
# Fuzzes the parsers that read what other people wrote: the trigger and the operator's
# configuration, the comment command parser, both forges' webhook payloads and the YAML editor
# (entry points in src/fuzzing.rs). Each target starts from a corpus seeded from fixtures/ and
# demo/, and runs for SECONDS.
#
# usage: fuzz/run.sh [SECONDS] [TARGET ...]    (default: 60 seconds, every target)
#
# CI runs it for a few seconds a target; a longer run (say `fuzz/run.sh 1800`) is for a quiet
# machine. A crash leaves its input in fuzz/artifacts/TARGET/: copy it into
# fuzz/regressions/TARGET/, where `cargo test --test fuzz` replays it forever after, and fix.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(trigger config comment github_payload gitlab_payload yaml_edit)

command -v cargo-fuzz >/dev/null || cargo install --locked --quiet cargo-fuzz
# cargo fuzz passes the compiler unstable flags (coverage instrumentation for libFuzzer);
# the stable compiler accepts them under RUSTC_BOOTSTRAP. No sanitizer: the code under test is
# safe Rust, and this keeps the build short.
export RUSTC_BOOTSTRAP=1

python3 seed.py
for t in "${targets[@]}"; do
  echo "== fuzzing $t for ${secs}s"
  cargo fuzz run --sanitizer none "$t" "corpus/$t" "regressions/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 -max_len=131072 -print_final_stats=1
done
