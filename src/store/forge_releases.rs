//! Releases driven through a forge: their pull requests and the facts the merge decision reads.

use sqlx::Row;

use super::{Store, StoreError};
use crate::policy::{Approval, Check, CheckState};

#[derive(Debug, Clone)]
pub struct ForgeRelease {
    pub release_id: i64,
    pub version_tag: String,
    pub state: String,
    pub forge: String,
    pub app_repo: String,
    pub app_commit: String,
    pub requester: String,
    pub summary: serde_json::Value,
    pub tagged: bool,
    pub release_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleasePr {
    pub release_id: i64,
    pub environment: String,
    pub position: i64,
    pub branch: String,
    pub pr_number: Option<u64>,
    pub opening: bool,
    pub head_commit: Option<String>,
    pub status_comment_id: Option<u64>,
    pub status_body_sha: Option<String>,
    /// The status comment was asked for and its id not yet recorded: it may exist.
    pub status_posting: bool,
    /// waiting | open | scheduled (the forge merges once its pipeline succeeds) | merged | closed
    pub state: String,
    pub held_by: Option<String>,
    pub merge_commit: Option<String>,
}

fn pr_from_row(r: sqlx::sqlite::SqliteRow) -> ReleasePr {
    ReleasePr {
        release_id: r.get("release_id"),
        environment: r.get("environment"),
        position: r.get("position"),
        branch: r.get("branch"),
        pr_number: r.get::<Option<i64>, _>("pr_number").map(|n| n as u64),
        opening: r.get::<i64, _>("opening") != 0,
        head_commit: r.get("head_commit"),
        status_comment_id: r
            .get::<Option<i64>, _>("status_comment_id")
            .map(|n| n as u64),
        status_body_sha: r.get("status_body_sha"),
        status_posting: r.get::<i64, _>("status_posting") != 0,
        state: r.get("state"),
        held_by: r.get("held_by"),
        merge_commit: r.get("merge_commit"),
    }
}

const PR_COLUMNS: &str = "release_id, environment, position, branch, pr_number, opening, head_commit, \
     status_comment_id, status_body_sha, status_posting, state, held_by, merge_commit";

impl Store {
    /// Links a recorded release to the forge it came from and lists its pull requests to be.
    pub async fn record_forge_release(
        &self,
        release: &ForgeRelease,
        environments: &[(String, String)],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO forge_releases (release_id, forge, app_repo, app_commit, requester, summary) \
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (release_id) DO NOTHING",
        )
        .bind(release.release_id)
        .bind(&release.forge)
        .bind(&release.app_repo)
        .bind(&release.app_commit)
        .bind(&release.requester)
        .bind(release.summary.to_string())
        .execute(&mut *tx)
        .await?;
        for (i, (env, branch)) in environments.iter().enumerate() {
            sqlx::query(
                "INSERT INTO release_prs (release_id, environment, position, branch) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (release_id, environment) DO NOTHING",
            )
            .bind(release.release_id)
            .bind(env)
            .bind(i as i64)
            .bind(branch)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Releases a forge drives that are not finished: the reconcile loop's work list.
    pub async fn forge_releases_in_flight(&self) -> Result<Vec<ForgeRelease>, StoreError> {
        self.forge_releases_where(
            "r.state NOT IN ('Completed', 'Failed', 'Aborted', 'RolledBack')",
            None,
        )
        .await
    }

    pub async fn forge_release(&self, release_id: i64) -> Result<Option<ForgeRelease>, StoreError> {
        Ok(self
            .forge_releases_where("r.id = ?", Some(release_id))
            .await?
            .pop())
    }

    async fn forge_releases_where(
        &self,
        condition: &str,
        id: Option<i64>,
    ) -> Result<Vec<ForgeRelease>, StoreError> {
        let sql = format!(
            "SELECT r.id, r.version_tag, r.state, f.forge, f.app_repo, f.app_commit, f.requester, f.summary, \
             f.tagged, f.release_url FROM releases r JOIN forge_releases f ON f.release_id = r.id \
             WHERE {condition} ORDER BY r.id"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(id) = id {
            q = q.bind(id);
        }
        let rows = q.fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|r| ForgeRelease {
                release_id: r.get(0),
                version_tag: r.get(1),
                state: r.get(2),
                forge: r.get(3),
                app_repo: r.get(4),
                app_commit: r.get(5),
                requester: r.get(6),
                summary: serde_json::from_str(r.get::<&str, _>(7)).unwrap_or_default(),
                tagged: r.get::<i64, _>(8) != 0,
                release_url: r.get(9),
            })
            .collect())
    }

    pub async fn release_prs(&self, release_id: i64) -> Result<Vec<ReleasePr>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PR_COLUMNS} FROM release_prs WHERE release_id = ? ORDER BY position"
        )))
        .bind(release_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(pr_from_row).collect())
    }

    /// The release pull request with this number in the deployment repository, if it is one.
    pub async fn release_pr_by_number(&self, number: u64) -> Result<Option<ReleasePr>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PR_COLUMNS} FROM release_prs WHERE pr_number = ? ORDER BY release_id DESC LIMIT 1"
        )))
        .bind(number as i64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(pr_from_row))
    }

    /// Open release pull requests whose head is `commit` (a check reported on it).
    pub async fn release_prs_by_head(&self, commit: &str) -> Result<Vec<ReleasePr>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PR_COLUMNS} FROM release_prs WHERE head_commit = ? AND state IN ('open', 'scheduled')"
        )))
        .bind(commit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(pr_from_row).collect())
    }

    /// Saves the mutable fields of a release pull request.
    pub async fn save_release_pr(&self, pr: &ReleasePr) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE release_prs SET pr_number = ?, opening = ?, head_commit = ?, status_comment_id = ?, \
             status_body_sha = ?, status_posting = ?, state = ?, held_by = ?, merge_commit = ? WHERE release_id = ? AND environment = ?",
        )
        .bind(pr.pr_number.map(|n| n as i64))
        .bind(pr.opening as i64)
        .bind(&pr.head_commit)
        .bind(pr.status_comment_id.map(|n| n as i64))
        .bind(&pr.status_body_sha)
        .bind(pr.status_posting as i64)
        .bind(&pr.state)
        .bind(&pr.held_by)
        .bind(&pr.merge_commit)
        .bind(pr.release_id)
        .bind(&pr.environment)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn mark_tagged(
        &self,
        release_id: i64,
        release_url: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE forge_releases SET tagged = 1, release_url = COALESCE(?, release_url) WHERE release_id = ?")
            .bind(release_url)
            .bind(release_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Replaces the approvals of a pull request with `approvals` (sources `comment:<id>` and
    /// `review:<id>`), as the latest reading of the forge says.
    pub async fn set_approval(
        &self,
        pr: &ReleasePr,
        source: &str,
        approval: Option<&Approval>,
    ) -> Result<(), StoreError> {
        match approval {
            Some(a) => {
                sqlx::query(
                    "INSERT INTO pr_approvals (release_id, environment, source, user_login, user_is_bot, commit_id) \
                     VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (release_id, environment, source) DO UPDATE SET \
                     user_login = excluded.user_login, user_is_bot = excluded.user_is_bot, commit_id = excluded.commit_id",
                )
                .bind(pr.release_id)
                .bind(&pr.environment)
                .bind(source)
                .bind(&a.user)
                .bind(a.user_is_bot as i64)
                .bind(&a.commit)
                .execute(&self.pool)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM pr_approvals WHERE release_id = ? AND environment = ? AND source = ?")
                    .bind(pr.release_id)
                    .bind(&pr.environment)
                    .bind(source)
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Removes every approval `user` gave on this pull request (`/approve cancel`).
    pub async fn drop_user_approvals(&self, pr: &ReleasePr, user: &str) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM pr_approvals WHERE release_id = ? AND environment = ? AND user_login = ?",
        )
        .bind(pr.release_id)
        .bind(&pr.environment)
        .bind(user)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Approvals in force, with their sources.
    pub async fn approvals(&self, pr: &ReleasePr) -> Result<Vec<(String, Approval)>, StoreError> {
        let rows = sqlx::query(
            "SELECT source, user_login, user_is_bot, commit_id FROM pr_approvals WHERE release_id = ? AND environment = ? ORDER BY source",
        )
        .bind(pr.release_id)
        .bind(&pr.environment)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.get(0),
                    Approval {
                        user: r.get(1),
                        user_is_bot: r.get::<i64, _>(2) != 0,
                        commit: r.get(3),
                    },
                )
            })
            .collect())
    }

    pub async fn set_check(
        &self,
        pr: &ReleasePr,
        commit: &str,
        check: &Check,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO pr_checks (release_id, environment, commit_id, name, state) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (release_id, environment, commit_id, name) DO UPDATE SET state = excluded.state",
        )
        .bind(pr.release_id)
        .bind(&pr.environment)
        .bind(commit)
        .bind(&check.name)
        .bind(check_state_str(check.state))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn checks(&self, pr: &ReleasePr, commit: &str) -> Result<Vec<Check>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, state FROM pr_checks WHERE release_id = ? AND environment = ? AND commit_id = ?",
        )
        .bind(pr.release_id)
        .bind(&pr.environment)
        .bind(commit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Check {
                name: r.get(0),
                state: match r.get::<&str, _>(1) {
                    "success" => CheckState::Success,
                    "failure" => CheckState::Failure,
                    _ => CheckState::Pending,
                },
            })
            .collect())
    }

    /// Whether this version of a comment was acted on to the end.
    pub async fn comment_handled(
        &self,
        comment_id: u64,
        body_sha: &str,
    ) -> Result<bool, StoreError> {
        let row =
            sqlx::query("SELECT 1 FROM handled_comments WHERE comment_id = ? AND body_sha = ?")
                .bind(comment_id as i64)
                .bind(body_sha)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.is_some())
    }

    /// Records that this version of a comment was acted on to the end. Marked only after every
    /// effect is done, so a step that failed half-way is tried again, not forgotten.
    pub async fn mark_comment_handled(
        &self,
        comment_id: u64,
        body_sha: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO handled_comments (comment_id, body_sha) VALUES (?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(comment_id as i64)
        .bind(body_sha)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// What is known of the note posted for `key`: never asked for (`None`), asked for and
    /// perhaps posted (`Some(None)`), posted (`Some(Some(id))`).
    pub async fn posted_note(
        &self,
        repo: &str,
        number: u64,
        key: &str,
    ) -> Result<Option<Option<u64>>, StoreError> {
        let row = sqlx::query(
            "SELECT note_id FROM posted_notes WHERE repo = ? AND number = ? AND note_key = ?",
        )
        .bind(repo)
        .bind(number as i64)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.get::<Option<i64>, _>(0).map(|id| id as u64)))
    }

    /// Records that the note for `key` is about to be posted (before the request).
    pub async fn intend_note(&self, repo: &str, number: u64, key: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO posted_notes (repo, number, note_key) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(repo)
        .bind(number as i64)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records the id of the note posted for `key`.
    pub async fn record_note(
        &self,
        repo: &str,
        number: u64,
        key: &str,
        note_id: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO posted_notes (repo, number, note_key, note_id) VALUES (?, ?, ?, ?) \
             ON CONFLICT (repo, number, note_key) DO UPDATE SET note_id = excluded.note_id",
        )
        .bind(repo)
        .bind(number as i64)
        .bind(key)
        .bind(note_id as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn trigger_outcome(
        &self,
        forge: &str,
        repo: &str,
        commit: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT outcome FROM trigger_outcomes WHERE forge = ? AND repo = ? AND commit_id = ?",
        )
        .bind(forge)
        .bind(repo)
        .bind(commit)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.get(0)))
    }

    pub async fn set_trigger_outcome(
        &self,
        forge: &str,
        repo: &str,
        commit: &str,
        outcome: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO trigger_outcomes (forge, repo, commit_id, outcome) VALUES (?, ?, ?, ?) \
             ON CONFLICT (forge, repo, commit_id) DO UPDATE SET outcome = excluded.outcome",
        )
        .bind(forge)
        .bind(repo)
        .bind(commit)
        .bind(outcome)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

fn check_state_str(s: CheckState) -> &'static str {
    match s {
        CheckState::Pending => "pending",
        CheckState::Success => "success",
        CheckState::Failure => "failure",
    }
}
