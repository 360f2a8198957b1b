//! The command line: `serve` (stdio or HTTP), `call` (one tool, in-process), `tools`,
//! `token`, `config check|default`. Exit codes: 0 success, 1 the tool returned an error, 2
//! usage or configuration error. Arguments in `args`, each command in a module of its own,
//! and the output formats of `call` in `call` (JSON, JSON lines) and `table`.

mod args;
mod call;
mod config_cmd;
mod serve;
mod table;
mod token;

use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use crate::config::{Config, ConfigSource, LogLevel};
use crate::core::Core;
use crate::ebpf::host;
use args::{Cli, Command};

const EXIT_TOOL_ERROR: u8 = 1;
const EXIT_USAGE: u8 = 2;

const EXAMPLES: &str = "\
Examples:
  ebpf-mcp call info                         what eBPF can do on this host
  ebpf-mcp call info '{\"refresh\": true}' --output table
  ebpf-mcp serve                             MCP over stdio (for desktop clients)
  ebpf-mcp serve --http 127.0.0.1:8080       MCP over Streamable HTTP at /mcp
  ebpf-mcp tools                             the tools and what they are for
  ebpf-mcp config check /etc/ebpf-mcp/config.yaml

Run as root, or grant CAP_BPF, CAP_PERFMON (and CAP_SYS_ADMIN to mount tracefs/bpffs).";

fn write_stdout(text: &str) -> u8 {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => 0,
        // A closed pipe (`| head`) is the reader's choice, not our failure.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("ebpf-mcp: cannot write output: {e}");
            EXIT_TOOL_ERROR
        }
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version land here too, with exit code 0.
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    ExitCode::from(run(cli))
}

fn run(cli: Cli) -> u8 {
    if let Command::Config { action } = &cli.command {
        return config_cmd::config_command(action);
    }
    if let Command::Token { action } = &cli.command {
        return token::token_command(action);
    }
    if let Command::Completions { shell } = &cli.command {
        let mut text = Vec::new();
        clap_complete::generate(
            *shell,
            &mut <Cli as clap::CommandFactory>::command(),
            "ebpf-mcp",
            &mut text,
        );
        return write_stdout(&String::from_utf8_lossy(&text));
    }
    if let Command::Man = &cli.command {
        let mut text = Vec::new();
        return match clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
            .render(&mut text)
        {
            Ok(()) => write_stdout(&String::from_utf8_lossy(&text)),
            Err(e) => {
                eprintln!("ebpf-mcp: cannot render the manual page: {e}");
                EXIT_TOOL_ERROR
            }
        };
    }
    let (config, source) = match Config::load(cli.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("ebpf-mcp: {e}");
            return EXIT_USAGE;
        }
    };
    let serving = matches!(cli.command, Command::Serve { .. });
    // One-shot commands stay quiet unless asked: their output is the result.
    let level = cli.log_level.unwrap_or(if serving {
        config.observability.logging.level
    } else {
        LogLevel::Warn
    });
    let format = cli
        .log_format
        .unwrap_or(config.observability.logging.format);
    if let Err(e) =
        crate::telemetry::init(level, format, config.observability.logging.file.as_deref())
    {
        eprintln!("ebpf-mcp: {e}");
        return EXIT_USAGE;
    }
    let reserved = match &source {
        ConfigSource::File(path) => std::fs::read_to_string(path)
            .map(|t| Config::reserved_keys_set(&t))
            .unwrap_or_default(),
        ConfigSource::Defaults => Vec::new(),
    };
    for key in &reserved {
        tracing::warn!(
            key,
            "configuration key is accepted but not in effect in this version"
        );
    }
    if let Command::Serve { http, unix } = cli.command {
        return serve::serve_command(config, source, reserved, http, unix);
    }
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ebpf-mcp: {e}");
            return EXIT_TOOL_ERROR;
        }
    };
    let code = match cli.command {
        Command::Tools { output } => config_cmd::tools_command(&config, output),
        Command::Call { tool, args, output } => {
            host::prepare(config.ebpf.auto_mount);
            let core = Arc::new(Core::new(config, source, reserved));
            runtime.block_on(call::call_command(core, &tool, &args, output))
        }
        Command::Config { .. }
        | Command::Token { .. }
        | Command::Serve { .. }
        | Command::Completions { .. }
        | Command::Man => {
            unreachable!("handled above")
        }
    };
    // A blocking stdin reader must not keep the process alive after the work is done.
    runtime.shutdown_timeout(Duration::from_secs(2));
    code
}

/// The async runtime (its worker threads start here).
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// A server without the capabilities it is configured to require
/// (security.access_control.required_capabilities: CAP_BPF and CAP_PERFMON by default)
/// still starts — `info` reports kernel facts and /ready says what is missing — but the
/// operator should hear why it will not work, and how to fix it, at once.
fn warn_if_unprivileged(required: &[String]) {
    match crate::ebpf::caps::CapSet::current() {
        Ok(caps) => {
            if let Err(e) = caps.require_named(required) {
                tracing::warn!("{}", e.message);
            }
        }
        Err(e) => tracing::warn!("cannot read this process's capabilities: {e}"),
    }
}
