//! Releases driven through a forge: their pull requests and the facts the merge decision reads.

use sqlx::Row;

use time::OffsetDateTime;

use super::{Store, StoreError, parse_ts, ts};
use crate::policy::{ActKind, ApprovalAct, Check, CheckSource, CheckState};
use crate::release::bot::model::{PrState, Summary, TriggerOutcome};
use crate::release::state::ReleaseState;

#[derive(Debug, Clone)]
pub struct ForgeRelease {
    pub release_id: i64,
    pub version_tag: String,
    pub state: ReleaseState,
    pub forge: String,
    pub app_repo: String,
    pub app_commit: String,
    /// Who pushed the trigger commit.
    pub requester: String,
    /// The forge account of the trigger commit's author, where the forge says.
    pub trigger_author: Option<String>,
    pub summary: Summary,
    pub tagged: bool,
    pub release_url: Option<String>,
}

impl ForgeRelease {
    /// Whether `login` asked for this release (pushed or wrote the trigger commit).
    pub fn is_requester(&self, login: &str) -> bool {
        self.requester.eq_ignore_ascii_case(login)
            || self
                .trigger_author
                .as_deref()
                .is_some_and(|a| a.eq_ignore_ascii_case(login))
    }
}

/// The pusher recorded for a head whose pusher is not known (its push webhook was lost, or a
/// bot other than this one pushed it). NULL is the bot itself.
pub const UNKNOWN_PUSHER: &str = "?";

/// One head in a release branch's push history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadRecord {
    pub id: i64,
    pub commit: String,
    pub since: OffsetDateTime,
    pub pusher: Option<String>,
    /// The head this one replaced as the same change (a rebuild on a moved base).
    pub same_change_as: Option<String>,
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
    pub state: PrState,
    pub held_by: Option<String>,
    pub merge_commit: Option<String>,
    /// When the bot opened the pull request (its approval timeout runs from then).
    pub opened_at: Option<OffsetDateTime>,
    /// After the merge, with Argo CD: how the environment's deployment stands.
    pub deploy: Option<DeployState>,
    /// When every Application was first seen synced to the merge (the health timeout runs
    /// from then).
    pub synced_at: Option<OffsetDateTime>,
    pub deployed_at: Option<OffsetDateTime>,
    /// The last thing seen of the deployment, in words.
    pub deploy_detail: Option<String>,
    /// When the bot began watching the deployment (the merge).
    pub deploy_since: Option<OffsetDateTime>,
}

/// How an environment's merged release stands in the cluster (with Argo CD).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployState {
    Deploying,
    Deployed,
    Failed,
}

impl DeployState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeployState::Deploying => "deploying",
            DeployState::Deployed => "deployed",
            DeployState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<DeployState> {
        [
            DeployState::Deploying,
            DeployState::Deployed,
            DeployState::Failed,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }
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
        state: PrState::parse(r.get("state")).unwrap_or(PrState::Waiting),
        held_by: r.get("held_by"),
        merge_commit: r.get("merge_commit"),
        opened_at: r.get::<Option<&str>, _>("opened_at").map(parse_ts),
        deploy: r
            .get::<Option<&str>, _>("deploy_state")
            .and_then(DeployState::parse),
        synced_at: r.get::<Option<&str>, _>("synced_at").map(parse_ts),
        deployed_at: r.get::<Option<&str>, _>("deployed_at").map(parse_ts),
        deploy_detail: r.get("deploy_detail"),
        deploy_since: r.get::<Option<&str>, _>("deploy_since").map(parse_ts),
    }
}

const PR_COLUMNS: &str = "release_id, environment, position, branch, pr_number, opening, head_commit, \
     status_comment_id, status_body_sha, status_posting, state, held_by, merge_commit, opened_at, \
     deploy_state, synced_at, deployed_at, deploy_detail, deploy_since";

impl Store {
    /// Links a recorded release to the forge it came from and lists its pull requests to be.
    /// False when it was linked before.
    pub async fn record_forge_release(
        &self,
        release: &ForgeRelease,
        environments: &[(String, String)],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin_with(super::IMMEDIATE).await?;
        let linked = sqlx::query(
            "INSERT INTO forge_releases (release_id, forge, app_repo, app_commit, requester, summary, trigger_author) \
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (release_id) DO NOTHING",
        )
        .bind(release.release_id)
        .bind(&release.forge)
        .bind(&release.app_repo)
        .bind(&release.app_commit)
        .bind(&release.requester)
        .bind(serde_json::to_string(&release.summary).expect("a summary is JSON"))
        .bind(&release.trigger_author)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
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
        Ok(linked)
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
             f.tagged, f.release_url, f.trigger_author FROM releases r JOIN forge_releases f ON f.release_id = r.id \
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
                state: ReleaseState::parse(r.get(2)).unwrap_or(ReleaseState::Failed),
                forge: r.get(3),
                app_repo: r.get(4),
                app_commit: r.get(5),
                requester: r.get(6),
                summary: serde_json::from_str(r.get::<&str, _>(7)).unwrap_or_default(),
                tagged: r.get::<i64, _>(8) != 0,
                release_url: r.get(9),
                trigger_author: r.get(10),
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

    /// Merged release pull requests whose environment Argo CD is deploying.
    pub async fn release_prs_deploying(&self) -> Result<Vec<ReleasePr>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PR_COLUMNS} FROM release_prs WHERE deploy_state = 'deploying' ORDER BY release_id"
        )))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(pr_from_row).collect())
    }

    /// Saves the mutable fields of a release pull request.
    pub async fn save_release_pr(&self, pr: &ReleasePr) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE release_prs SET pr_number = ?, opening = ?, head_commit = ?, status_comment_id = ?, \
             status_body_sha = ?, status_posting = ?, state = ?, held_by = ?, merge_commit = ?, opened_at = ?, \
             deploy_state = ?, synced_at = ?, deployed_at = ?, deploy_detail = ?, deploy_since = ? \
             WHERE release_id = ? AND environment = ?",
        )
        .bind(pr.pr_number.map(|n| n as i64))
        .bind(pr.opening as i64)
        .bind(&pr.head_commit)
        .bind(pr.status_comment_id.map(|n| n as i64))
        .bind(&pr.status_body_sha)
        .bind(pr.status_posting as i64)
        .bind(pr.state.as_str())
        .bind(&pr.held_by)
        .bind(&pr.merge_commit)
        .bind(pr.opened_at.map(ts))
        .bind(pr.deploy.map(DeployState::as_str))
        .bind(pr.synced_at.map(ts))
        .bind(pr.deployed_at.map(ts))
        .bind(&pr.deploy_detail)
        .bind(pr.deploy_since.map(ts))
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

    /// The release pull request of `branch`, if it is one.
    pub async fn release_pr_by_branch(
        &self,
        branch: &str,
    ) -> Result<Option<ReleasePr>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PR_COLUMNS} FROM release_prs WHERE branch = ? ORDER BY release_id DESC LIMIT 1"
        )))
        .bind(branch)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(pr_from_row))
    }

    /// The commit the bot built (and last pushed) for one environment of a release, and the
    /// commit of a rebuild written down and not yet recorded as pushed (see
    /// [`Store::begin_rebuild`]).
    pub async fn built_head(
        &self,
        release_id: i64,
        environment: &str,
    ) -> Result<Option<(String, Option<String>)>, StoreError> {
        let row = sqlx::query(
            "SELECT commit_id, rebuilding FROM release_branches WHERE release_id = ? AND environment = ?",
        )
        .bind(release_id)
        .bind(environment)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Appends an act to the approval ledger; false when the same act was recorded before.
    pub async fn record_act(&self, pr: &ReleasePr, act: &ApprovalAct) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO approval_acts (release_id, environment, user_login, user_is_bot, source, act, head, at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(pr.release_id)
        .bind(&pr.environment)
        .bind(&act.user)
        .bind(act.user_is_bot as i64)
        .bind(&act.source)
        .bind(act.kind.as_str())
        .bind(&act.head)
        .bind(ts(act.at))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// Whether this act (source, kind and time) is in the ledger.
    pub async fn has_act(&self, pr: &ReleasePr, act: &ApprovalAct) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT 1 FROM approval_acts WHERE release_id = ? AND environment = ? AND source = ? AND act = ? AND at = ?",
        )
        .bind(pr.release_id)
        .bind(&pr.environment)
        .bind(&act.source)
        .bind(act.kind.as_str())
        .bind(ts(act.at))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// The ledger of a pull request, in the order the acts were given (the forge's times).
    pub async fn acts(&self, pr: &ReleasePr) -> Result<Vec<ApprovalAct>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_login, user_is_bot, source, act, head, at FROM approval_acts \
             WHERE release_id = ? AND environment = ? ORDER BY id",
        )
        .bind(pr.release_id)
        .bind(&pr.environment)
        .fetch_all(&self.pool)
        .await?;
        let mut acts: Vec<ApprovalAct> = rows
            .into_iter()
            .map(|r| ApprovalAct {
                user: r.get(0),
                user_is_bot: r.get::<i64, _>(1) != 0,
                source: r.get(2),
                kind: if r.get::<&str, _>(3) == "approve" {
                    ActKind::Approve
                } else {
                    ActKind::Withdraw
                },
                head: r.get(4),
                at: parse_ts(r.get(5)),
            })
            .collect();
        // Stable: acts of the same second keep the order they were recorded in.
        acts.sort_by_key(|a| a.at);
        Ok(acts)
    }

    /// Whether the latest act of `source` approves.
    pub async fn source_approved(&self, pr: &ReleasePr, source: &str) -> Result<bool, StoreError> {
        Ok(self
            .acts(pr)
            .await?
            .iter()
            .rev()
            .find(|a| a.source == source)
            .is_some_and(|a| a.kind == ActKind::Approve))
    }

    /// Records that the branch's head became `commit` at `since`. The same head recorded again
    /// (a webhook and a re-read of one push) is one change: its pusher is filled in if it was
    /// not known; a head that comes back after another is a new change.
    pub async fn record_head(
        &self,
        pr: &ReleasePr,
        commit: &str,
        since: OffsetDateTime,
        pusher: Option<&str>,
    ) -> Result<(), StoreError> {
        let heads = self.heads(pr).await?;
        if let Some(last) = heads.last().filter(|h| h.commit == commit) {
            let known = |p: Option<&str>| p.is_some_and(|p| p != UNKNOWN_PUSHER);
            if last.pusher.as_deref() == Some(UNKNOWN_PUSHER) && known(pusher) {
                sqlx::query("UPDATE pr_heads SET pusher = ? WHERE id = ?")
                    .bind(pusher)
                    .bind(last.id)
                    .execute(&self.pool)
                    .await?;
            }
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO pr_heads (release_id, environment, commit_id, since, pusher) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(pr.release_id)
        .bind(&pr.environment)
        .bind(commit)
        .bind(ts(since))
        .bind(pusher)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The branch's push history, oldest first.
    pub async fn heads(&self, pr: &ReleasePr) -> Result<Vec<HeadRecord>, StoreError> {
        read_heads(&self.pool, pr.release_id, &pr.environment).await
    }

    /// People known to have pushed to the branch.
    pub async fn pushers(&self, pr: &ReleasePr) -> Result<Vec<String>, StoreError> {
        let mut pushers: Vec<String> = self
            .heads(pr)
            .await?
            .into_iter()
            .filter_map(|h| h.pusher)
            .filter(|p| p != UNKNOWN_PUSHER)
            .collect();
        pushers.sort();
        pushers.dedup();
        Ok(pushers)
    }

    /// Whether the branch holds a push of someone not known since the bot last pushed it: a
    /// push whose webhook was lost (seen only as a head that appeared, or as the `before` of a
    /// later push), or one by another bot.
    pub async fn unknown_pusher_since_built(&self, pr: &ReleasePr) -> Result<bool, StoreError> {
        let mut unknown = false;
        for h in self.heads(pr).await? {
            match h.pusher.as_deref() {
                None => unknown = false,
                Some(UNKNOWN_PUSHER) => unknown = true,
                Some(_) => {}
            }
        }
        Ok(unknown)
    }

    /// Who pushed the latest record of `commit`, if a person the bot knows.
    pub async fn head_pusher(
        &self,
        pr: &ReleasePr,
        commit: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .heads(pr)
            .await?
            .into_iter()
            .rev()
            .find(|h| h.commit == commit)
            .and_then(|h| h.pusher)
            .filter(|p| p != UNKNOWN_PUSHER))
    }

    /// Records a run of a check, unless a newer run (by the forge's order) is recorded.
    pub async fn set_check(
        &self,
        pr: &ReleasePr,
        commit: &str,
        check: &Check,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO pr_checks (release_id, environment, commit_id, name, source, state, ordering) VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (release_id, environment, commit_id, name, source) DO UPDATE SET state = excluded.state, ordering = excluded.ordering \
             WHERE excluded.ordering >= pr_checks.ordering",
        )
        .bind(pr.release_id)
        .bind(&pr.environment)
        .bind(commit)
        .bind(&check.name)
        .bind(serde_json::to_string(&check.source).expect("a source is JSON"))
        .bind(check.state.as_str())
        .bind(check.order as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn checks(&self, pr: &ReleasePr, commit: &str) -> Result<Vec<Check>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, source, state, ordering FROM pr_checks WHERE release_id = ? AND environment = ? AND commit_id = ?",
        )
        .bind(pr.release_id)
        .bind(&pr.environment)
        .bind(commit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                Some(Check {
                    name: r.get(0),
                    source: serde_json::from_str::<CheckSource>(r.get::<&str, _>(1)).ok()?,
                    state: CheckState::parse(r.get(2)),
                    order: r.get::<i64, _>(3) as u64,
                })
            })
            .collect())
    }

    /// Keeps the signed approval record of an environment's merge (the first one stands).
    pub async fn record_approval_record(
        &self,
        pr: &ReleasePr,
        record: &serde_json::Value,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO approval_records (release_id, environment, record) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(pr.release_id)
        .bind(&pr.environment)
        .bind(record.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The signed approval records of a release, in the order its environments merged.
    pub async fn approval_records(
        &self,
        release_id: i64,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        let rows =
            sqlx::query("SELECT record FROM approval_records WHERE release_id = ? ORDER BY rowid")
                .bind(release_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| serde_json::from_str(r.get::<&str, _>(0)).ok())
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
    ) -> Result<Option<TriggerOutcome>, StoreError> {
        let row = sqlx::query(
            "SELECT outcome FROM trigger_outcomes WHERE forge = ? AND repo = ? AND commit_id = ?",
        )
        .bind(forge)
        .bind(repo)
        .bind(commit)
        .fetch_optional(&self.pool)
        .await?;
        // An outcome this version cannot read is treated as none: the trigger is looked at again.
        Ok(row.and_then(|r| serde_json::from_str(r.get::<&str, _>(0)).ok()))
    }

    pub async fn set_trigger_outcome(
        &self,
        forge: &str,
        repo: &str,
        commit: &str,
        outcome: &TriggerOutcome,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO trigger_outcomes (forge, repo, commit_id, outcome) VALUES (?, ?, ?, ?) \
             ON CONFLICT (forge, repo, commit_id) DO UPDATE SET outcome = excluded.outcome",
        )
        .bind(forge)
        .bind(repo)
        .bind(commit)
        .bind(serde_json::to_string(outcome).expect("an outcome is JSON"))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// The environment name under which the rollback pull request of `environment` (its
/// `attempt`th) is kept.
pub fn rollback_environment(environment: &str, attempt: i64) -> String {
    if attempt <= 1 {
        format!("{ROLLBACK_PREFIX}{environment}")
    } else {
        format!("{ROLLBACK_PREFIX}{environment}#{attempt}")
    }
}

/// The environment a rollback pull request rolls back, if `environment` is one.
pub fn rolled_back_environment(environment: &str) -> Option<&str> {
    environment
        .strip_prefix(ROLLBACK_PREFIX)
        .map(|e| e.split_once('#').map(|(e, _)| e).unwrap_or(e))
}

const ROLLBACK_PREFIX: &str = "rollback:";

/// A requested rollback of one environment of a release.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollback {
    pub release_id: i64,
    pub environment: String,
    pub attempt: i64,
    /// Its pull request was closed without merging.
    pub abandoned: bool,
    pub requested_by: String,
    pub reason: String,
    pub automatic: bool,
    pub requested_at: OffsetDateTime,
    pub restores: serde_json::Value,
}

/// A new rollback, with its pull request's branch, as built and pushed.
pub struct NewRollback<'a> {
    pub rollback: &'a Rollback,
    pub branch: &'a str,
    pub commit: &'a str,
    pub position: i64,
}

impl Rollback {
    /// The environment its pull request is kept under.
    pub fn pr_environment(&self) -> String {
        rollback_environment(&self.environment, self.attempt)
    }
}

impl Store {
    /// Records a rollback and its pull request to be (its branch already pushed), at once.
    /// False: this environment of the release is already being rolled back.
    pub async fn record_rollback(&self, new: NewRollback<'_>) -> Result<bool, StoreError> {
        let r = new.rollback;
        let env = r.pr_environment();
        let mut tx = self.pool.begin_with(super::IMMEDIATE).await?;
        let inserted = sqlx::query(
            "INSERT INTO rollbacks (release_id, environment, attempt, requested_by, reason, automatic, requested_at, restores) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (release_id, environment, attempt) DO NOTHING",
        )
        .bind(r.release_id)
        .bind(&r.environment)
        .bind(r.attempt)
        .bind(&r.requested_by)
        .bind(&r.reason)
        .bind(r.automatic as i64)
        .bind(ts(r.requested_at))
        .bind(r.restores.to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !inserted {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO release_branches (release_id, environment, branch, commit_id, pushed) VALUES (?, ?, ?, ?, 1)",
        )
        .bind(r.release_id)
        .bind(&env)
        .bind(new.branch)
        .bind(new.commit)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO release_prs (release_id, environment, position, branch) VALUES (?, ?, ?, ?)",
        )
        .bind(r.release_id)
        .bind(&env)
        .bind(new.position)
        .bind(new.branch)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A rollback whose pull request was closed without merging: a later `/rollback` may ask
    /// again.
    pub async fn abandon_rollback(&self, r: &Rollback) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE rollbacks SET abandoned = 1 WHERE release_id = ? AND environment = ? AND attempt = ?",
        )
        .bind(r.release_id)
        .bind(&r.environment)
        .bind(r.attempt)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The rollbacks of a release, oldest first.
    pub async fn rollbacks(&self, release_id: i64) -> Result<Vec<Rollback>, StoreError> {
        let rows = sqlx::query(
            "SELECT release_id, environment, attempt, abandoned, requested_by, reason, automatic, requested_at, restores \
             FROM rollbacks WHERE release_id = ? ORDER BY requested_at, environment, attempt",
        )
        .bind(release_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Rollback {
                release_id: r.get("release_id"),
                environment: r.get("environment"),
                attempt: r.get("attempt"),
                abandoned: r.get::<i64, _>("abandoned") != 0,
                requested_by: r.get("requested_by"),
                reason: r.get("reason"),
                automatic: r.get::<i64, _>("automatic") != 0,
                requested_at: parse_ts(r.get("requested_at")),
                restores: serde_json::from_str(r.get::<&str, _>("restores"))
                    .unwrap_or(serde_json::Value::Null),
            })
            .collect())
    }
}

/// A branch's push history, oldest first, read through `executor` (the pool, or a transaction
/// that is about to add to it).
pub(crate) async fn read_heads<'e, E>(
    executor: E,
    release_id: i64,
    environment: &str,
) -> Result<Vec<HeadRecord>, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    let rows = sqlx::query(
        "SELECT id, commit_id, since, pusher, same_change_as FROM pr_heads WHERE release_id = ? AND environment = ? ORDER BY id",
    )
    .bind(release_id)
    .bind(environment)
    .fetch_all(executor)
    .await?;
    let mut heads: Vec<HeadRecord> = rows
        .into_iter()
        .map(|r| HeadRecord {
            id: r.get(0),
            commit: r.get(1),
            since: parse_ts(r.get(2)),
            pusher: r.get(3),
            same_change_as: r.get(4),
        })
        .collect();
    // Stable: changes of the same second keep the order they were recorded in.
    heads.sort_by_key(|h| h.since);
    Ok(heads)
}
