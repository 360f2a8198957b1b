//! The deploy engine: what an agent's object may attach to and how that is resolved.
//! The `deploy` tools (tools/deploy.rs) are its adapters.

pub mod target;
