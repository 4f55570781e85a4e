//! Release Coordinator: a GitOps release bot.
//!
//! A developer commits `promotion-trigger.yaml` to an application repository; the bot validates
//! it against the operator's policy and opens release branches in the deployment repository,
//! with image tags changed in place, signed release documents and an audit trail.

pub mod argocd;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod diagnostics;
pub mod events;
pub mod forge;
pub mod fuzzing;
pub mod git;
pub mod images;
pub mod inputs;
pub mod policy;
pub mod release;
pub mod server;
pub mod signing;
pub mod store;
pub mod templates;
pub mod version;
pub mod worker;
pub mod yaml_edit;
