//! Release notes and description, rendered from minijinja templates.
//!
//! The built-in templates are the files in the repository's `templates/` directory, compiled
//! in; the operator may replace any of them with a file of the same name in `templatesDir`.

use std::path::Path;

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::diagnostics::{Diagnostic, SourceFile};

pub const RELEASE_NOTES: &str = "release-notes.md.j2";
pub const RELEASE_DESCRIPTION: &str = "release-description.txt.j2";

const BUILTIN: &[(&str, &str)] = &[
    (
        RELEASE_NOTES,
        include_str!("../templates/release-notes.md.j2"),
    ),
    (
        RELEASE_DESCRIPTION,
        include_str!("../templates/release-description.txt.j2"),
    ),
];

/// The compiled templates, ready to render.
pub struct Templates {
    env: Environment<'static>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Templates")
    }
}

impl Templates {
    /// Loads the built-in templates, replaced by the operator's where `dir` has them.
    pub fn load(dir: Option<&Path>) -> Result<Templates, Diagnostic> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .keep_trailing_newline(true)
                .build()
                .expect("default delimiters are valid"),
        );
        for (name, builtin) in BUILTIN {
            let custom = dir.map(|d| d.join(name)).filter(|p| p.exists());
            let (source_name, text) = match custom {
                Some(p) => {
                    let src = SourceFile::read(&p, p.display().to_string())?;
                    (src.name, src.text)
                }
                None => (format!("templates/{name}"), builtin.to_string()),
            };
            env.add_template_owned(*name, text)
                .map_err(|e| template_diagnostic(&source_name, &e))?;
        }
        Ok(Templates { env })
    }

    pub fn render<C: Serialize>(&self, name: &str, ctx: &C) -> Result<String, Diagnostic> {
        let template = self
            .env
            .get_template(name)
            .map_err(|e| template_diagnostic(name, &e))?;
        template
            .render(minijinja::value::Serde(ctx))
            .map_err(|e| template_diagnostic(name, &e))
    }
}

fn template_diagnostic(name: &str, e: &minijinja::Error) -> Diagnostic {
    let line = e.line().unwrap_or(1);
    let detail = e.detail().map(|d| format!(": {d}")).unwrap_or_default();
    Diagnostic::new(
        name,
        line,
        1,
        format!("template error: {}{detail}", e.kind()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_operator_template_with_an_unknown_variable_fails_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(RELEASE_DESCRIPTION),
            "{{ version }}\n{{ verison }}\n",
        )
        .unwrap();
        let t = Templates::load(Some(dir.path())).unwrap();
        let d = t
            .render(RELEASE_DESCRIPTION, &json!({"version": "v1"}))
            .unwrap_err();
        assert_eq!(d.line, 2, "{d}");
        assert!(d.message.contains("undefined"), "{d}");
    }

    #[test]
    fn a_template_syntax_error_is_reported_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(RELEASE_NOTES), "ok\n{% for x in %}\n").unwrap();
        let d = Templates::load(Some(dir.path())).unwrap_err();
        assert!(d.file.ends_with(RELEASE_NOTES), "{d}");
        assert_eq!(d.line, 2, "{d}");
    }
}
