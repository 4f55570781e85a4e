//! The release lifecycle of the design:
//! `Pending -> Tagging -> AwaitingApproval -> AwaitingChecks -> Merging -> Deploying ->
//! Documenting -> Completed`, with `Failed`, `RolledBack` and `Aborted`.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReleaseState {
    /// Recorded; the version is reserved. Release branches are being built.
    Pending,
    /// Release branches exist; tags and pull requests are being created.
    Tagging,
    AwaitingApproval,
    AwaitingChecks,
    Merging,
    Deploying,
    Documenting,
    Completed,
    Failed,
    RolledBack,
    Aborted,
}

impl ReleaseState {
    pub const ALL: [ReleaseState; 11] = [
        ReleaseState::Pending,
        ReleaseState::Tagging,
        ReleaseState::AwaitingApproval,
        ReleaseState::AwaitingChecks,
        ReleaseState::Merging,
        ReleaseState::Deploying,
        ReleaseState::Documenting,
        ReleaseState::Completed,
        ReleaseState::Failed,
        ReleaseState::RolledBack,
        ReleaseState::Aborted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseState::Pending => "Pending",
            ReleaseState::Tagging => "Tagging",
            ReleaseState::AwaitingApproval => "AwaitingApproval",
            ReleaseState::AwaitingChecks => "AwaitingChecks",
            ReleaseState::Merging => "Merging",
            ReleaseState::Deploying => "Deploying",
            ReleaseState::Documenting => "Documenting",
            ReleaseState::Completed => "Completed",
            ReleaseState::Failed => "Failed",
            ReleaseState::RolledBack => "RolledBack",
            ReleaseState::Aborted => "Aborted",
        }
    }

    pub fn parse(s: &str) -> Option<ReleaseState> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether nothing more will happen to a release in this state.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ReleaseState::Completed | ReleaseState::RolledBack | ReleaseState::Aborted
        )
    }

    /// Whether the lifecycle may move a release from `self` to `to`. Checked where transitions
    /// are stored, so no code path can, say, complete a release that never merged.
    pub fn may_become(self, to: ReleaseState) -> bool {
        use ReleaseState::*;
        // A completed release can still be rolled back: its rollback pull request waits for
        // approval like any other. So can a rolled back one in an environment it still runs
        // (production was rolled back first; staging is next).
        if matches!(self, Completed | RolledBack) && to == AwaitingApproval {
            return true;
        }
        if self.is_final() || self == to {
            return false;
        }
        match to {
            Pending => false,
            Tagging => self == Pending,
            // The next environment, after the last one merged (or deployed, with Argo CD); or a
            // rollback pull request, after a failure or at any time after a merge.
            AwaitingApproval => matches!(
                self,
                Pending | Tagging | AwaitingChecks | Merging | Deploying | Documenting | Failed
            ),
            AwaitingChecks => matches!(self, AwaitingApproval | Merging),
            Merging => matches!(self, AwaitingApproval | AwaitingChecks),
            // Watched again with `/retry` after a failed deployment.
            Deploying => matches!(self, Merging | Failed),
            Documenting => matches!(self, Merging | Deploying | Failed),
            Completed => self == Documenting,
            // A release fails after its merge (a tag that clashes); `/retry` picks it up again.
            // Or its rollback pull request was closed without merging.
            Failed => matches!(
                self,
                AwaitingApproval | AwaitingChecks | Merging | Deploying | Documenting
            ),
            RolledBack => matches!(self, Merging | Deploying | Documenting | Failed),
            // Cancelled, timed out, or its pull request closed: any time before it is final.
            Aborted => true,
        }
    }
}

/// What the audit log records. One name per kind of event, each recorded once per occasion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditEvent {
    /// The version was reserved (the offline engine and the bot alike).
    ReleaseTriggered,
    InputsValidated,
    ReleaseBranchBuilt,
    /// The release branches reached the deployment repository.
    ReleaseBranchesPushed,
    /// The release was linked to the forge and the trigger commit it came from.
    ReleaseLinked,
    ReleaseApprovalRequested,
    ApprovalRecorded,
    ApprovalWithdrawn,
    ReleaseHeld,
    ReleaseUnheld,
    ReleaseAwaitingApproval,
    ReleaseAwaitingChecks,
    /// Someone else pushed to a release branch: not merged until rebuilt (or allowed).
    ReleaseBranchForeignCommits,
    /// A release branch was built again on the current base (the base moved under it).
    ReleaseRebuilt,
    ReleaseMerging,
    ReleaseMergeFailed,
    ReleaseMerged,
    ReleaseNextEnvironment,
    /// An environment merged and Argo CD is watched deploying it.
    ReleaseDeploying,
    /// Every Application of an environment synced the merge and is healthy.
    ReleaseDeployed,
    ReleaseDeployFailed,
    /// A rollback pull request was asked for (`/rollback`, or a failed deployment).
    ReleaseRollbackRequested,
    ReleaseRolledBack,
    ReleaseDocumenting,
    ReleaseCompleted,
    ReleaseFailed,
    ReleaseRetried,
    ReleaseAborted,
}

impl AuditEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditEvent::ReleaseTriggered => "ReleaseTriggered",
            AuditEvent::InputsValidated => "InputsValidated",
            AuditEvent::ReleaseBranchBuilt => "ReleaseBranchBuilt",
            AuditEvent::ReleaseBranchesPushed => "ReleaseBranchesPushed",
            AuditEvent::ReleaseLinked => "ReleaseLinked",
            AuditEvent::ReleaseApprovalRequested => "ReleaseApprovalRequested",
            AuditEvent::ApprovalRecorded => "ApprovalRecorded",
            AuditEvent::ApprovalWithdrawn => "ApprovalWithdrawn",
            AuditEvent::ReleaseHeld => "ReleaseHeld",
            AuditEvent::ReleaseUnheld => "ReleaseUnheld",
            AuditEvent::ReleaseAwaitingApproval => "ReleaseAwaitingApproval",
            AuditEvent::ReleaseAwaitingChecks => "ReleaseAwaitingChecks",
            AuditEvent::ReleaseBranchForeignCommits => "ReleaseBranchForeignCommits",
            AuditEvent::ReleaseRebuilt => "ReleaseRebuilt",
            AuditEvent::ReleaseMerging => "ReleaseMerging",
            AuditEvent::ReleaseMergeFailed => "ReleaseMergeFailed",
            AuditEvent::ReleaseMerged => "ReleaseMerged",
            AuditEvent::ReleaseNextEnvironment => "ReleaseNextEnvironment",
            AuditEvent::ReleaseDeploying => "ReleaseDeploying",
            AuditEvent::ReleaseDeployed => "ReleaseDeployed",
            AuditEvent::ReleaseDeployFailed => "ReleaseDeployFailed",
            AuditEvent::ReleaseRollbackRequested => "ReleaseRollbackRequested",
            AuditEvent::ReleaseRolledBack => "ReleaseRolledBack",
            AuditEvent::ReleaseDocumenting => "ReleaseDocumenting",
            AuditEvent::ReleaseCompleted => "ReleaseCompleted",
            AuditEvent::ReleaseFailed => "ReleaseFailed",
            AuditEvent::ReleaseRetried => "ReleaseRetried",
            AuditEvent::ReleaseAborted => "ReleaseAborted",
        }
    }
}

impl fmt::Display for AuditEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ReleaseState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in ReleaseState::ALL {
            assert_eq!(ReleaseState::parse(s.as_str()), Some(s));
        }
        assert_eq!(ReleaseState::parse("Done"), None);
    }

    #[test]
    fn final_states_are_final_and_a_release_completes_only_after_documenting() {
        for from in ReleaseState::ALL.into_iter().filter(|s| s.is_final()) {
            for to in ReleaseState::ALL {
                // The one way out: a completed (or, in another environment, a rolled back)
                // release is rolled back through a pull request.
                let rollback = matches!(from, ReleaseState::Completed | ReleaseState::RolledBack)
                    && to == ReleaseState::AwaitingApproval;
                assert_eq!(from.may_become(to), rollback, "{from} -> {to}");
            }
        }
        for from in ReleaseState::ALL {
            assert_eq!(
                from.may_become(ReleaseState::Completed),
                from == ReleaseState::Documenting,
                "{from} -> Completed"
            );
        }
        assert!(ReleaseState::AwaitingApproval.may_become(ReleaseState::Merging));
        assert!(!ReleaseState::Pending.may_become(ReleaseState::Merging));
        assert!(ReleaseState::Failed.may_become(ReleaseState::Documenting));
    }
}
