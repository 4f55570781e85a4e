//! The forges the bot talks to. Each module turns its forge's webhooks into
//! [`crate::events::Event`]s and (later) implements the `Forge` trait over its REST API.

pub mod github;
