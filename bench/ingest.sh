#!/usr/bin/env bash
# Benchmark: webhook ingest. `release-coordinator serve` (release build, SQLite store with
# synchronous=FULL) takes signed GitHub deliveries from wrk: each is verified (HMAC-SHA256),
# parsed once, committed to the store (group commit) and only then answered 202.
#
# usage: bench/ingest.sh [SECONDS] [CONNECTIONS] [PAYLOAD]     (needs wrk, python3)
#   PAYLOAD: a file under fixtures/github/webhooks/api.github.com/ (default: a real
#   issue_comment, the delivery a command bot receives most).
#   DEPLOYMENT_REPO=Codertocat/Hello-World makes the examples' repository the deployment
#   repository, so that reviews and pull request events there are work for the worker too
#   (by default they are stored as already processed: nothing the bot acts on).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-20}
connections=${2:-64}
payload=${3:-issue_comment/created.payload.json}
kind=${payload%%/*}
work="$root/target/bench/ingest"
rm -rf "$work" && mkdir -p "$work/config"
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }

cargo build --quiet --release --locked --manifest-path "$root/Cargo.toml" --bin release-coordinator
bin="$root/target/release/release-coordinator"

cp "$root"/demo/config/*.yaml "$work/config/"
printf 'forges:\n  github:\n    webhookSecretEnv: [BENCH_WEBHOOK_SECRET]\n    tokenEnv: BENCH_GITHUB_TOKEN\n    apiUrl: http://127.0.0.1:9\n    deploymentRepo: %s\n' "${DEPLOYMENT_REPO:-acme/deploy}" >>"$work/config/orchestration-config.yaml"
"$bin" keygen --out "$work/config/release-signing.pem" >/dev/null
export BENCH_WEBHOOK_SECRET=bench-secret BENCH_GITHUB_TOKEN=bench-token
body="$root/fixtures/github/webhooks/api.github.com/$payload"
signature=$(python3 -c 'import hmac,hashlib,sys; print("sha256="+hmac.new(b"bench-secret", open(sys.argv[1],"rb").read(), hashlib.sha256).hexdigest())' "$body")

RC_LOG=${RC_LOG:-warn} TOKIO_WORKER_THREADS=${WORKERS:-2} "$bin" serve --config "$work/config/orchestration-config.yaml" --store "sqlite://$work/store.db" \
  --listen 127.0.0.1:0 --max-connections-per-ip 0 >"$work/serve.out" 2>"$work/serve.err" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q listening "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$work/serve.out")

sleep 1
echo "== memory of serve idle: $(awk '/VmRSS/ {print $2 " kB"}' /proc/$pid/status)"
echo "== $kind payload $(wc -c <"$body") bytes, $connections connections, ${seconds}s"
wrk --latency -t 1 -c "$connections" -d "${seconds}s" -s "$root/bench/ingest.lua" "$url" -- "$body" "$signature" "$kind" \
  | tee "$work/wrk.txt"
echo "== memory of serve after the run: $(awk '/VmHWM/ {print "peak " $2 " kB"} ' /proc/$pid/status), $(awk '/VmRSS/ {print "now " $2 " kB"}' /proc/$pid/status)"
kill -9 $pid
wait $pid 2>/dev/null || true
stored=$(python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("select count(*) from deliveries").fetchone()[0])' "$work/store.db")
echo "== deliveries in the store after kill -9: $stored (wrk counted the 202s above)"
