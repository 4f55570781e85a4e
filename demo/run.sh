#!/usr/bin/env bash
# The quick start: builds a demo deployment repository (a bare git repository holding real
# Helm values files), a signing key, and runs a release of demo/app into it.
# Everything it makes is under target/demo; running it again starts from scratch.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work="$root/target/demo"
rm -rf "$work"
mkdir -p "$work"

echo "== building release-coordinator"
cargo build --quiet --manifest-path "$root/Cargo.toml" --bin release-coordinator
bin="$root/target/debug/release-coordinator"

echo "== creating the deployment repository $work/deploy.git"
seed="$work/seed"
mkdir -p "$seed/apps/podinfo" "$seed/apps/guestbook"
for env in staging production; do
  cp "$root/fixtures/deploy-repos/values/stefanprodan__podinfo/charts/podinfo/values.yaml" "$seed/apps/podinfo/values-$env.yaml"
  cp "$root/fixtures/deploy-repos/values/argoproj__argocd-example-apps/helm-guestbook/values.yaml" "$seed/apps/guestbook/values-$env.yaml"
done
git init --quiet --bare --initial-branch=main "$work/deploy.git"
git -C "$seed" init --quiet --initial-branch=main
git -C "$seed" -c user.name=demo -c user.email=demo@localhost add .
git -C "$seed" -c user.name=demo -c user.email=demo@localhost commit --quiet -m "Initial deployment state"
git -C "$seed" push --quiet "$work/deploy.git" main

cp -r "$root/demo/config" "$work/config"
"$bin" keygen --out "$work/config/release-signing.pem"

echo "== validate"
"$bin" validate "$root/demo/app" --config "$work/config/orchestration-config.yaml"
echo "== release --push"
cd "$work"
"$bin" release --config config/orchestration-config.yaml --trigger-dir "$root/demo/app" --push

echo "== the deployment repository now has"
git --git-dir "$work/deploy.git" branch --list 'release/*' --format '  %(refname:short)  %(subject)'
git --git-dir "$work/deploy.git" diff main release/mvp-v1/production -- apps/podinfo/values-production.yaml
git --git-dir "$work/deploy.git" show release/mvp-v1/production:releases/mvp-v1/signed-release-manifest.yaml > "$work/manifest.yaml"
"$bin" verify --key "$work/config/release-signing.pem.pub" "$work/manifest.yaml"

cat <<EOF2

Done: the release branches are in $work/deploy.git, recorded in $work/config/release-coordinator.db.
Next:
  demo/serve.sh             the bot itself, against a fake GitHub: a trigger push opens pull
                            requests, /approve merges them, the release is tagged and published
  demo/serve.sh --gitlab    the same on a fake GitLab
  README.md                 connecting a real forge, the container image, the policy
EOF2
