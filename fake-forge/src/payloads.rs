//! Webhook payloads and API response bodies: GitHub's own examples, with the fake's state
//! written over the fields that carry it.

use serde_json::{Value, json};

use crate::{CheckRun, Comment, CommitComment, Pull, Repo, Review, User};

macro_rules! fixture {
    ($path:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/github/",
            $path
        ))
    };
}

fn template(text: &str) -> Value {
    serde_json::from_str(text).expect("GitHub's examples are JSON")
}

/// Sets `value` at a `/`-separated path, creating objects on the way.
pub fn set(target: &mut Value, path: &str, value: Value) {
    let mut cur = target;
    let parts: Vec<&str> = path.split('/').collect();
    for part in &parts[..parts.len() - 1] {
        if !cur.get(*part).is_some_and(Value::is_object) {
            cur[*part] = json!({});
        }
        cur = &mut cur[*part];
    }
    cur[parts[parts.len() - 1]] = value;
}

pub fn user(u: &User) -> Value {
    let mut v = template(fixture!("api-examples/issue-comment.json"))["user"].clone();
    set(&mut v, "login", json!(u.login));
    set(&mut v, "type", json!(if u.is_bot { "Bot" } else { "User" }));
    v
}

fn login(login: &str) -> Value {
    user(&User {
        login: login.to_string(),
        is_bot: login.ends_with("[bot]"),
    })
}

pub fn repository(r: &Repo) -> Value {
    let mut v = template(fixture!(
        "api-examples/full-repository-default-response.json"
    ));
    let owner = r.full_name.split('/').next().unwrap_or_default();
    let name = r.full_name.split('/').nth(1).unwrap_or_default();
    set(&mut v, "id", json!(r.id));
    set(&mut v, "name", json!(name));
    set(&mut v, "full_name", json!(r.full_name));
    set(&mut v, "owner/login", json!(owner));
    set(&mut v, "default_branch", json!(r.default_branch));
    set(
        &mut v,
        "clone_url",
        json!(format!("file://{}", r.path.display())),
    );
    set(
        &mut v,
        "html_url",
        json!(format!("https://github.com/{}", r.full_name)),
    );
    v
}

/// The smaller repository object webhooks carry.
fn hook_repository(r: &Repo, from: &Value) -> Value {
    let mut v = from["repository"].clone();
    let owner = r.full_name.split('/').next().unwrap_or_default();
    set(&mut v, "id", json!(r.id));
    set(
        &mut v,
        "name",
        json!(r.full_name.split('/').nth(1).unwrap_or_default()),
    );
    set(&mut v, "full_name", json!(r.full_name));
    set(&mut v, "owner/login", json!(owner));
    set(&mut v, "default_branch", json!(r.default_branch));
    v
}

pub fn pull(r: &Repo, p: &Pull) -> Value {
    let mut v = template(fixture!("api-examples/pull-request.json"));
    let head_sha = r.branch_tip(&p.head).unwrap_or_default();
    let base_sha = r.branch_tip(&p.base).unwrap_or_default();
    set(&mut v, "number", json!(p.number));
    set(&mut v, "id", json!(r.id * 100_000 + p.number));
    set(&mut v, "title", json!(p.title));
    set(&mut v, "body", json!(p.body));
    set(&mut v, "updated_at", timestamp(p.updated_at));
    set(
        &mut v,
        "merged_by",
        p.merged_by.as_deref().map(login).unwrap_or(Value::Null),
    );
    set(
        &mut v,
        "state",
        json!(if p.open { "open" } else { "closed" }),
    );
    set(&mut v, "merged", json!(p.merged));
    set(
        &mut v,
        "merged_at",
        if p.merged {
            json!("2026-11-24T00:00:00Z")
        } else {
            Value::Null
        },
    );
    set(&mut v, "merge_commit_sha", json!(p.merge_commit_sha));
    set(&mut v, "user", login(&p.user));
    set(
        &mut v,
        "html_url",
        json!(format!(
            "https://github.com/{}/pull/{}",
            r.full_name, p.number
        )),
    );
    set(&mut v, "head/ref", json!(p.head));
    set(&mut v, "head/sha", json!(head_sha));
    set(
        &mut v,
        "head/label",
        json!(format!(
            "{}:{}",
            r.full_name.split('/').next().unwrap_or_default(),
            p.head
        )),
    );
    set(&mut v, "base/ref", json!(p.base));
    set(&mut v, "base/sha", json!(base_sha));
    v
}

/// A time as GitHub writes it (RFC 3339, whole seconds, UTC).
pub fn timestamp(t: time::OffsetDateTime) -> Value {
    json!(
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    )
}

pub fn comment(c: &Comment) -> Value {
    let mut v = template(fixture!("api-examples/issue-comment.json"));
    set(&mut v, "id", json!(c.id));
    set(&mut v, "body", json!(c.body));
    set(&mut v, "user", user(&c.user));
    set(&mut v, "created_at", timestamp(c.created_at));
    set(&mut v, "updated_at", timestamp(c.updated_at));
    v
}

pub fn commit_comment(c: &CommitComment) -> Value {
    let items = template(fixture!("api-examples/commit-comment-items.json"));
    let mut v = items[0].clone();
    set(&mut v, "id", json!(c.id));
    set(&mut v, "body", json!(c.body));
    set(&mut v, "commit_id", json!(c.sha));
    set(
        &mut v,
        "user",
        user(&User {
            login: c.author.clone(),
            is_bot: true,
        }),
    );
    v
}

pub fn review_body(rv: &Review) -> Value {
    let items = template(fixture!("api-examples/pull-request-review-items.json"));
    let mut v = items[0].clone();
    set(&mut v, "id", json!(rv.id));
    set(&mut v, "state", json!(rv.state));
    set(&mut v, "commit_id", json!(rv.commit_id));
    set(&mut v, "user", user(&rv.user));
    set(&mut v, "submitted_at", timestamp(rv.submitted_at));
    v
}

pub fn check_run_body(c: &CheckRun) -> Value {
    let page = template(fixture!("api-examples/check-run-paginated.json"));
    let mut v = page["check_runs"][0].clone();
    set(&mut v, "id", json!(c.id));
    set(&mut v, "head_sha", json!(c.sha));
    set(&mut v, "name", json!(c.name));
    set(&mut v, "status", json!(c.status));
    set(&mut v, "conclusion", json!(c.conclusion));
    v
}

pub fn check_runs(runs: &[&CheckRun]) -> Value {
    let mut v = template(fixture!("api-examples/check-run-paginated.json"));
    set(&mut v, "total_count", json!(runs.len()));
    set(
        &mut v,
        "check_runs",
        Value::Array(runs.iter().map(|c| check_run_body(c)).collect()),
    );
    v
}

pub fn combined_status(r: &Repo, sha: &str) -> Value {
    let mut v = template(fixture!("api-examples/combined-commit-status.json"));
    let template_status = v["statuses"][0].clone();
    let statuses: Vec<Value> = r
        .statuses
        .iter()
        .filter(|s| s.sha == sha)
        .map(|s| {
            let mut t = template_status.clone();
            set(&mut t, "id", json!(s.id));
            set(&mut t, "context", json!(s.context));
            set(&mut t, "state", json!(s.state));
            set(&mut t, "description", json!(s.description));
            t
        })
        .collect();
    let state = if statuses.iter().any(|s| s["state"] != "success") || statuses.is_empty() {
        "pending"
    } else {
        "success"
    };
    set(&mut v, "sha", json!(sha));
    set(&mut v, "state", json!(state));
    set(&mut v, "total_count", json!(statuses.len()));
    set(&mut v, "statuses", Value::Array(statuses));
    set(&mut v, "repository", repository(r));
    v
}

/// A commit status as listed (`repos/list-commit-statuses-for-ref`), with who posted it.
pub fn status_body(x: &crate::CommitStatus) -> Value {
    let mut v = status(x.id, &x.sha, &x.context, &x.state);
    set(&mut v, "description", json!(x.description));
    set(
        &mut v,
        "creator",
        user(&User {
            login: x.creator.clone(),
            is_bot: x.creator.ends_with("[bot]"),
        }),
    );
    v
}

/// The `status` webhook: its sender is who posted the status.
pub fn status_event(r: &Repo, x: &crate::CommitStatus) -> Value {
    let mut v = template(fixture!("webhooks/api.github.com/status/payload.json"));
    let repo = hook_repository(r, &v);
    set(&mut v, "repository", repo);
    set(&mut v, "id", json!(x.id));
    set(&mut v, "sha", json!(x.sha));
    set(&mut v, "context", json!(x.context));
    set(&mut v, "state", json!(x.state));
    set(&mut v, "description", json!(x.description));
    set(&mut v, "sender", login(&x.creator));
    v
}

pub fn status(id: u64, sha: &str, context: &str, state: &str) -> Value {
    let mut v = template(fixture!("api-examples/status.json"));
    set(&mut v, "id", json!(id));
    set(&mut v, "context", json!(context));
    set(&mut v, "state", json!(state));
    set(
        &mut v,
        "url",
        json!(format!("https://api.github.com/statuses/{sha}")),
    );
    v
}

pub fn git_ref(r: &Repo, name: &str, sha: &str, kind: &str) -> Value {
    let mut v = template(fixture!("api-examples/git-ref.json"));
    set(&mut v, "ref", json!(name));
    set(&mut v, "object/sha", json!(sha));
    set(&mut v, "object/type", json!(kind));
    set(
        &mut v,
        "url",
        json!(format!(
            "https://api.github.com/repos/{}/git/{name}",
            r.full_name
        )),
    );
    v
}

pub fn git_tag(tag: &str, sha: &str, message: &str, target: &str) -> Value {
    let mut v = template(fixture!("api-examples/git-tag.json"));
    set(&mut v, "tag", json!(tag));
    set(&mut v, "sha", json!(sha));
    set(&mut v, "message", json!(message));
    set(&mut v, "object/sha", json!(target));
    set(&mut v, "object/type", json!("commit"));
    v
}

pub fn release(r: &Repo, rel: &crate::Release) -> Value {
    let mut v = template(fixture!("api-examples/release.json"));
    set(&mut v, "id", json!(rel.id));
    set(&mut v, "tag_name", json!(rel.tag));
    set(&mut v, "name", json!(rel.name));
    set(&mut v, "body", json!(rel.body));
    set(&mut v, "prerelease", json!(rel.prerelease));
    set(
        &mut v,
        "html_url",
        json!(format!(
            "https://github.com/{}/releases/tag/{}",
            r.full_name, rel.tag
        )),
    );
    v
}

pub fn merge_result(sha: &str) -> Value {
    let mut v = template(fixture!(
        "api-examples/pull-request-merge-result-response-if-merge-was-successful.json"
    ));
    set(&mut v, "sha", json!(sha));
    v
}

/// A member as `teams/list-members-in-org` lists it.
pub fn team_member(login: &str) -> Value {
    let items = template(fixture!("api-examples/team-member-items.json"));
    let mut v = items[0].clone();
    let u = user(&User {
        login: login.to_string(),
        is_bot: false,
    });
    set(&mut v, "login", u["login"].clone());
    set(&mut v, "id", u["id"].clone());
    set(&mut v, "type", json!("User"));
    v
}

pub fn membership(team: &str, login: &str) -> Value {
    let mut v = template(fixture!(
        "api-examples/team-membership-response-if-user-is-a-team-maintainer.json"
    ));
    set(&mut v, "state", json!("active"));
    set(&mut v, "role", json!("member"));
    set(
        &mut v,
        "url",
        json!(format!(
            "https://api.github.com/teams/{team}/memberships/{login}"
        )),
    );
    v
}

// --- webhooks ---

#[allow(clippy::too_many_arguments)]
pub fn push(
    r: &Repo,
    branch: &str,
    before: &str,
    after: &str,
    added: &[&str],
    modified: &[&str],
    removed: &[&str],
    pusher: &str,
    message: &str,
) -> Value {
    let mut v = template(fixture!(
        "webhooks/api.github.com/push/with-new-branch.payload.json"
    ));
    let repo = hook_repository(r, &v);
    set(&mut v, "repository", repo);
    set(&mut v, "ref", json!(format!("refs/heads/{branch}")));
    set(&mut v, "before", json!(before));
    set(&mut v, "after", json!(after));
    set(&mut v, "created", json!(before.chars().all(|c| c == '0')));
    set(&mut v, "deleted", json!(false));
    set(&mut v, "pusher/name", json!(pusher));
    set(&mut v, "sender", login(pusher));
    // In push payloads GitHub gives the push's own time as a Unix time.
    set(
        &mut v,
        "repository/pushed_at",
        json!(r.pushed_at.unix_timestamp()),
    );
    let mut commit = v["commits"][0].clone();
    set(&mut commit, "id", json!(after));
    set(&mut commit, "message", json!(message));
    set(&mut commit, "added", json!(added));
    set(&mut commit, "modified", json!(modified));
    set(&mut commit, "removed", json!(removed));
    set(&mut v, "head_commit", commit.clone());
    set(&mut v, "commits", json!([commit]));
    v
}

pub fn issue_comment(r: &Repo, c: &Comment, action: &str) -> Value {
    let mut v = template(fixture!(
        "webhooks/api.github.com/issue_comment/created.payload.json"
    ));
    let repo = hook_repository(r, &v);
    set(&mut v, "repository", repo);
    set(&mut v, "action", json!(action));
    set(&mut v, "issue/number", json!(c.number));
    let is_pull = r.pull(c.number).is_some();
    if is_pull {
        set(
            &mut v,
            "issue/pull_request/url",
            json!(format!(
                "https://api.github.com/repos/{}/pulls/{}",
                r.full_name, c.number
            )),
        );
    }
    let mut comment = v["comment"].clone();
    set(&mut comment, "id", json!(c.id));
    set(&mut comment, "body", json!(c.body));
    set(&mut comment, "user", user(&c.user));
    set(&mut comment, "created_at", timestamp(c.created_at));
    set(&mut comment, "updated_at", timestamp(c.updated_at));
    set(&mut v, "comment", comment);
    set(&mut v, "sender", user(&c.user));
    v
}

pub fn review(r: &Repo, p: &Pull, rv: &Review) -> Value {
    let mut v = template(fixture!(
        "webhooks/api.github.com/pull_request_review/submitted.payload.json"
    ));
    let repo = hook_repository(r, &v);
    set(&mut v, "repository", repo);
    set(&mut v, "action", json!("submitted"));
    set(&mut v, "review/id", json!(rv.id));
    set(&mut v, "review/state", json!(rv.state.to_lowercase()));
    set(&mut v, "review/commit_id", json!(rv.commit_id));
    set(&mut v, "review/user", user(&rv.user));
    set(&mut v, "review/submitted_at", timestamp(rv.submitted_at));
    set(&mut v, "pull_request/number", json!(p.number));
    set(&mut v, "sender", user(&rv.user));
    v
}

pub fn check_run(r: &Repo, c: &CheckRun) -> Value {
    let mut v = template(fixture!(
        "webhooks/api.github.com/check_run/completed.payload.json"
    ));
    let repo = hook_repository(r, &v);
    set(&mut v, "repository", repo);
    set(
        &mut v,
        "action",
        json!(if c.conclusion.is_some() {
            "completed"
        } else {
            "created"
        }),
    );
    set(&mut v, "check_run/id", json!(c.id));
    set(&mut v, "check_run/head_sha", json!(c.sha));
    set(&mut v, "check_run/name", json!(c.name));
    set(&mut v, "check_run/status", json!(c.status));
    set(&mut v, "check_run/conclusion", json!(c.conclusion));
    v
}

pub fn pull_request(r: &Repo, p: &Pull, action: &str, sender: &str) -> Value {
    let mut v = template(fixture!(
        "webhooks/api.github.com/pull_request/synchronize.payload.json"
    ));
    let repo = hook_repository(r, &v);
    set(&mut v, "repository", repo);
    set(&mut v, "action", json!(action));
    set(&mut v, "number", json!(p.number));
    let body = pull(r, p);
    for key in [
        "number",
        "state",
        "merged",
        "merge_commit_sha",
        "title",
        "head",
        "base",
        "user",
        "html_url",
        "updated_at",
    ] {
        set(&mut v, &format!("pull_request/{key}"), body[key].clone());
    }
    set(&mut v, "sender", login(sender));
    v
}

/// A file's contents (`repos/get-content`), base64 as GitHub sends it.
pub fn content(r: &Repo, path: &str, blob_sha: &str, bytes: &[u8]) -> Value {
    let mut v = template(fixture!(
        "api-examples/content-file-response-if-content-is-a-file.json"
    ));
    let name = path.rsplit('/').next().unwrap_or(path);
    set(&mut v, "name", json!(name));
    set(&mut v, "path", json!(path));
    set(&mut v, "sha", json!(blob_sha));
    set(&mut v, "size", json!(bytes.len()));
    set(&mut v, "encoding", json!("base64"));
    set(&mut v, "content", json!(base64_lines(bytes)));
    set(
        &mut v,
        "html_url",
        json!(format!(
            "https://github.com/{}/blob/HEAD/{path}",
            r.full_name
        )),
    );
    v
}

/// Base64 in lines of 60 characters, as GitHub formats file contents.
fn base64_lines(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out.as_bytes()
        .chunks(60)
        .map(|l| format!("{}\n", std::str::from_utf8(l).unwrap()))
        .collect()
}
