//! Who holds which policy role: listed by name, or through a GitHub team or GitLab group.
//!
//! Teams are asked only as far as a decision needs: whether someone holds any role at all
//! (to approve), and which of the roles the environment requires. Answers are reused for a few
//! minutes between decisions; a decision to merge reads them afresh, once per team and user.

use std::collections::{BTreeMap, BTreeSet};

use super::{Bot, BotError};
use crate::events::ForgeKind;

/// How long a team answer is reused between decisions.
const TEAM_CACHE_TTL: time::Duration = time::Duration::minutes(5);

impl Bot {
    /// The policy roles of each user that matter: every role held in `needed`, and at least
    /// one role if the user holds any. `fresh`: teams are asked again unless asked during this
    /// very decision.
    pub(super) async fn roles_of(
        &self,
        users: &[String],
        needed: &[String],
        fresh: bool,
    ) -> Result<BTreeMap<String, BTreeSet<String>>, BotError> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for user in users {
            if out.contains_key(user) {
                continue;
            }
            let policy = &self.config.policy;
            let mut held: BTreeSet<String> = policy
                .roles
                .iter()
                .filter(|(_, m)| m.users.iter().any(|u| u.eq_ignore_ascii_case(user)))
                .map(|(r, _)| r.clone())
                .collect();
            // Needed roles first, so that "holds any role" is settled by a lookup that was
            // needed anyway.
            let mut order: Vec<&String> = needed
                .iter()
                .filter(|r| policy.roles.contains_key(*r))
                .collect();
            order.extend(policy.roles.keys().filter(|r| !needed.contains(r)));
            for role in order {
                let wanted = needed.contains(role) || held.is_empty();
                if !wanted || held.contains(role) {
                    continue;
                }
                let members = &policy.roles[role];
                let teams = match self.forge.kind() {
                    ForgeKind::Github => &members.github_teams,
                    ForgeKind::Gitlab => &members.gitlab_groups,
                };
                for team in teams {
                    if self.team_member(team, user, fresh).await? {
                        held.insert(role.clone());
                        break;
                    }
                }
            }
            out.insert(user.clone(), held);
        }
        Ok(out)
    }

    /// Team answers this job read so far no longer count as read during its decision (the
    /// job waited for the merge turn since).
    pub(super) fn forget_memberships_read_in_this_job(&self) {
        let job = super::lanes::current_job();
        self.teams
            .lock()
            .unwrap()
            .retain(|_, (_, _, read_in)| *read_in != job);
    }

    /// Whether `user` is a member of `team`. A team's members are read once and reused for a
    /// few minutes; with `fresh`, only within the same decision.
    async fn team_member(&self, team: &str, user: &str, fresh: bool) -> Result<bool, BotError> {
        let now = self.now();
        let decision = super::lanes::current_job();
        let user = user.to_ascii_lowercase();
        if let Some((members, at, read_in)) = self.teams.lock().unwrap().get(team)
            && if fresh {
                *read_in == decision
            } else {
                now - *at < TEAM_CACHE_TTL
            }
        {
            return Ok(members.contains(&user));
        }
        let members: BTreeSet<String> = self.forge.team_members(team).await?.into_iter().collect();
        let member = members.contains(&user);
        self.teams
            .lock()
            .unwrap()
            .insert(team.to_string(), (members, now, decision));
        Ok(member)
    }

    /// Whether `user` holds a role of `environment`: one it requires, one that may roll it
    /// back, or (where it names none) any role of the policy.
    /// Whether `user` holds one of `environment`'s `rollbackRoles` (memberships read afresh).
    pub(super) async fn holds_rollback_role(
        &self,
        environment: &str,
        user: &str,
    ) -> Result<bool, BotError> {
        let Some(env) = self.config.policy.environment(environment) else {
            return Ok(false);
        };
        if env.rollback_roles.is_empty() {
            return Ok(false);
        }
        let roles = self
            .roles_of(&[user.to_string()], &env.rollback_roles, true)
            .await?;
        let held = roles.get(user).cloned().unwrap_or_default();
        Ok(env.rollback_roles.iter().any(|r| held.contains(r)))
    }

    pub(super) async fn holds_environment_role(
        &self,
        environment: &str,
        user: &str,
    ) -> Result<bool, BotError> {
        let Some(env) = self.env_policy(environment) else {
            return Ok(false);
        };
        let wanted: Vec<String> = env
            .required_roles
            .iter()
            .chain(&env.rollback_roles)
            .cloned()
            .collect();
        let roles = self.roles_of(&[user.to_string()], &wanted, false).await?;
        let held = roles.get(user).cloned().unwrap_or_default();
        Ok(if wanted.is_empty() {
            !held.is_empty()
        } else {
            wanted.iter().any(|w| held.contains(w))
        })
    }
}
