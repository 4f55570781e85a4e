//! GitLab: webhooks into events, and the REST API behind the `Forge` trait.

pub mod client;
pub mod webhook;
