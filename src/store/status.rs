//! What `release-coordinator status` shows: each release in flight or recent, its pull
//! requests, what each waits for, and its last failed attempt.

use serde::Serialize;
use sqlx::Row;
use time::OffsetDateTime;

use super::{Store, StoreError, ts};

/// One release as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReleaseOverview {
    pub version: String,
    pub state: String,
    pub updated_at: String,
    /// The application repository and commit of its trigger (releases made with `release`
    /// from the command line have none).
    pub app_repo: Option<String>,
    pub app_commit: Option<String>,
    pub environments: Vec<EnvironmentOverview>,
    /// The last attempt at moving it on that failed, since it last moved on: when, and why.
    pub last_error: Option<LastError>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastError {
    pub at: String,
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvironmentOverview {
    pub environment: String,
    pub branch: String,
    /// waiting (for an earlier environment), open, scheduled, merged, closed.
    pub pull_request_state: String,
    pub pull_request: Option<u64>,
    pub url: Option<String>,
    /// What the pull request waits for, as its status comment says.
    pub waits_for: Option<String>,
    /// After the merge, with Argo CD: deploying, deployed or failed.
    pub deployment: Option<String>,
}

impl Store {
    /// Records the address of a release's pull request.
    pub async fn set_pr_url(
        &self,
        release_id: i64,
        environment: &str,
        url: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO pr_status (release_id, environment, url) VALUES (?, ?, ?)
             ON CONFLICT (release_id, environment) DO UPDATE SET url = excluded.url",
        )
        .bind(release_id)
        .bind(environment)
        .bind(url)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records what a release's pull request waits for now.
    pub async fn set_waits_for(
        &self,
        release_id: i64,
        environment: &str,
        waits_for: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO pr_status (release_id, environment, waits_for) VALUES (?, ?, ?)
             ON CONFLICT (release_id, environment) DO UPDATE SET waits_for = excluded.waits_for",
        )
        .bind(release_id)
        .bind(environment)
        .bind(waits_for)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a failed attempt at moving a release on (cleared when it moves on).
    pub async fn set_release_error(
        &self,
        release_id: i64,
        at: OffsetDateTime,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE releases SET last_error = ?, last_error_at = ? WHERE id = ?")
            .bind(error)
            .bind(ts(at))
            .bind(release_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// `version`'s release, or every release in flight and the `recent` last finished ones,
    /// newest first.
    pub async fn release_overviews(
        &self,
        version: Option<&str>,
        recent: i64,
    ) -> Result<Vec<ReleaseOverview>, StoreError> {
        // A failed release is still shown among those in flight: `/retry` may finish it.
        let rows = sqlx::query(
            "SELECT r.id, r.version_tag, r.state, r.updated_at, r.last_error, r.last_error_at,
                    f.app_repo, f.app_commit
             FROM releases r LEFT JOIN forge_releases f ON f.release_id = r.id
             WHERE (?1 IS NOT NULL AND r.version_tag = ?1)
                OR (?1 IS NULL AND (r.state NOT IN ('Completed', 'Aborted', 'RolledBack')
                    OR r.id IN (SELECT id FROM releases
                                WHERE state IN ('Completed', 'Aborted', 'RolledBack')
                                ORDER BY updated_at DESC, id DESC LIMIT ?2)))
             ORDER BY r.updated_at DESC, r.id DESC",
        )
        .bind(version)
        .bind(recent)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let id: i64 = r.get("id");
            let environments = sqlx::query(
                "SELECT p.environment, p.branch, p.state, p.pr_number, p.deploy_state, s.url, s.waits_for
                 FROM release_prs p LEFT JOIN pr_status s
                   ON s.release_id = p.release_id AND s.environment = p.environment
                 WHERE p.release_id = ? ORDER BY p.position",
            )
            .bind(id)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|e| EnvironmentOverview {
                environment: e.get("environment"),
                branch: e.get("branch"),
                pull_request_state: e.get("state"),
                pull_request: e.get::<Option<i64>, _>("pr_number").map(|n| n as u64),
                url: e.get("url"),
                waits_for: e.get("waits_for"),
                deployment: e.get("deploy_state"),
            })
            .collect();
            let last_error = match (
                r.get::<Option<String>, _>("last_error_at"),
                r.get::<Option<String>, _>("last_error"),
            ) {
                (Some(at), Some(error)) => Some(LastError { at, error }),
                _ => None,
            };
            out.push(ReleaseOverview {
                version: r.get("version_tag"),
                state: r.get("state"),
                updated_at: r.get("updated_at"),
                app_repo: r.get("app_repo"),
                app_commit: r.get("app_commit"),
                environments,
                last_error,
            });
        }
        Ok(out)
    }
}
