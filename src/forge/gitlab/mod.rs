//! GitLab: webhook payloads in. The REST side (the `Forge` implementation) is issue 4's work.

pub mod webhook;
