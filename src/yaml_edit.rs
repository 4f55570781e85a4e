//! Changing one scalar in a YAML file and keeping every other byte.
//!
//! Helm values files carry comments, key order, quoting styles and blank lines that people
//! care about; a serialize-and-dump round trip would lose them. The edit finds the value with
//! `yamlpath` (a concrete syntax tree), replaces only that value's bytes (keeping its quotes),
//! and then proves the result: the document parses to the new value at the path. Splicing the
//! span ourselves, rather than through a patch library, keeps a file that ends without a final
//! newline exactly as it was; several edits of one file compose by applying them in turn.

use std::borrow::Cow;

use yamlpath::{Component, Document, FeatureKind, Route};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("not valid YAML: {message} (line {line}, column {column})")]
    NotYaml {
        message: String,
        line: usize,
        column: usize,
    },
    #[error("no key `{missing}` under {parent}{}", known_keys(.known))]
    MissingKey {
        parent: String,
        missing: String,
        known: Vec<String>,
    },
    #[error(
        "`{path}` is a {found}, not a single value; point the tag path at the tag itself (e.g. `image.tag`)"
    )]
    NotAScalar { path: String, found: &'static str },
    #[error("`{path}` is an alias (`*...`); point the tag path at the anchored value instead")]
    Alias { path: String },
    #[error("`{path}` is a multi-line value; an image tag must be written on one line")]
    Multiline { path: String },
    #[error(
        "`{path}` is empty; write a placeholder value such as `tag: \"\"` so it can be changed in place"
    )]
    Empty { path: String },
    #[error("could not change `{path}` in place: {reason}")]
    Rewrite { path: String, reason: String },
}

fn known_keys(known: &[String]) -> String {
    if known.is_empty() {
        String::new()
    } else {
        format!(" (keys there: {})", known.join(", "))
    }
}

/// The outcome of a successful edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalarEdit {
    pub text: String,
    /// The value before the edit, as YAML reads it.
    pub old_value: String,
}

/// Sets the scalar at the dotted `keys` to the string `new_value`, changing nothing else.
pub fn set_scalar(text: &str, keys: &[&str], new_value: &str) -> Result<ScalarEdit, EditError> {
    set_value(
        text,
        keys,
        &yaml_serde::Value::String(new_value.to_string()),
    )
}

/// Sets the scalar at `keys` to `new_value`, a string, a number or a boolean, changing nothing
/// else. A string keeps the old value's quotes; a number or boolean is written plain, so that
/// Helm reads it with its type (an operator's `replicaCount: 3`, `canary.enabled: true`).
pub fn set_value(
    text: &str,
    keys: &[&str],
    new_value: &yaml_serde::Value,
) -> Result<ScalarEdit, EditError> {
    let path = keys.join(".");
    let shown = match new_value {
        yaml_serde::Value::String(s) => s.clone(),
        yaml_serde::Value::Number(n) => n.to_string(),
        yaml_serde::Value::Bool(b) => b.to_string(),
        _ => {
            return Err(EditError::Rewrite {
                path,
                reason: "only a string, a number or a boolean can be written".into(),
            });
        }
    };
    // A real YAML parser decides whether this is YAML at all, with a position for the user.
    let parsed: yaml_serde::Value = yaml_serde::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        let message = e.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_string();
        EditError::NotYaml {
            message,
            line,
            column,
        }
    })?;
    let old_value = match lookup(&parsed, keys)? {
        yaml_serde::Value::String(s) => s.clone(),
        yaml_serde::Value::Number(n) => n.to_string(),
        yaml_serde::Value::Bool(b) => b.to_string(),
        yaml_serde::Value::Null => return Err(EditError::Empty { path }),
        yaml_serde::Value::Mapping(_) => {
            return Err(EditError::NotAScalar {
                path,
                found: "mapping",
            });
        }
        yaml_serde::Value::Sequence(_) => {
            return Err(EditError::NotAScalar {
                path,
                found: "list",
            });
        }
        yaml_serde::Value::Tagged(_) => {
            return Err(EditError::NotAScalar {
                path,
                found: "tagged value",
            });
        }
    };

    let doc = Document::new(text).map_err(|e| EditError::NotYaml {
        message: e.to_string(),
        line: 1,
        column: 1,
    })?;
    let route = Route::from(
        keys.iter()
            .map(|k| Component::Key(Cow::Borrowed(*k)))
            .collect::<Vec<_>>(),
    );
    let rewrite_err = |reason: String| EditError::Rewrite {
        path: path.clone(),
        reason,
    };
    let feature = doc
        .query_exact(&route)
        .map_err(|e| rewrite_err(e.to_string()))?
        .ok_or_else(|| EditError::Empty { path: path.clone() })?;
    let raw = doc.extract(&feature);
    // yamlpath follows an alias to its anchor; changing the anchor would change every other
    // place that uses it, so a value that is not written after its own key is refused.
    let key_end = doc
        .query_key_only(&route)
        .map(|k| k.location.byte_span.1)
        .unwrap_or(0);
    if raw.starts_with('*') || feature.location.byte_span.0 < key_end {
        return Err(EditError::Alias { path });
    }
    if feature.kind() != FeatureKind::Scalar {
        return Err(EditError::NotAScalar {
            path,
            found: "collection",
        });
    }
    if feature.is_multiline() {
        return Err(EditError::Multiline { path });
    }
    let (start, end) = feature.location.byte_span;

    // Keep the value's own quoting; a plain value that would no longer read as a string
    // (`1.10`, `true`, `null`, `a: b`) gets double quotes so Helm still sees a string.
    let to = match (raw.as_bytes().first(), new_value) {
        (Some(b'|' | b'>'), _) => {
            return Err(rewrite_err("block scalars are not supported".into()));
        }
        (_, yaml_serde::Value::Number(_) | yaml_serde::Value::Bool(_)) => shown.clone(),
        (Some(b'"'), _) => serde_json::to_string(&shown).expect("string serializes"),
        (Some(b'\''), _) => format!("'{}'", shown.replace('\'', "''")),
        _ if plain_reads_as_string(&shown) => shown.clone(),
        _ => serde_json::to_string(&shown).expect("string serializes"),
    };
    let mut new_text = String::with_capacity(text.len() - (end - start) + to.len());
    new_text.push_str(&text[..start]);
    new_text.push_str(&to);
    new_text.push_str(&text[end..]);

    let reparsed: yaml_serde::Value =
        yaml_serde::from_str(&new_text).map_err(|e| rewrite_err(e.to_string()))?;
    match lookup(&reparsed, keys) {
        Ok(v) if v == new_value => {}
        _ => {
            return Err(rewrite_err(format!(
                "the edited file does not read back `{shown}` as written"
            )));
        }
    }
    // The guarantee, checked rather than assumed: the document reads as it did, but for the
    // one value (a flow mapping, say, where a new value could have split a key).
    let mut expected = parsed;
    if let Some(slot) = lookup_mut(&mut expected, keys) {
        *slot = new_value.clone();
    }
    if expected != reparsed {
        return Err(rewrite_err(
            "the edit would have changed more than the value".into(),
        ));
    }
    Ok(ScalarEdit {
        text: new_text,
        old_value,
    })
}

fn lookup<'v>(
    root: &'v yaml_serde::Value,
    keys: &[&str],
) -> Result<&'v yaml_serde::Value, EditError> {
    let mut here = root;
    for (i, key) in keys.iter().enumerate() {
        let parent = if i == 0 {
            "the top level".to_string()
        } else {
            format!("`{}`", keys[..i].join("."))
        };
        let mapping = match here {
            yaml_serde::Value::Mapping(m) => m,
            _ => {
                return Err(EditError::MissingKey {
                    parent,
                    missing: key.to_string(),
                    known: Vec::new(),
                });
            }
        };
        here = match mapping.get(*key) {
            Some(v) => v,
            None => {
                let known = mapping
                    .keys()
                    .filter_map(|k| k.as_str().map(String::from))
                    .collect();
                return Err(EditError::MissingKey {
                    parent,
                    missing: key.to_string(),
                    known,
                });
            }
        };
    }
    Ok(here)
}

fn lookup_mut<'v>(
    root: &'v mut yaml_serde::Value,
    keys: &[&str],
) -> Option<&'v mut yaml_serde::Value> {
    keys.iter()
        .try_fold(root, |here, key| here.as_mapping_mut()?.get_mut(*key))
}

/// One value that differs between two versions of a document.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangedValue {
    pub keys: Vec<String>,
    pub before: yaml_serde::Value,
    pub after: yaml_serde::Value,
}

impl ChangedValue {
    pub fn path(&self) -> String {
        self.keys.join(".")
    }
}

/// The single values (strings, numbers, booleans under mapping keys) that differ between
/// `before` and `after`, in document order. Anything else that differs (a key added or
/// removed, a list, a value that became a mapping) is an error naming where: it cannot be set
/// back value by value.
pub fn changed_values(before: &str, after: &str) -> Result<Vec<ChangedValue>, String> {
    let parse = |t: &str| yaml_serde::from_str::<yaml_serde::Value>(t).map_err(|e| e.to_string());
    let (b, a) = (parse(before)?, parse(after)?);
    let mut out = Vec::new();
    diff_values(&b, &a, &mut Vec::new(), &mut out)?;
    Ok(out)
}

fn diff_values(
    b: &yaml_serde::Value,
    a: &yaml_serde::Value,
    keys: &mut Vec<String>,
    out: &mut Vec<ChangedValue>,
) -> Result<(), String> {
    use yaml_serde::Value as V;
    if b == a {
        return Ok(());
    }
    let scalar = |v: &V| matches!(v, V::String(_) | V::Number(_) | V::Bool(_));
    match (b, a) {
        (V::Mapping(bm), V::Mapping(am)) => {
            for (k, av) in am {
                let Some(key) = k.as_str() else {
                    return Err(format!(
                        "a non-string key changed under `{}`",
                        keys.join(".")
                    ));
                };
                keys.push(key.to_string());
                match bm.get(k) {
                    Some(bv) => diff_values(bv, av, keys, out)?,
                    None => return Err(format!("`{}` was added", keys.join("."))),
                }
                keys.pop();
            }
            if let Some(k) = bm.keys().find(|k| !am.contains_key(*k)) {
                return Err(format!(
                    "`{}` was removed",
                    keys.iter()
                        .cloned()
                        .chain(k.as_str().map(String::from))
                        .collect::<Vec<_>>()
                        .join(".")
                ));
            }
            Ok(())
        }
        _ if scalar(b) && scalar(a) => {
            out.push(ChangedValue {
                keys: keys.clone(),
                before: b.clone(),
                after: a.clone(),
            });
            Ok(())
        }
        _ => Err(format!("`{}` changed shape", keys.join("."))),
    }
}

/// The value at `keys`, if there is one.
pub fn value_at(text: &str, keys: &[&str]) -> Option<yaml_serde::Value> {
    let doc: yaml_serde::Value = yaml_serde::from_str(text).ok()?;
    keys.iter()
        .try_fold(&doc, |here, key| here.as_mapping()?.get(*key))
        .cloned()
}

/// A single value as people read it: `v1.2`, `10`, `true`.
pub fn shown(v: &yaml_serde::Value) -> String {
    match v {
        yaml_serde::Value::String(s) => s.clone(),
        yaml_serde::Value::Number(n) => n.to_string(),
        yaml_serde::Value::Bool(b) => b.to_string(),
        yaml_serde::Value::Null => "null".into(),
        _ => "(a collection)".into(),
    }
}

/// Whether `s`, written as a plain YAML scalar, is read back as the same string.
fn plain_reads_as_string(s: &str) -> bool {
    if s.is_empty() || s.trim() != s {
        return false;
    }
    let doc = format!("k: {s}\n");
    matches!(
        yaml_serde::from_str::<yaml_serde::Value>(&doc),
        Ok(yaml_serde::Value::Mapping(m)) if m.get("k").and_then(|v| v.as_str()) == Some(s)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_value_changes_and_nothing_else() {
        let src = "---\n# top comment\nimage:\n  repository: ghcr.io/x  # repo\n  tag: 1.2.3 # the tag\n\n  pullPolicy: IfNotPresent\n...\n";
        let out = set_scalar(src, &["image", "tag"], "mvp-v1").unwrap();
        assert_eq!(out.text, src.replace("tag: 1.2.3", "tag: mvp-v1"));
        assert_eq!(out.old_value, "1.2.3");
    }

    #[test]
    fn quoting_style_is_kept() {
        let dq = "image:\n  tag: \"1.0\"\n";
        assert_eq!(
            set_scalar(dq, &["image", "tag"], "2.0").unwrap().text,
            "image:\n  tag: \"2.0\"\n"
        );
        let sq = "image: {repository: x, tag: 'v5'}\n";
        assert_eq!(
            set_scalar(sq, &["image", "tag"], "v6").unwrap().text,
            "image: {repository: x, tag: 'v6'}\n"
        );
        let empty = "image:\n  tag: \"\"\n";
        assert_eq!(
            set_scalar(empty, &["image", "tag"], "v1").unwrap().text,
            "image:\n  tag: \"v1\"\n"
        );
    }

    #[test]
    fn plain_values_that_would_change_type_are_quoted() {
        let src = "image:\n  tag: v5\n";
        assert_eq!(
            set_scalar(src, &["image", "tag"], "1.10").unwrap().text,
            "image:\n  tag: \"1.10\"\n"
        );
        assert_eq!(
            set_scalar(src, &["image", "tag"], "true").unwrap().text,
            "image:\n  tag: \"true\"\n"
        );
        // A numeric old value is changed too, and read back as a string.
        let num = "image:\n  tag: 1.5\n";
        let out = set_scalar(num, &["image", "tag"], "1.6-rc").unwrap();
        assert_eq!(out.text, "image:\n  tag: 1.6-rc\n");
        assert_eq!(out.old_value, "1.5");
    }

    #[test]
    fn numbers_and_booleans_are_written_plain_so_helm_reads_their_type() {
        let src = "replicaCount: 1 # one\ncanary:\n  enabled: \"false\"\n  weight: '5'\n";
        let n = yaml_serde::Value::Number(3.into());
        let out = set_value(src, &["replicaCount"], &n).unwrap();
        assert_eq!(out.text, src.replace("replicaCount: 1", "replicaCount: 3"));
        assert_eq!(out.old_value, "1");
        // A quoted string becomes the boolean or number it is asked to be.
        let out = set_value(src, &["canary", "enabled"], &yaml_serde::Value::Bool(true)).unwrap();
        assert_eq!(out.text, src.replace("enabled: \"false\"", "enabled: true"));
        let out = set_value(src, &["canary", "weight"], &n).unwrap();
        assert_eq!(out.text, src.replace("weight: '5'", "weight: 3"));
        // A string that looks like a number stays a string.
        let s = yaml_serde::Value::String("10".into());
        let out = set_value(src, &["replicaCount"], &s).unwrap();
        assert_eq!(
            out.text,
            src.replace("replicaCount: 1", "replicaCount: \"10\"")
        );
        let list = yaml_serde::Value::Sequence(vec![]);
        assert!(matches!(
            set_value(src, &["replicaCount"], &list),
            Err(EditError::Rewrite { .. })
        ));
    }

    #[test]
    fn changed_values_are_the_single_values_that_differ_and_nothing_else() {
        let before = "image:\n  tag: v1\n  digest: \"\"\nreplicaCount: 1\nlist: [a]\n";
        let after = "image:\n  tag: v2\n  digest: \"sha256:ab\"\nreplicaCount: 3\nlist: [a]\n";
        let changed = changed_values(before, after).unwrap();
        let got: Vec<(String, String, String)> = changed
            .iter()
            .map(|c| (c.path(), shown(&c.before), shown(&c.after)))
            .collect();
        assert_eq!(
            got,
            [
                ("image.tag".to_string(), "v1".to_string(), "v2".to_string()),
                ("image.digest".into(), "".into(), "sha256:ab".into()),
                ("replicaCount".into(), "1".into(), "3".into()),
            ]
        );
        // Setting each back gives the values before.
        let mut text = after.to_string();
        for c in &changed {
            let keys: Vec<&str> = c.keys.iter().map(String::as_str).collect();
            text = set_value(&text, &keys, &c.before).unwrap().text;
        }
        assert_eq!(text, before);
        assert_eq!(
            value_at(after, &["image", "digest"]),
            Some(yaml_serde::Value::String("sha256:ab".into()))
        );
        assert_eq!(value_at(after, &["image", "nope"]), None);
        // What cannot be set back value by value is named.
        assert_eq!(
            changed_values(
                before,
                "image:\n  tag: v1\n  digest: \"\"\nreplicaCount: 1\nlist: [a, b]\n"
            ),
            Err("`list` changed shape".to_string())
        );
        assert_eq!(
            changed_values(before, &format!("{before}extra: 1\n")),
            Err("`extra` was added".to_string())
        );
        assert_eq!(
            changed_values(before, "image:\n  tag: v1\n  digest: \"\"\nlist: [a]\n"),
            Err("`replicaCount` was removed".to_string())
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let src = "image:\n  repository: x\n  pullPolicy: Always\n";
        let e = set_scalar(src, &["image", "tag"], "v1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "no key `tag` under `image` (keys there: repository, pullPolicy)"
        );
        let e = set_scalar(src, &["image"], "v1").unwrap_err();
        assert!(
            matches!(
                e,
                EditError::NotAScalar {
                    found: "mapping",
                    ..
                }
            ),
            "{e}"
        );
        let e = set_scalar("image: [unclosed\n", &["image", "tag"], "v1").unwrap_err();
        assert!(matches!(e, EditError::NotYaml { .. }), "{e}");
        let e = set_scalar("image:\n  tag:\n", &["image", "tag"], "v1").unwrap_err();
        assert!(matches!(e, EditError::Empty { .. }), "{e}");
        let e = set_scalar("t: &t v1\nimage:\n  tag: *t\n", &["image", "tag"], "v2").unwrap_err();
        assert!(matches!(e, EditError::Alias { .. }), "{e}");
        let e = set_scalar("image: {tag: v1}\n", &["image", "tag"], "a, b: c").unwrap();
        assert_eq!(e.text, "image: {tag: \"a, b: c\"}\n");
        let e = set_scalar("image: plain\n", &["image", "tag"], "v2").unwrap_err();
        assert!(e.to_string().contains("no key `tag` under `image`"), "{e}");
    }

    #[test]
    fn a_file_without_a_final_newline_keeps_its_last_byte() {
        let src = "image:\n  tag: v1\n  pullPolicy: Always";
        let out = set_scalar(src, &["image", "tag"], "v2").unwrap();
        assert_eq!(out.text, "image:\n  tag: v2\n  pullPolicy: Always");
        let last = "image:\n  tag: v1";
        assert_eq!(
            set_scalar(last, &["image", "tag"], "v2").unwrap().text,
            "image:\n  tag: v2"
        );
    }

    #[test]
    fn edits_of_one_file_compose() {
        let src = "image:\n  tag: v1 # main\nmetrics:\n  image:\n    tag: \"v1\" # sidecar\n";
        let first = set_scalar(src, &["image", "tag"], "v2").unwrap();
        let both = set_scalar(&first.text, &["metrics", "image", "tag"], "v2").unwrap();
        assert_eq!(
            both.text,
            "image:\n  tag: v2 # main\nmetrics:\n  image:\n    tag: \"v2\" # sidecar\n"
        );
        assert_eq!(both.old_value, "v1");
    }
}
