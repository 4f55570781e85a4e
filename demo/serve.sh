#!/usr/bin/env bash
# The local loop: the bot (`release-coordinator serve`) against the fake GitHub (or, with
# --gitlab, the fake GitLab), with an application repository (acme/shop), a deployment
# repository (acme/deploy, real Helm values files), a ready configuration and a signing key.
# It prints the commands that play the people (push the trigger, pass the checks, approve) and
# serves until Ctrl-C. Everything it makes is under target/demo-serve (DEMO_DIR); running it
# again starts from scratch.
#
#   demo/serve.sh [--gitlab]
#
# Ports (fixed, so the printed commands and the configuration stay right): the bot on 8080,
# the fake forge's API on 9000, its control port on 9100; DEMO_BOT_PORT, DEMO_API_PORT and
# DEMO_CONTROL_PORT change them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
forge=github
case "${1:-}" in
  --gitlab) forge=gitlab ;;
  --github | "") ;;
  -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "unknown argument $1 (use --gitlab, or nothing for GitHub)" >&2; exit 2 ;;
esac
bot_port=${DEMO_BOT_PORT:-8080}
api_port=${DEMO_API_PORT:-9000}
control_port=${DEMO_CONTROL_PORT:-9100}
work=${DEMO_DIR:-$root/target/demo-serve}
control="http://127.0.0.1:$control_port"

for port in "$bot_port" "$api_port" "$control_port"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is taken (another demo/serve.sh?); stop it or set DEMO_BOT_PORT, DEMO_API_PORT, DEMO_CONTROL_PORT" >&2
    exit 1
  fi
done

echo "== building release-coordinator and fake-forge"
cargo build --quiet --manifest-path "$root/Cargo.toml" -p release-coordinator -p fake-forge --bins
bin="$root/target/debug"

rm -rf "$work"
mkdir -p "$work/seed/deploy/apps/podinfo" "$work/seed/deploy/apps/guestbook" "$work/config"
for env in staging production; do
  cp "$root/fixtures/deploy-repos/values/stefanprodan__podinfo/charts/podinfo/values.yaml" "$work/seed/deploy/apps/podinfo/values-$env.yaml"
  cp "$root/fixtures/deploy-repos/values/argoproj__argocd-example-apps/helm-guestbook/values.yaml" "$work/seed/deploy/apps/guestbook/values-$env.yaml"
done

# Waits until URL answers (at most 10 s); shows LOG and fails when it does not.
wait_for() {
  for _ in $(seq 100); do
    curl -fsS "$1" > /dev/null 2>&1 && return 0
    sleep 0.1
  done
  curl -fsS "$1" > /dev/null || { cat "$2" >&2; exit 1; }
}

pids=()
stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop EXIT
trap 'exit 130' INT TERM

echo "== starting the fake $forge (API on $api_port, control on $control_port)"
forge_flag=()
[ "$forge" = gitlab ] && forge_flag=(--gitlab)
"$bin/fake-forge" --root "$work/fake" "${forge_flag[@]}" \
  --api-port "$api_port" --control-port "$control_port" \
  --repo "acme/deploy=$work/seed/deploy" --empty-repo acme/shop \
  --team acme/product=bob \
  --webhook "http://127.0.0.1:$bot_port/webhooks/$forge" --secret demo-webhook-secret \
  > "$work/fake-forge.log" 2>&1 &
pids+=($!)
wait_for "$control/" "$work/fake-forge.log"

echo "== configuring the bot in $work/config"
cp "$root/demo/config/release-policy.yaml" "$root/demo/config/version-resolver.yaml" "$root/demo/config/milestones.yaml" "$work/config/"
clone_base="file://$work/fake/git"
{
  sed "s|^  repo: .*|  repo: $clone_base/acme/deploy.git|" "$root/demo/config/orchestration-config.yaml"
  echo "forges:"
  if [ "$forge" = github ]; then
    cat <<EOF
  github:
    apiUrl: http://127.0.0.1:$api_port
    cloneUrlBase: $clone_base
    tokenEnv: DEMO_FORGE_TOKEN
    webhookSecretEnv: [DEMO_WEBHOOK_SECRET]
    deploymentRepo: acme/deploy
    triggerPath: release/promotion-trigger.yaml
EOF
  else
    cat <<EOF
  gitlab:
    url: http://127.0.0.1:$api_port
    cloneUrlBase: $clone_base
    tokenEnv: DEMO_FORGE_TOKEN
    webhookTokenEnv: [DEMO_WEBHOOK_SECRET]
    deploymentRepo: acme/deploy
    triggerPath: release/promotion-trigger.yaml
EOF
  fi
} > "$work/config/orchestration-config.yaml"
"$bin/release-coordinator" keygen --out "$work/config/release-signing.pem" > /dev/null
"$bin/release-coordinator" validate --config "$work/config/orchestration-config.yaml" "$root/demo/app" > /dev/null

echo "== starting the bot on $bot_port (log: $work/bot.log)"
DEMO_FORGE_TOKEN=demo-token DEMO_WEBHOOK_SECRET=demo-webhook-secret RC_LOG_FORMAT=text \
  "$bin/release-coordinator" serve --config "$work/config/orchestration-config.yaml" \
  --listen "127.0.0.1:$bot_port" > "$work/bot.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$bot_port/healthz" "$work/bot.log"

post() { echo "curl -sS $control/$1 -H 'content-type: application/json' -d '$2'"; }
if [ "$forge" = gitlab ]; then
  pr="merge request" approve_button="GitLab's Approve button"
  read_api="curl -sS 'http://127.0.0.1:$api_port/api/v4/projects/acme%2Fdeploy/merge_requests'"
else
  pr="pull request" approve_button="a review that approves"
  read_api="curl -sS http://127.0.0.1:$api_port/repos/acme/deploy/pulls"
fi
cat <<EOF

Ready. The fake $forge plays the forge; you play the people. In another terminal:

# 1. dave pushes the trigger (demo/app) to acme/shop: the bot opens the staging $pr (1)
$(post push "{\"repo\": \"acme/shop\", \"user\": \"dave\", \"message\": \"Promote mvp-ready\", \"dir\": \"$root/demo/app\", \"under\": \"release\"}")

# 2. CI passes on it, and alice (qa-lead) approves: staging merges, production opens (2)
$(post check '{"repo": "acme/deploy", "number": 1, "name": "ci/build", "conclusion": "success"}')
$(post comment '{"repo": "acme/deploy", "number": 1, "user": "alice", "body": "/approve"}')

# 3. production needs its checks and two roles: alice (qa-lead) and bob (product-owner), who
#    approves with $approve_button
$(post check '{"repo": "acme/deploy", "number": 2, "name": "ci/build", "conclusion": "success"}')
$(post check '{"repo": "acme/deploy", "number": 2, "name": "security-scan", "conclusion": "success"}')
$(post comment '{"repo": "acme/deploy", "number": 2, "user": "alice", "body": "/approve"}')
$(post review '{"repo": "acme/deploy", "number": 2, "user": "bob", "state": "APPROVED"}')

# 4. merged, tagged and released: look at it
curl -sS $control/pulls
curl -sS $control/releases
$bin/release-coordinator status --config $work/config/orchestration-config.yaml
$bin/release-coordinator audit mvp-v1 --config $work/config/orchestration-config.yaml

Between steps, the bot's status comment on each $pr says what it waits for:
  tail -f $work/bot.log        the bot's story, one line per step
  curl -sS $control/           every action of the control port and its body
  curl -sS $control/requests   every API request the fake answered (the bot's calls)
  $read_api
                               the fake's API, read without a token
Ctrl-C stops the bot and the fake.
EOF
wait -n "${pids[@]}"
echo "a process ended; its log is in $work" >&2
exit 1
