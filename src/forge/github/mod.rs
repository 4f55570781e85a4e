//! GitHub: webhook payloads in, REST API out.

pub mod webhook;
