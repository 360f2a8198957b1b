//! Logging: to stderr (stdout belongs to the protocol in stdio mode) or to a file, as text or
//! JSON lines, at the configured level. `RUST_LOG` directives, when set, refine the level.

pub mod metrics;

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogLevel};

/// Installs the global subscriber. Safe to call once per process; later calls are ignored.
pub fn init(level: LogLevel, format: LogFormat, file: Option<&Path>) -> Result<(), String> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,ebpf_mcp={0},rmcp=warn", level.as_str())));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let result = match (file, format) {
        (Some(path), format) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open log file {}: {e}", path.display()))?;
            let writer = Mutex::new(f);
            match format {
                LogFormat::Json => builder
                    .json()
                    .with_writer(writer)
                    .with_ansi(false)
                    .try_init(),
                LogFormat::Text => builder.with_writer(writer).with_ansi(false).try_init(),
            }
        }
        (None, LogFormat::Json) => builder.json().with_writer(std::io::stderr).try_init(),
        (None, LogFormat::Text) => builder
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    // Already installed (tests run many servers in one process): keep the first.
    let _ = result;
    Ok(())
}
