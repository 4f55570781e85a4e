//! GitHub: webhook payloads in, REST API out.

pub mod client;
pub mod webhook;
