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
    let path = keys.join(".");
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
    let to = match raw.as_bytes().first() {
        Some(b'"') => serde_json::to_string(new_value).expect("string serializes"),
        Some(b'\'') => format!("'{}'", new_value.replace('\'', "''")),
        Some(b'|' | b'>') => {
            return Err(rewrite_err("block scalars are not supported".into()));
        }
        _ if plain_reads_as_string(new_value) => new_value.to_string(),
        _ => serde_json::to_string(new_value).expect("string serializes"),
    };
    let mut new_text = String::with_capacity(text.len() - (end - start) + to.len());
    new_text.push_str(&text[..start]);
    new_text.push_str(&to);
    new_text.push_str(&text[end..]);

    let reparsed: yaml_serde::Value =
        yaml_serde::from_str(&new_text).map_err(|e| rewrite_err(e.to_string()))?;
    match lookup(&reparsed, keys) {
        Ok(yaml_serde::Value::String(s)) if s == new_value => {}
        _ => {
            return Err(rewrite_err(format!(
                "the edited file does not read back `{new_value}` as a string"
            )));
        }
    }
    // The guarantee, checked rather than assumed: the document reads as it did, but for the
    // one value (a flow mapping, say, where a new value could have split a key).
    let mut expected = parsed;
    if let Some(slot) = lookup_mut(&mut expected, keys) {
        *slot = yaml_serde::Value::String(new_value.to_string());
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
