//! Entry points for the fuzzers (`fuzz/`) and their regression tests (`tests/fuzz.rs`).
//!
//! Each takes arbitrary bytes, as an attacker or a broken file would give them, and must not
//! panic, hang or grow without bound. Where a function promises something about its result, the
//! entry point checks the promise too, so the fuzzer looks for broken promises as well as
//! crashes.

use crate::commands::parse_comment;
use crate::config::{OrchestrationConfig, ReleasePolicy, validate_orchestration};
use crate::diagnostics::{Diagnostic, SourceFile};
use crate::inputs::{MilestoneStatus, PromotionTrigger};
use crate::route;

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// A position is inside the file (1-based, at most one past the last line).
fn positioned(d: &Diagnostic, src: &SourceFile) {
    let lines = src.text.split('\n').count();
    assert!(
        d.line >= 1 && d.column >= 1 && d.line <= lines + 1,
        "{d} is outside a file of {lines} lines"
    );
}

/// `promotion-trigger.yaml` and `milestone-status.json`.
pub fn trigger(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let src = SourceFile::new("promotion-trigger.yaml", text);
    match src.parse_yaml::<PromotionTrigger>() {
        Ok(t) => {
            for (i, _) in t.promotion_targets.iter().enumerate().take(50) {
                positioned(&src.at(route!["promotion_targets", i], "here"), &src);
                let d = src.at_word(route!["promotion_targets", i, "tag-docker"], "x", "here");
                positioned(&d, &src);
            }
        }
        Err(d) => positioned(&d, &src),
    }
    let json = SourceFile::new("milestone-status.json", text);
    if let Err(d) = json.parse_json::<MilestoneStatus>() {
        positioned(&d, &json);
    }
}

/// `orchestration-config.yaml` (parsed and validated) and `release-policy.yaml`.
pub fn config(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let src = SourceFile::new("orchestration-config.yaml", text);
    match src.parse_yaml::<OrchestrationConfig>() {
        Ok(c) => {
            for d in validate_orchestration(&c, &src).0 {
                positioned(&d, &src);
            }
        }
        Err(d) => positioned(&d, &src),
    }
    if let Err(d) = src.parse_yaml::<ReleasePolicy>() {
        positioned(&d, &src);
    }
}

/// A pull request comment, as the command parser reads it.
pub fn comment(data: &[u8]) {
    let Some(text) = text(data) else { return };
    for parsed in parse_comment(text) {
        match parsed {
            Ok(c) => assert!(c.usage().0.starts_with('/'), "{c:?}"),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}

/// The event kind (the first line) and the body (the rest) of a delivery.
fn delivery(data: &[u8]) -> Option<(&str, &[u8])> {
    let split = data.iter().position(|b| *b == b'\n')?;
    Some((text(&data[..split])?, &data[split + 1..]))
}

/// A GitHub webhook: `X-GitHub-Event` on the first line, the body after it.
pub fn github_payload(data: &[u8]) {
    let Some((kind, body)) = delivery(data) else {
        return;
    };
    if let Ok(Some(event)) = crate::forge::github::webhook::parse(kind, body) {
        serde_json::to_string(&event).expect("a parsed event serializes");
    }
}

/// A GitLab webhook: `X-Gitlab-Event` on the first line, the body after it.
pub fn gitlab_payload(data: &[u8]) {
    let Some((kind, body)) = delivery(data) else {
        return;
    };
    if let Ok(Some(event)) = crate::forge::gitlab::webhook::parse(kind, body) {
        serde_json::to_string(&event).expect("a parsed event serializes");
    }
}

/// A values file edited at `image.tag` (the first byte picks the new value's shape). The
/// editor's promise, checked: every byte outside the value is kept.
pub fn yaml_edit(data: &[u8]) {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let Some(text) = text(rest) else { return };
    let value = ["v2.0.1", "1.10", "true", "a: b", "x'y\"z", ""][*first as usize % 6];
    if let Ok(edit) = crate::yaml_edit::set_scalar(text, &["image", "tag"], value) {
        let prefix = text
            .bytes()
            .zip(edit.text.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        let suffix = text
            .bytes()
            .rev()
            .zip(edit.text.bytes().rev())
            .take_while(|(a, b)| a == b)
            .count();
        // What changed is one span, no longer than the quoted value and its quotes.
        let changed_old = text.len().saturating_sub(prefix + suffix);
        let changed_new = edit.text.len().saturating_sub(prefix + suffix);
        assert!(
            changed_new <= value.len() * 2 + 2 && changed_old <= text.len(),
            "changed {changed_old} bytes into {changed_new}"
        );
    }
}
