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
}
