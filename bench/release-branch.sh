#!/usr/bin/env bash
# Benchmark: building the release branches on a large deployment repository.
#
# The repository: 2,000 services x 3 environments (6,000 real Helm values files) and 20,000
# commits (bench/gen-deploy-repo.py). The job: release one service to staging and production,
# i.e. two release branches, each one commit, pushed to the remote.
#
#   release-coordinator, cold  empty cache: shallow fetch into a bare cache, commit from objects
#   release-coordinator, warm  cache from an earlier run: fetch (nothing new), commit, push
#   plan, cold and warm        the same up to the commits: the diff per file, nothing written
#   git CLI, cold              clone + checkout, per environment branch + edit + commit, push
#   git CLI, warm              existing clone: fetch, per environment branch + edit + commit, push
#
# The git CLI baseline does less than the bot (it edits one values file per branch; the bot also
# renders and signs the release documents), so the comparison favours git.
#
# usage: bench/release-branch.sh [SERVICES] [COMMITS]     (needs hyperfine and python3)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
services=${1:-2000}
commits=${2:-20000}
work="$root/target/bench/release-branch"
remote="$work/deploy-${services}x3-${commits}.git"
mkdir -p "$work"
command -v hyperfine >/dev/null || { echo "needs hyperfine (apt-get install hyperfine)" >&2; exit 1; }

echo "== building release-coordinator (release profile)"
cargo build --quiet --release --locked --manifest-path "$root/Cargo.toml" --bin release-coordinator
bin="$root/target/release/release-coordinator"

if [ ! -d "$remote" ]; then
  echo "== generating $remote (takes about a minute)"
  python3 "$root/bench/gen-deploy-repo.py" "$remote.tmp" "$services" "$commits"
  mv "$remote.tmp" "$remote"
fi
echo "   $(git --git-dir "$remote" rev-list --count main) commits, $(git --git-dir "$remote" ls-tree -r main | wc -l) files, $(du -sh "$remote" | cut -f1)"

# Operator configuration listing every service, as a real one would.
cfg="$work/config"
rm -rf "$cfg" && mkdir -p "$cfg"
cp "$root"/demo/config/{release-policy,version-resolver,milestones}.yaml "$cfg/"
"$bin" keygen --out "$cfg/release-signing.pem" >/dev/null
{
  echo "deployment:"
  echo "  repo: file://$remote"
  echo "  baseBranch: main"
  echo "  cacheDir: $work/cache"
  echo "signing:"
  echo "  keyFile: release-signing.pem"
  echo "services:"
  for ((s = 0; s < services; s++)); do
    n=$(printf 'svc-%04d' "$s")
    echo "  - name: $n"
    echo "    image: registry.example.com/$n"
    echo "    tagPath: image.tag"
    echo "    values:"
    for env in dev staging production; do echo "      $env: apps/$n/values-$env.yaml"; done
  done
  echo "defaults:"
  echo "  store: sqlite://$work/store.db"
} >"$cfg/orchestration-config.yaml"

# The application repository: the demo trigger, releasing one service.
app="$work/app"
rm -rf "$app" && mkdir -p "$app"
cp "$root"/demo/app/* "$app/"
sed -i 's/^  - tag-docker: .*/  - tag-docker: svc-0042/' "$app/promotion-trigger.yaml"
git -C "$app" init --quiet --initial-branch=main
git -C "$app" -c user.name=bench -c user.email=bench@localhost add .
git -C "$app" -c user.name=bench -c user.email=bench@localhost commit --quiet -m app

version=$(sed -n 's/^version_tag: //p' "$app/promotion-trigger.yaml")
branches="release/$version/staging release/$version/production"
delete_branches="for b in $branches; do git --git-dir '$remote' update-ref -d refs/heads/\$b; done"

cat >"$work/git-cli.sh" <<SCRIPT
#!/usr/bin/env bash
# The same job done with the git command line in a working tree.
set -euo pipefail
clone="$work/git-clone"
if [ "\$1" = cold ]; then
  git clone --quiet --no-local "file://$remote" "\$clone"
else
  git -C "\$clone" fetch --quiet origin main
fi
cd "\$clone"
for env in staging production; do
  git checkout --quiet -B "release/$version/\$env" origin/main
  sed -i 's/^  tag: .*/  tag: $version/' "apps/svc-0042/values-\$env.yaml"
  git -c user.name=bench -c user.email=bench@localhost commit --quiet -am "Release $version to \$env"
done
git push --quiet --atomic origin $branches
SCRIPT
chmod +x "$work/git-cli.sh"

cd "$work"
rm -rf cache git-clone store.db
eval "$delete_branches"
"$work/git-cli.sh" cold && eval "$delete_branches"   # leaves a clone for the warm git runs
"$bin" release --config "$cfg/orchestration-config.yaml" --trigger-dir "$app" --push >/dev/null
eval "$delete_branches"
hyperfine --warmup 1 --runs "${RUNS:-10}" --export-markdown "$work/results.md" \
  --prepare "rm -rf cache store.db; $delete_branches" \
  -n "release-coordinator release --push, cold" \
  "$bin release --config $cfg/orchestration-config.yaml --trigger-dir $app --push" \
  --prepare "rm -f store.db; $delete_branches" \
  -n "release-coordinator release --push, warm" \
  "$bin release --config $cfg/orchestration-config.yaml --trigger-dir $app --push" \
  --prepare "rm -rf cache store.db" \
  -n "release-coordinator plan, cold" \
  "$bin plan --config $cfg/orchestration-config.yaml --trigger-dir $app" \
  --prepare "rm -f store.db" \
  -n "release-coordinator plan, warm" \
  "$bin plan --config $cfg/orchestration-config.yaml --trigger-dir $app" \
  --prepare "rm -rf git-clone; $delete_branches" \
  -n "git CLI, cold" "$work/git-cli.sh cold" \
  --prepare "$delete_branches" \
  -n "git CLI, warm" "$work/git-cli.sh warm"
echo "== results in $work/results.md"
