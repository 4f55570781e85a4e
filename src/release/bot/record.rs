//! The signed approval record: at each merge the bot signs what was decided (which change, who
//! approved it with which role and when, which checks passed and where they came from, under
//! which policy), with the release key. It travels in the annotated tag's message and the forge
//! release's notes, and `release-coordinator verify` checks it offline like the manifest.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::merge::Gate;
use super::{Bot, BotError};
use crate::policy::{self, ActKind};
use crate::signing::ReleaseSigner;
use crate::store::forge_releases::{ForgeRelease, ReleasePr};

/// Names the record's format.
pub const RECORD_KIND: &str = "release-coordinator/approval-record/v1";

impl Bot {
    /// Signs and keeps the approval record of `pr`'s merge as `merged_commit`.
    pub(super) async fn sign_approval_record(
        &self,
        rel: &ForgeRelease,
        pr: &ReleasePr,
        gate: &Gate,
        merged_commit: &str,
        merged_by: &str,
    ) -> Result<(), BotError> {
        let facts = gate.facts(&self.config.policy);
        let acts = self.store.acts(pr).await?;
        let mut approvers = Vec::new();
        for a in gate.approvals() {
            if policy::check_approval(&facts, a).is_err() {
                continue;
            }
            let act = acts
                .iter()
                .rev()
                .find(|x| x.user.eq_ignore_ascii_case(&a.user) && x.kind == ActKind::Approve);
            approvers.push(json!({
                "user": a.user,
                "roles": facts.roles.get(&a.user).cloned().unwrap_or_default(),
                "at": act.map(|x| crate::store::ts(x.at)),
                "source": act.map(|x| x.source.clone()),
                "head": a.commit,
            }));
        }
        let env = self.env_policy(&pr.environment);
        let checks: Vec<Value> = env
            .map(|e| e.required_checks.as_slice())
            .unwrap_or_default()
            .iter()
            .filter_map(|rule| match policy::newest_accepted(rule, facts.checks) {
                Ok(Some(c)) => Some(json!({
                    "name": c.name,
                    "source": c.source,
                    "conclusion": c.state.as_str(),
                })),
                _ => None,
            })
            .collect();
        // Whether what was decided allowed this merge: a merge by hand (or one the forge made)
        // may not have been, and the record says so rather than vouch for it.
        let unmet: Vec<String> = match policy::decide(&facts) {
            policy::Decision::Merge => Vec::new(),
            policy::Decision::Wait(r) | policy::Decision::Block(r) => {
                r.iter().map(ToString::to_string).collect()
            }
        };
        let record = json!({
            "kind": RECORD_KIND,
            "release": rel.version_tag,
            "environment": pr.environment,
            "repository": self.settings.deployment_repo,
            "pull_request": pr.pr_number,
            "head": facts.head_commit,
            "built_head": facts.built_head,
            "merged_commit": merged_commit,
            "merged_by": merged_by,
            "policy_met": unmet.is_empty(),
            "unmet": unmet,
            "base": self.config.orchestration.deployment.base_branch,
            "application": {"repository": rel.app_repo, "commit": rel.app_commit},
            "requested_by": facts.requesters,
            "approvers": approvers,
            "checks": checks,
            "policy_sha256": policy_digest(&self.config.policy, &pr.environment),
            "signed_at": crate::store::ts(self.now()),
        });
        let signing = &self.config.orchestration.signing;
        let signer = ReleaseSigner::load(
            &self.config.resolve_path(&signing.key_file),
            signing.key_id.clone(),
        )
        .map_err(|e| BotError::Io(e.to_string()))?;
        self.store
            .record_approval_record(pr, &signer.sign(&record))
            .await?;
        Ok(())
    }
}

/// A digest of the rule an environment was approved under (its entry, or the `default` one,
/// and every role's members), over RFC 8785 canonical JSON.
pub fn policy_digest(policy: &crate::config::ReleasePolicy, environment: &str) -> String {
    let value = json!({
        "environment": environment,
        "rule": policy.environment(environment),
        "roles": policy.roles,
        "bots": policy.bots,
    });
    let bytes = serde_json_canonicalizer::to_vec(&value).expect("JSON values canonicalize");
    hex::encode(Sha256::digest(&bytes))
}
