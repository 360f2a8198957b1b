//! ebpf-mcp: a Model Context Protocol server that gives AI agents structured, bounded and
//! audited access to Linux eBPF. The binary in `main.rs` is a thin shell around [`cli`].
//!
//! Data flows top to bottom once: `server` (transports) → `mcp` (protocol edge) → `tools`
//! (thin adapters) → the engines `trace`, `maps`, `deploy` → `ebpf` (the only layer that
//! talks to the kernel). docs/architecture.md draws every layer; tests/layers.rs fails when
//! a module imports one that is not below it.

pub mod call;
pub mod cli;
pub mod config;
pub mod core;
pub mod deploy;
pub mod docs;
pub mod ebpf;
pub mod error;
pub mod fault;
pub mod gadgets;
pub mod glob;
pub mod maps;
pub mod mcp;
pub mod resources;
pub mod rows;
pub mod security;
pub mod server;
pub mod suggest;
pub mod telemetry;
pub mod time;
pub mod tools;
pub mod trace;

pub use error::{EbpfError, ErrorCategory};
