//! Version resolution: `version-resolver.yaml` and the strategies of the spec.
//!
//! Precedence (see [`crate::release::validate`]): the trigger's `version_tag`, then
//! `milestones.yaml`, then `milestone-status.json`, then the resolver configured here.

use serde::{Deserialize, Serialize};
use time::Date;

use crate::diagnostics::{Diagnostics, SourceFile};
use crate::route;

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// `v1.0.4-mvp`: semantic versions counted per milestone (the suffix names the milestone).
    MilestoneBased,
    /// `v1.2.3`: the next semantic version after the highest existing tag.
    SemverAuto,
    /// `2025.05.14`: the release date; `.1`, `.2` for further releases that day.
    DateTag,
    /// The first 12 hex digits of the application commit.
    GitCommitHash,
    /// `<milestone>-<last sprint>-<yyyymmdd>`.
    Composite,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::MilestoneBased => "milestone-based",
            Strategy::SemverAuto => "semver-auto",
            Strategy::DateTag => "date-tag",
            Strategy::GitCommitHash => "git-commit-hash",
            Strategy::Composite => "composite",
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Increment {
    #[default]
    Patch,
    Minor,
    Major,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Semver,
}

/// `version-resolver.yaml`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VersionResolver {
    pub strategy: Strategy,
    #[serde(default)]
    pub prefix: String,
    /// For `milestone-based`, `-<milestone_id>` when absent.
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub format: Format,
    #[serde(default)]
    pub auto_increment: Increment,
    /// The strategy used when the main one cannot produce a version (no commit, no sprints).
    #[serde(default)]
    pub fallback: Option<Strategy>,
    /// The first version of a series, when no earlier tag exists.
    #[serde(default = "default_initial")]
    pub initial_version: String,
}

fn default_initial() -> String {
    "1.0.0".into()
}

impl Default for VersionResolver {
    fn default() -> Self {
        Self {
            strategy: Strategy::SemverAuto,
            prefix: "v".into(),
            suffix: None,
            format: Format::Semver,
            auto_increment: Increment::Patch,
            fallback: None,
            initial_version: default_initial(),
        }
    }
}

/// What a strategy may look at.
#[derive(Debug, Clone)]
pub struct VersionContext<'a> {
    pub milestone_id: &'a str,
    pub sprints: &'a [String],
    /// Versions already taken: tags of the application repository and recorded releases.
    pub taken: &'a [String],
    pub app_commit: Option<&'a str>,
    pub today: Date,
}

/// The version a resolver produced, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub version: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error(
        "strategy `{0}` needs the application commit, but the trigger directory is not in a git repository"
    )]
    NoCommit(&'static str),
    #[error(
        "strategy `composite` needs the contributing sprints (`sprints_contributing` in milestone-status.json)"
    )]
    NoSprints,
    #[error(
        "version `{0}` produced by strategy `git-commit-hash` is already released: this commit was released before"
    )]
    CommitReleased(String),
    #[error("initialVersion `{0}` is not a semantic version such as 1.0.0")]
    BadInitial(String),
}

impl VersionResolver {
    pub fn validate(&self, src: &SourceFile) -> Diagnostics {
        let mut d = Diagnostics::default();
        if semver::Version::parse(&self.initial_version).is_err() {
            d.push(src.at(
                route!["initialVersion"],
                VersionError::BadInitial(self.initial_version.clone()).to_string(),
            ));
        }
        if self.fallback == Some(self.strategy) {
            d.push(src.at(
                route!["fallback"],
                "fallback is the same strategy as `strategy`; choose another or remove it",
            ));
        }
        for (field, value) in [
            ("prefix", Some(&self.prefix)),
            ("suffix", self.suffix.as_ref()),
        ] {
            if let Some(v) = value
                && !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
            {
                d.push(src.at(
                    route![field],
                    format!(
                        "{field} `{v}` may only contain letters, digits, `.`, `_`, `-` and `+`"
                    ),
                ));
            }
        }
        d
    }

    /// Resolves with the main strategy, then the fallback when the main one does not apply.
    pub fn resolve(&self, ctx: &VersionContext<'_>) -> Result<Resolved, VersionError> {
        match self.resolve_with(self.strategy, ctx) {
            Ok(r) => Ok(r),
            Err(e @ (VersionError::NoCommit(_) | VersionError::NoSprints)) => match self.fallback {
                Some(fb) => {
                    let r = self.resolve_with(fb, ctx)?;
                    Ok(Resolved {
                        reason: format!("{} (fallback, because {e})", r.reason),
                        ..r
                    })
                }
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    fn resolve_with(
        &self,
        strategy: Strategy,
        ctx: &VersionContext<'_>,
    ) -> Result<Resolved, VersionError> {
        let prefix = self.prefix.as_str();
        match strategy {
            Strategy::MilestoneBased | Strategy::SemverAuto => {
                let suffix = match (strategy, &self.suffix) {
                    (_, Some(s)) => s.clone(),
                    (Strategy::MilestoneBased, None) => format!("-{}", ctx.milestone_id),
                    _ => String::new(),
                };
                let highest = ctx
                    .taken
                    .iter()
                    .filter_map(|t| t.strip_prefix(prefix)?.strip_suffix(suffix.as_str()))
                    .filter_map(|core| semver::Version::parse(core).ok())
                    .filter(|v| v.pre.is_empty() && v.build.is_empty())
                    .max();
                let (next, why) = match highest {
                    Some(v) => {
                        let next = bump(&v, self.auto_increment);
                        let why = format!(
                            "{} after {prefix}{v}{suffix}",
                            increment_name(self.auto_increment)
                        );
                        (next, why)
                    }
                    None => {
                        let v = semver::Version::parse(&self.initial_version)
                            .map_err(|_| VersionError::BadInitial(self.initial_version.clone()))?;
                        (
                            v,
                            format!(
                                "initial version: no earlier tag matches {prefix}<x.y.z>{suffix}"
                            ),
                        )
                    }
                };
                Ok(Resolved {
                    version: format!("{prefix}{next}{suffix}"),
                    reason: format!("{}: {why}", strategy.name()),
                })
            }
            Strategy::DateTag => {
                let suffix = self.suffix.clone().unwrap_or_default();
                let d = ctx.today;
                let base = format!("{:04}.{:02}.{:02}", d.year(), u8::from(d.month()), d.day());
                let mut candidate = format!("{prefix}{base}{suffix}");
                let mut n = 0;
                while ctx.taken.contains(&candidate) {
                    n += 1;
                    candidate = format!("{prefix}{base}.{n}{suffix}");
                }
                let why = if n == 0 {
                    "today's date".to_string()
                } else {
                    format!("today's date, release {} of the day", n + 1)
                };
                Ok(Resolved {
                    version: candidate,
                    reason: format!("date-tag: {why}"),
                })
            }
            Strategy::GitCommitHash => {
                let commit = ctx
                    .app_commit
                    .ok_or(VersionError::NoCommit("git-commit-hash"))?;
                let short = &commit[..commit.len().min(12)];
                let version = format!("{prefix}{short}{}", self.suffix.as_deref().unwrap_or(""));
                if ctx.taken.contains(&version) {
                    return Err(VersionError::CommitReleased(version));
                }
                Ok(Resolved {
                    version,
                    reason: format!("git-commit-hash: application commit {short}"),
                })
            }
            Strategy::Composite => {
                let sprint = ctx.sprints.last().ok_or(VersionError::NoSprints)?;
                let d = ctx.today;
                let date = format!("{:04}{:02}{:02}", d.year(), u8::from(d.month()), d.day());
                let version = format!(
                    "{prefix}{}-{sprint}-{date}{}",
                    ctx.milestone_id,
                    self.suffix.as_deref().unwrap_or("")
                );
                Ok(Resolved {
                    version,
                    reason: "composite: milestone, last contributing sprint and date".into(),
                })
            }
        }
    }
}

fn increment_name(i: Increment) -> &'static str {
    match i {
        Increment::Patch => "next patch",
        Increment::Minor => "next minor",
        Increment::Major => "next major",
    }
}

fn bump(v: &semver::Version, inc: Increment) -> semver::Version {
    match inc {
        Increment::Patch => semver::Version::new(v.major, v.minor, v.patch + 1),
        Increment::Minor => semver::Version::new(v.major, v.minor + 1, 0),
        Increment::Major => semver::Version::new(v.major + 1, 0, 0),
    }
}

/// A version becomes a git tag, a branch component, a directory name and an image tag: it must
/// be safe as all four.
pub fn check_version_tag(v: &str) -> Result<(), String> {
    let ok_chars = v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if v.is_empty() || v.len() > 128 || !ok_chars {
        return Err(format!(
            "`{v}` is not a valid version tag: use at most 128 letters, digits, `.`, `_` and `-`"
        ));
    }
    if v.starts_with(['.', '-']) || v.ends_with('.') || v.contains("..") || v.ends_with(".lock") {
        return Err(format!(
            "`{v}` is not a valid version tag: it may not start with `.` or `-`, end with `.` or `.lock`, or contain `..`"
        ));
    }
    // A tag named like `HEAD` or a usual branch makes `git checkout <version>` and friends
    // ambiguous (git warns and picks one); git itself treats the `*HEAD` names specially.
    if RESERVED_NAMES.iter().any(|r| r.eq_ignore_ascii_case(v)) {
        return Err(format!(
            "`{v}` is not a valid version tag: it would shadow git's `{v}` (reserved: {})",
            RESERVED_NAMES.join(", ")
        ));
    }
    if !git2::Reference::is_valid_name(&format!("refs/tags/{v}")) {
        return Err(format!(
            "`{v}` is not a valid version tag: git refuses it as a tag name"
        ));
    }
    Ok(())
}

/// Names a version may not take: git's own refs and the usual default branches.
const RESERVED_NAMES: [&str; 9] = [
    "HEAD",
    "FETCH_HEAD",
    "ORIG_HEAD",
    "MERGE_HEAD",
    "CHERRY_PICK_HEAD",
    "REVERT_HEAD",
    "main",
    "master",
    "trunk",
];

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn ctx<'a>(
        taken: &'a [String],
        sprints: &'a [String],
        commit: Option<&'a str>,
    ) -> VersionContext<'a> {
        VersionContext {
            milestone_id: "mvp",
            sprints,
            taken,
            app_commit: commit,
            today: date!(2025 - 05 - 14),
        }
    }

    fn resolver(yaml: &str) -> VersionResolver {
        SourceFile::new("version-resolver.yaml", yaml)
            .parse_yaml()
            .unwrap()
    }

    #[test]
    fn spec_example_v1_0_4_mvp_after_v1_0_3_mvp() {
        let r = resolver(
            "strategy: milestone-based\nprefix: v\nsuffix: -mvp\nformat: semver\nautoIncrement: patch\nfallback: date-tag\n",
        );
        let taken = vec![
            "v1.0.2-mvp".to_string(),
            "v1.0.3-mvp".into(),
            "v2.0.0-other".into(),
            "v1.0.9".into(),
        ];
        let got = r.resolve(&ctx(&taken, &[], None)).unwrap();
        assert_eq!(got.version, "v1.0.4-mvp");
        assert!(got.reason.contains("after v1.0.3-mvp"), "{}", got.reason);
    }

    #[test]
    fn milestone_based_defaults_its_suffix_to_the_milestone() {
        let r = resolver("strategy: milestone-based\nprefix: v\n");
        let taken = vec!["v1.4.0-mvp".to_string()];
        assert_eq!(
            r.resolve(&ctx(&taken, &[], None)).unwrap().version,
            "v1.4.1-mvp"
        );
        assert_eq!(
            r.resolve(&ctx(&[], &[], None)).unwrap().version,
            "v1.0.0-mvp"
        );
    }

    #[test]
    fn semver_auto_minor_and_major_ignore_prereleases() {
        let taken = vec![
            "v1.2.3".to_string(),
            "v1.10.0".into(),
            "v2.0.0-rc.1".into(),
            "junk".into(),
        ];
        let minor = resolver("strategy: semver-auto\nprefix: v\nautoIncrement: minor\n");
        assert_eq!(
            minor.resolve(&ctx(&taken, &[], None)).unwrap().version,
            "v1.11.0"
        );
        let major = resolver("strategy: semver-auto\nprefix: v\nautoIncrement: major\n");
        assert_eq!(
            major.resolve(&ctx(&taken, &[], None)).unwrap().version,
            "v2.0.0"
        );
        let initial = resolver("strategy: semver-auto\ninitialVersion: 0.1.0\n");
        assert_eq!(
            initial.resolve(&ctx(&[], &[], None)).unwrap().version,
            "0.1.0"
        );
    }

    #[test]
    fn date_tag_counts_releases_of_the_day() {
        let r = resolver("strategy: date-tag\n");
        assert_eq!(
            r.resolve(&ctx(&[], &[], None)).unwrap().version,
            "2025.05.14"
        );
        let taken = vec!["2025.05.14".to_string(), "2025.05.14.1".into()];
        assert_eq!(
            r.resolve(&ctx(&taken, &[], None)).unwrap().version,
            "2025.05.14.2"
        );
    }

    #[test]
    fn git_commit_hash_and_its_fallback() {
        let r = resolver("strategy: git-commit-hash\nfallback: date-tag\n");
        let commit = "ab39c3f00d1e2f3a4b5c6d7e8f90123456789abc";
        assert_eq!(
            r.resolve(&ctx(&[], &[], Some(commit))).unwrap().version,
            "ab39c3f00d1e"
        );
        let fb = r.resolve(&ctx(&[], &[], None)).unwrap();
        assert_eq!(fb.version, "2025.05.14");
        assert!(fb.reason.contains("fallback"), "{}", fb.reason);
        let no_fallback = resolver("strategy: git-commit-hash\n");
        assert_eq!(
            no_fallback.resolve(&ctx(&[], &[], None)),
            Err(VersionError::NoCommit("git-commit-hash"))
        );
        let taken = vec!["ab39c3f00d1e".to_string()];
        assert!(matches!(
            r.resolve(&ctx(&taken, &[], Some(commit))),
            Err(VersionError::CommitReleased(_))
        ));
    }

    #[test]
    fn composite_uses_the_last_sprint_or_falls_back() {
        let r = resolver("strategy: composite\nfallback: semver-auto\nprefix: r-\n");
        let sprints = vec!["sprint-06".to_string(), "sprint-07".into()];
        assert_eq!(
            r.resolve(&ctx(&[], &sprints, None)).unwrap().version,
            "r-mvp-sprint-07-20250514"
        );
        assert_eq!(r.resolve(&ctx(&[], &[], None)).unwrap().version, "r-1.0.0");
    }

    #[test]
    fn resolver_file_problems_have_positions() {
        let src = SourceFile::new(
            "version-resolver.yaml",
            "strategy: date-tag\nfallback: date-tag\nprefix: 'v/'\ninitialVersion: one\n",
        );
        let r: VersionResolver = src.parse_yaml().unwrap();
        let text = r.validate(&src).to_string();
        assert!(
            text.contains(
                "version-resolver.yaml:4:17: initialVersion `one` is not a semantic version"
            ),
            "{text}"
        );
        assert!(
            text.contains("version-resolver.yaml:2:11: fallback is the same strategy"),
            "{text}"
        );
        assert!(
            text.contains("version-resolver.yaml:3:9: prefix `v/` may only contain"),
            "{text}"
        );
        let unknown = SourceFile::new("version-resolver.yaml", "strategy: lunar-phase\n")
            .parse_yaml::<VersionResolver>()
            .unwrap_err();
        assert!(
            unknown.message.contains("unknown variant `lunar-phase`"),
            "{unknown}"
        );
    }

    #[test]
    fn version_tags_must_be_safe_everywhere() {
        for ok in ["mvp-v1", "v1.0.4-mvp", "2025.05.14", "ab39c3f00d1e"] {
            assert!(check_version_tag(ok).is_ok(), "{ok}");
        }
        for bad in [
            "../x",
            "v1/../../etc",
            "v 1",
            "",
            ".hidden",
            "v1.",
            "v1..2",
            "a.lock",
            "v1+build",
            "-v1",
            "main",
            "HEAD",
            "head",
            "Master",
            "ORIG_HEAD",
        ] {
            assert!(check_version_tag(bad).is_err(), "{bad}");
        }
        assert!(
            check_version_tag("main")
                .unwrap_err()
                .contains("would shadow git's `main`")
        );
    }
}
