//! `serve`: bind, enter the sandbox, then start the runtime and serve.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{EXIT_USAGE, runtime, warn_if_unprivileged};
use crate::config::{Config, ConfigSource};
use crate::core::Core;
use crate::ebpf::host;

/// `serve`: bind, enter the sandbox, then start the runtime and serve.
pub(super) fn serve_command(
    config: Config,
    source: ConfigSource,
    reserved: Vec<&'static str>,
    http: Option<String>,
    unix: Option<PathBuf>,
) -> u8 {
    let addr = match http.as_deref() {
        None => None,
        Some("") => Some(config.server.bind_address),
        Some(text) => match text.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                eprintln!(
                    "ebpf-mcp: --http {text}: not an address; write IP:PORT, e.g. 127.0.0.1:8080"
                );
                return EXIT_USAGE;
            }
        },
    };
    host::prepare(config.ebpf.auto_mount);
    warn_if_unprivileged(&config.security.access_control.required_capabilities);
    let core = Arc::new(Core::new(config, source, reserved));
    let result = crate::server::prepare(&core, addr, unix).and_then(|prepared| {
        let file = match &core.config_source {
            crate::config::ConfigSource::File(p) => Some(p.as_path()),
            crate::config::ConfigSource::Defaults => None,
        };
        let report = crate::security::sandbox::enter(&core.config(), file, prepared.socket_dir());
        let _ = core.sandbox.set(report);
        // The runtime's threads start after the sandbox: they inherit it.
        let runtime = runtime().map_err(crate::server::ServeError::Runtime)?;
        let served = runtime.block_on(crate::server::serve(core, prepared));
        runtime.shutdown_timeout(Duration::from_secs(2));
        served
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("ebpf-mcp: {e}");
            EXIT_USAGE
        }
    }
}
