"""Seeds each fuzz target's corpus (fuzz/corpus/TARGET/) from the project's fixtures and demo,
in the input shape of its entry point in src/fuzzing.rs. Existing corpus files are kept."""
import hashlib
import pathlib

root = pathlib.Path(__file__).resolve().parent.parent
corpus = root / "fuzz" / "corpus"


def add(target, data):
    d = corpus / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


for f in (root / "demo" / "app").iterdir():
    if f.suffix in (".yaml", ".json"):
        add("trigger", f.read_bytes())
for f in (root / "demo" / "config").glob("*.yaml"):
    add("config", f.read_bytes())
for text in ["/approve", "/hold\n/unhold", "LGTM\n/approve staging\n> /approve quoted",
             "```\n/approve\n```\n/retry", "/aprove", "/help", "/cancel reason here"]:
    add("comment", text.encode())
for kind_dir in (root / "fixtures" / "github" / "webhooks" / "api.github.com").iterdir():
    for f in kind_dir.iterdir():
        add("github_payload", kind_dir.name.encode() + b"\n" + f.read_bytes())
gitlab_kinds = {"push_hook": "Push Hook", "tag_push_hook": "Tag Push Hook",
                "merge_request_hook": "Merge Request Hook", "note_hook_merge_request": "Note Hook",
                "pipeline_hook": "Pipeline Hook"}
for f in (root / "fixtures" / "gitlab" / "webhooks").glob("*.json"):
    add("gitlab_payload", gitlab_kinds[f.stem].encode() + b"\n" + f.read_bytes())
for f in (root / "fixtures" / "deploy-repos").rglob("*.yaml"):
    add("yaml_edit", b"\x00" + f.read_bytes())
print("seeded", {d.name: len(list(d.iterdir())) for d in sorted(corpus.iterdir())})
