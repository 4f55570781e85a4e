#!/usr/bin/env python3
"""Generates the benchmark deployment repository with `git fast-import`.

SERVICES services x 3 environments (dev, staging, production), one real Helm values file
(podinfo's, from fixtures/) per service and environment, and COMMITS commits on `main`: the first
adds every file, each later one bumps one service's image tag in one environment, as a busy
GitOps repository looks after a few years.

usage: gen-deploy-repo.py BARE_REPO_DIR [SERVICES] [COMMITS]
"""
import os
import subprocess
import sys

ENVS = ("dev", "staging", "production")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATE = os.path.join(
    ROOT, "fixtures/deploy-repos/values/stefanprodan__podinfo/charts/podinfo/values.yaml"
)


def main() -> None:
    repo = sys.argv[1]
    services = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    commits = int(sys.argv[3]) if len(sys.argv) > 3 else 20000
    with open(TEMPLATE, encoding="utf-8") as f:
        template = f.read()
    # The podinfo image tag is the first `tag:` line; every file gets its own value.
    head, sep, tail = template.partition("  tag: 6.14.1\n")
    assert sep, "podinfo template changed: no `  tag: 6.14.1` line"

    def values(tag: str) -> bytes:
        return (head + f"  tag: {tag}\n" + tail).encode()

    subprocess.run(["git", "init", "--quiet", "--bare", "--initial-branch=main", repo], check=True)
    fi = subprocess.Popen(
        ["git", "fast-import", "--quiet", "--done"], cwd=repo, stdin=subprocess.PIPE
    )
    out = fi.stdin
    when = 1_600_000_000

    def data(payload: bytes) -> None:
        out.write(b"data %d\n" % len(payload))
        out.write(payload)
        out.write(b"\n")

    def commit(message: str, changes) -> None:
        nonlocal when
        when += 600
        out.write(b"commit refs/heads/main\n")
        out.write(b"committer Bench <bench@localhost> %d +0000\n" % when)
        data(message.encode())
        for path, payload in changes:
            out.write(b"M 100644 inline %s\n" % path.encode())
            data(payload)

    def path(service: int, env: str) -> str:
        return f"apps/svc-{service:04d}/values-{env}.yaml"

    commit(
        "Initial deployment state",
        ((path(s, e), values("1.0.0")) for s in range(services) for e in ENVS),
    )
    for n in range(1, commits):
        s, e = n % services, ENVS[(n // services) % len(ENVS)]
        commit(f"svc-{s:04d}: deploy 1.0.{n} to {e}", [(path(s, e), values(f"1.0.{n}"))])
    out.write(b"done\n")
    out.close()
    if fi.wait() != 0:
        sys.exit("git fast-import failed")
    # fast-import writes loose deltas; a real server's repository is packed.
    subprocess.run(["git", "-C", repo, "repack", "-adq", "--window=50"], check=True)


if __name__ == "__main__":
    main()
