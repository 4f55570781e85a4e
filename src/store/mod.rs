//! The store: releases, their branches and the audit log, in SQLite.
//!
//! Methods are named after domain actions. Each state change is written (with its audit
//! entry, in one transaction) before the side effects it leads to, so a crash at any point
//! leaves a record that a re-run can resume from.

use std::borrow::Cow;
use std::str::FromStr;

use sqlx::Row;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::release::state::{AuditEvent, ReleaseState};

pub mod deliveries;
pub mod forge_releases;
pub mod status;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("store migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("store URL `{0}` is not supported: use `sqlite://<path>`")]
    UnsupportedUrl(String),
    #[error("release {version} is {actual}, not {expected}: another run changed it")]
    StateConflict {
        version: String,
        expected: ReleaseState,
        actual: String,
    },
    #[error("release {version} may not go from {from} to {to}")]
    IllegalTransition {
        version: String,
        from: ReleaseState,
        to: ReleaseState,
    },
}

/// The file of a `sqlite:` URL (`None`: not a SQLite URL).
pub fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    Some(rest.split('?').next().unwrap_or(rest))
}

fn audit_entry(r: &sqlx::sqlite::SqliteRow) -> AuditEntry {
    AuditEntry {
        at: r.get("at"),
        event: r.get("event"),
        actor: r.get("actor"),
        detail: serde_json::from_str(r.get::<&str, _>("detail")).unwrap_or(serde_json::Value::Null),
    }
}

const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "releases",
        include_str!("../../migrations/sqlite/0001_releases.sql"),
    ),
    (
        2,
        "deliveries",
        include_str!("../../migrations/sqlite/0002_deliveries.sql"),
    ),
    (
        3,
        "forge_releases",
        include_str!("../../migrations/sqlite/0003_forge_releases.sql"),
    ),
    (
        4,
        "delivery_retries",
        include_str!("../../migrations/sqlite/0004_delivery_retries.sql"),
    ),
    (
        5,
        "posted_notes",
        include_str!("../../migrations/sqlite/0005_posted_notes.sql"),
    ),
    (
        6,
        "typed_outcomes",
        include_str!("../../migrations/sqlite/0006_typed_outcomes.sql"),
    ),
    (
        7,
        "gate",
        include_str!("../../migrations/sqlite/0007_gate.sql"),
    ),
    (
        8,
        "status",
        include_str!("../../migrations/sqlite/0008_status.sql"),
    ),
    (
        9,
        "rebuild_intent",
        include_str!("../../migrations/sqlite/0009_rebuild_intent.sql"),
    ),
    (
        10,
        "deployments",
        include_str!("../../migrations/sqlite/0010_deployments.sql"),
    ),
    (
        11,
        "rollbacks",
        include_str!("../../migrations/sqlite/0011_rollbacks.sql"),
    ),
];

fn migrator() -> Migrator {
    let migrations = SQLITE_MIGRATIONS
        .iter()
        .map(|(version, name, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(*name),
                MigrationType::Simple,
                sqlx::SqlSafeStr::into_sql_str(*sql),
                false,
            )
        })
        .collect();
    Migrator::with_migrations(migrations)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRecord {
    pub id: i64,
    pub version_tag: String,
    pub milestone_id: String,
    pub trace_id: String,
    pub state: String,
    pub inputs_digest: String,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchRecord {
    pub environment: String,
    pub branch: String,
    pub commit_id: String,
    pub pushed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub at: String,
    pub event: String,
    pub actor: String,
    pub detail: serde_json::Value,
}

/// What `reserve_release` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// The version was free and is now recorded as `Pending`.
    New(ReleaseRecord),
    /// The version was already recorded.
    Existing(ReleaseRecord),
}

/// A state change and its cause, for [`Store::transition`].
pub struct Transition<'a> {
    pub from: ReleaseState,
    pub to: ReleaseState,
    pub event: AuditEvent,
    pub actor: &'a str,
    pub detail: serde_json::Value,
}

pub struct NewRelease<'a> {
    pub version_tag: &'a str,
    pub milestone_id: &'a str,
    pub trace_id: &'a str,
    pub inputs_digest: &'a str,
    pub now: OffsetDateTime,
    pub actor: &'a str,
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

/// A time as the store writes it: RFC 3339 in UTC.
pub fn ts(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .expect("RFC 3339 formats any UTC time")
}

/// How write transactions begin: taking the write lock at once, so a transaction that reads
/// before it writes waits for another writer (up to the busy timeout) instead of failing
/// when that writer commits first. Jobs run side by side and write at the same time.
pub(crate) const IMMEDIATE: &str = "BEGIN IMMEDIATE";

/// A time the store wrote.
pub fn parse_ts(s: &str) -> OffsetDateTime {
    OffsetDateTime::parse(s, &Rfc3339).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl Store {
    /// Opens (creating if needed) the store at `url` and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        if !url.starts_with("sqlite:") {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        }
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        migrator().run(&pool).await?;
        Ok(Store { pool })
    }

    /// Opens an existing SQLite store only if its file exists (for read-only commands that
    /// must not create files).
    /// Opens an existing store to read it only: no migration runs (a store an older bot
    /// still uses stays as that bot knows it), and nothing can be written. `None`: there is
    /// no store at `url`.
    pub async fn open_read_only(url: &str) -> Result<Option<Store>, StoreError> {
        let Some(path) = sqlite_path(url) else {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        };
        if !std::path::Path::new(path).exists() {
            return Ok(None);
        }
        let opts = SqliteConnectOptions::from_str(url)?
            .read_only(true)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await?;
        Ok(Some(Store { pool }))
    }

    pub async fn open_existing(url: &str) -> Result<Option<Store>, StoreError> {
        let path = url
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:");
        let path = path.split('?').next().unwrap_or(path);
        if path == ":memory:" || std::path::Path::new(path).exists() {
            Store::open(url).await.map(Some)
        } else {
            Ok(None)
        }
    }

    pub async fn find_release(&self, version: &str) -> Result<Option<ReleaseRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, version_tag, milestone_id, trace_id, state, inputs_digest, created_at FROM releases WHERE version_tag = ?",
        )
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(release_from_row))
    }

    /// The release still `Pending` that was started from inputs with this digest, if any: a
    /// re-run of the same inputs continues it instead of starting another.
    pub async fn find_unfinished(
        &self,
        inputs_digest: &str,
    ) -> Result<Option<ReleaseRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, version_tag, milestone_id, trace_id, state, inputs_digest, created_at FROM releases
             WHERE inputs_digest = ? AND state = ? ORDER BY id DESC LIMIT 1",
        )
        .bind(inputs_digest)
        .bind(ReleaseState::Pending.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(release_from_row))
    }

    /// Every version ever recorded (versions are never reused).
    pub async fn recorded_versions(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT version_tag FROM releases ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| r.get("version_tag")).collect())
    }

    /// Records a new release as `Pending`, or returns the one already holding the version.
    /// The unique version column makes this safe against concurrent runs.
    pub async fn reserve_release(&self, new: NewRelease<'_>) -> Result<Reservation, StoreError> {
        let mut tx = self.pool.begin_with(IMMEDIATE).await?;
        let inserted = sqlx::query(
            "INSERT INTO releases (version_tag, milestone_id, trace_id, state, inputs_digest, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (version_tag) DO NOTHING",
        )
        .bind(new.version_tag)
        .bind(new.milestone_id)
        .bind(new.trace_id)
        .bind(ReleaseState::Pending.as_str())
        .bind(new.inputs_digest)
        .bind(ts(new.now))
        .bind(ts(new.now))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if inserted {
            let id: i64 = sqlx::query("SELECT id FROM releases WHERE version_tag = ?")
                .bind(new.version_tag)
                .fetch_one(&mut *tx)
                .await?
                .get("id");
            append_audit(
                &mut tx,
                id,
                new.now,
                AuditEvent::ReleaseTriggered,
                new.actor,
                &new.detail,
            )
            .await?;
        }
        tx.commit().await?;
        let record = self
            .find_release(new.version_tag)
            .await?
            .expect("row exists after insert or conflict");
        Ok(if inserted {
            Reservation::New(record)
        } else {
            Reservation::Existing(record)
        })
    }

    /// Moves a release from `t.from` to `t.to`, with its cause in the audit log, atomically.
    /// Fails if the release is no longer in `t.from` (another run moved it).
    pub async fn transition(
        &self,
        release_id: i64,
        t: Transition<'_>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let Transition {
            from,
            to,
            event,
            actor,
            detail,
        } = t;
        if !from.may_become(to) {
            let version = sqlx::query("SELECT version_tag FROM releases WHERE id = ?")
                .bind(release_id)
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.get("version_tag"))
                .unwrap_or_default();
            return Err(StoreError::IllegalTransition { version, from, to });
        }
        let mut tx = self.pool.begin_with(IMMEDIATE).await?;
        let changed =
            // Moving on clears the last failed attempt (see `status`).
            sqlx::query("UPDATE releases SET state = ?, updated_at = ?, last_error = NULL, last_error_at = NULL WHERE id = ? AND state = ?")
                .bind(to.as_str())
                .bind(ts(now))
                .bind(release_id)
                .bind(from.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if changed != 1 {
            let row = sqlx::query("SELECT version_tag, state FROM releases WHERE id = ?")
                .bind(release_id)
                .fetch_one(&mut *tx)
                .await?;
            return Err(StoreError::StateConflict {
                version: row.get("version_tag"),
                expected: from,
                actual: row.get("state"),
            });
        }
        append_audit(&mut tx, release_id, now, event, actor, &detail).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn record_branch(&self, release_id: i64, b: &BranchRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO release_branches (release_id, environment, branch, commit_id, pushed) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (release_id, environment) DO UPDATE SET branch = excluded.branch, commit_id = excluded.commit_id,
             pushed = MAX(release_branches.pushed, excluded.pushed)",
        )
        .bind(release_id)
        .bind(&b.environment)
        .bind(&b.branch)
        .bind(&b.commit_id)
        .bind(b.pushed)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Writes down, before its push, that the branch of `release_id`'s `environment` is being
    /// rebuilt as `commit`; `detail` is what the rebuild's audit entry will say.
    pub async fn begin_rebuild(
        &self,
        release_id: i64,
        environment: &str,
        commit: &str,
        detail: &serde_json::Value,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE release_branches SET rebuilding = ?, rebuilding_detail = ? WHERE release_id = ? AND environment = ?",
        )
        .bind(commit)
        .bind(detail.to_string())
        .bind(release_id)
        .bind(environment)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets a rebuild written down whose push certainly did not land (its lease was
    /// refused) or that `/retry` replaces.
    pub async fn drop_rebuild(&self, release_id: i64, environment: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE release_branches SET rebuilding = NULL, rebuilding_detail = NULL WHERE release_id = ? AND environment = ?",
        )
        .bind(release_id)
        .bind(environment)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a rebuild as pushed when `commit` is the one written down by
    /// [`Store::begin_rebuild`]: the branch's built head becomes `commit` and the rebuild is
    /// audited, in one transaction. Returns the rebuild's detail, or `None` when `commit` is
    /// not a rebuild in progress (nothing changes then).
    pub async fn finish_rebuild(
        &self,
        release_id: i64,
        environment: &str,
        commit: &str,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let mut tx = self.pool.begin_with(IMMEDIATE).await?;
        let row = sqlx::query(
            "SELECT rebuilding_detail FROM release_branches WHERE release_id = ? AND environment = ? AND rebuilding = ?",
        )
        .bind(release_id)
        .bind(environment)
        .bind(commit)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let detail: Option<String> = row.get(0);
        let detail: serde_json::Value = detail
            .and_then(|d| serde_json::from_str(&d).ok())
            .unwrap_or(serde_json::Value::Null);
        sqlx::query(
            "UPDATE release_branches SET commit_id = ?, pushed = 1, rebuilding = NULL, rebuilding_detail = NULL WHERE release_id = ? AND environment = ?",
        )
        .bind(commit)
        .bind(release_id)
        .bind(environment)
        .execute(&mut *tx)
        .await?;
        // The head's history says, in the same transaction, that this head is the bot's and
        // (when it is) the same change as the head it replaced: a stop right after must not
        // lose the link the approvals carry over by.
        let same_as = (detail["same_change"] == true)
            .then(|| detail["was"].as_str().map(str::to_string))
            .flatten();
        let heads = forge_releases::read_heads(&mut *tx, release_id, environment).await?;
        let unknown = |p: &Option<String>| {
            p.as_deref()
                .is_none_or(|p| p == forge_releases::UNKNOWN_PUSHER)
        };
        match heads.last() {
            Some(last) if last.commit == commit && unknown(&last.pusher) => {
                sqlx::query(
                    "UPDATE pr_heads SET pusher = NULL, same_change_as = COALESCE(same_change_as, ?) WHERE id = ?",
                )
                .bind(same_as.as_deref())
                .bind(last.id)
                .execute(&mut *tx)
                .await?;
            }
            // Someone's push of this very commit is theirs: it stays on record as theirs,
            // and no approval carries over to it.
            Some(last) if last.commit == commit => {}
            _ => {
                sqlx::query(
                    "INSERT INTO pr_heads (release_id, environment, commit_id, since, pusher, same_change_as) VALUES (?, ?, ?, ?, NULL, ?)",
                )
                .bind(release_id)
                .bind(environment)
                .bind(commit)
                .bind(ts(now))
                .bind(same_as.as_deref())
                .execute(&mut *tx)
                .await?;
            }
        }
        append_audit(
            &mut tx,
            release_id,
            now,
            AuditEvent::ReleaseRebuilt,
            actor,
            &detail,
        )
        .await?;
        tx.commit().await?;
        Ok(Some(detail))
    }

    pub async fn branches(&self, release_id: i64) -> Result<Vec<BranchRecord>, StoreError> {
        let rows = sqlx::query("SELECT environment, branch, commit_id, pushed FROM release_branches WHERE release_id = ? ORDER BY rowid")
            .bind(release_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| BranchRecord {
                environment: r.get("environment"),
                branch: r.get("branch"),
                commit_id: r.get("commit_id"),
                pushed: r.get::<i64, _>("pushed") != 0,
            })
            .collect())
    }

    pub async fn record_event(
        &self,
        release_id: i64,
        event: AuditEvent,
        actor: &str,
        detail: serde_json::Value,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with(IMMEDIATE).await?;
        append_audit(&mut tx, release_id, now, event, actor, &detail).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The audit log of `version`'s release, or of every release (oldest first), each entry
    /// with its release's version.
    pub async fn audit_entries(
        &self,
        version: Option<&str>,
    ) -> Result<Vec<(String, AuditEntry)>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.version_tag, a.at, a.event, a.actor, a.detail
             FROM audit_log a JOIN releases r ON r.id = a.release_id
             WHERE ?1 IS NULL OR r.version_tag = ?1 ORDER BY a.id",
        )
        .bind(version)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get("version_tag"), audit_entry(&r)))
            .collect())
    }

    pub async fn audit_log(&self, release_id: i64) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, event, actor, detail FROM audit_log WHERE release_id = ? ORDER BY id",
        )
        .bind(release_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(audit_entry).collect())
    }

    #[cfg(test)]
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

fn release_from_row(r: sqlx::sqlite::SqliteRow) -> ReleaseRecord {
    ReleaseRecord {
        id: r.get("id"),
        version_tag: r.get("version_tag"),
        milestone_id: r.get("milestone_id"),
        trace_id: r.get("trace_id"),
        state: r.get("state"),
        inputs_digest: r.get("inputs_digest"),
        created_at: OffsetDateTime::parse(r.get::<&str, _>("created_at"), &Rfc3339)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
    }
}

async fn append_audit(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    release_id: i64,
    now: OffsetDateTime,
    event: AuditEvent,
    actor: &str,
    detail: &serde_json::Value,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_log (release_id, at, event, actor, detail) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(release_id)
    .bind(ts(now))
    .bind(event.as_str())
    .bind(actor)
    .bind(detail.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        (Store::open(&url).await.unwrap(), dir)
    }

    fn new_release(version: &str) -> NewRelease<'_> {
        NewRelease {
            version_tag: version,
            milestone_id: "mvp",
            trace_id: "t",
            inputs_digest: "d1",
            now: OffsetDateTime::UNIX_EPOCH,
            actor: "cli",
            detail: json!({}),
        }
    }

    #[tokio::test]
    async fn a_version_is_reserved_once() {
        let (s, _d) = store().await;
        let first = s.reserve_release(new_release("v1")).await.unwrap();
        assert!(matches!(first, Reservation::New(ref r) if r.state == "Pending"));
        let second = s.reserve_release(new_release("v1")).await.unwrap();
        assert!(matches!(second, Reservation::Existing(_)));
        assert_eq!(s.recorded_versions().await.unwrap(), vec!["v1".to_string()]);
    }

    #[tokio::test]
    async fn transitions_check_the_current_state_and_are_audited() {
        let (s, _d) = store().await;
        let Reservation::New(r) = s.reserve_release(new_release("v1")).await.unwrap() else {
            panic!()
        };
        let now = OffsetDateTime::UNIX_EPOCH;
        s.transition(
            r.id,
            Transition {
                from: ReleaseState::Pending,
                to: ReleaseState::Tagging,
                event: AuditEvent::InputsValidated,
                actor: "cli",
                detail: json!({"a": 1}),
            },
            now,
        )
        .await
        .unwrap();
        let err = s
            .transition(
                r.id,
                Transition {
                    from: ReleaseState::Pending,
                    to: ReleaseState::Tagging,
                    event: AuditEvent::InputsValidated,
                    actor: "cli",
                    detail: json!({}),
                },
                now,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::StateConflict { .. }), "{err}");
        let log = s.audit_log(r.id).await.unwrap();
        assert_eq!(
            log.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(),
            ["ReleaseTriggered", "InputsValidated"]
        );
        assert_eq!(log[1].detail, json!({"a": 1}));
    }

    #[tokio::test]
    async fn the_audit_log_refuses_updates_and_deletes() {
        let (s, _d) = store().await;
        let Reservation::New(r) = s.reserve_release(new_release("v1")).await.unwrap() else {
            panic!()
        };
        let upd = sqlx::query("UPDATE audit_log SET actor = 'mallory' WHERE release_id = ?")
            .bind(r.id)
            .execute(s.pool())
            .await;
        assert!(upd.unwrap_err().to_string().contains("append-only"));
        let del = sqlx::query("DELETE FROM audit_log").execute(s.pool()).await;
        assert!(del.unwrap_err().to_string().contains("append-only"));
    }
}
