//! The command line's arguments and subcommands (clap).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use super::EXAMPLES;
use crate::config::{LogFormat, LogLevel};

#[derive(Debug, Parser)]
#[command(
    name = "ebpf-mcp",
    version,
    about = "Structured, safe access to Linux eBPF for AI agents, over the Model Context Protocol",
    after_help = EXAMPLES
)]
pub(super) struct Cli {
    /// Configuration file (YAML); without one, built-in defaults apply.
    #[arg(long, global = true, env = "EBPF_MCP_CONFIG", value_name = "FILE")]
    pub(super) config: Option<PathBuf>,
    /// Log level (overrides observability.logging.level). Logs go to stderr or the configured file.
    #[arg(long, global = true, value_enum)]
    pub(super) log_level: Option<LogLevel>,
    /// Log format (overrides observability.logging.format).
    #[arg(long, global = true, value_enum)]
    pub(super) log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub(super) command: Command,
}

#[derive(Debug, Subcommand)]
pub(super) enum Command {
    /// Serve MCP: over stdio by default, or over Streamable HTTP with --http.
    Serve {
        /// Serve Streamable HTTP at http://ADDR/mcp instead of stdio (default address:
        /// server.bind_address). Only loopback addresses are accepted.
        #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "")]
        http: Option<String>,
        /// Serve on a unix socket at PATH (mode 0660) instead of stdio; callers are
        /// identified by their uid and groups (security.access_control).
        #[arg(long, value_name = "PATH", conflicts_with = "http")]
        unix: Option<PathBuf>,
    },
    /// Run one tool in-process and print its result.
    Call {
        /// Tool name (see `ebpf-mcp tools`).
        tool: String,
        /// Arguments as a JSON object; `-` reads them from stdin.
        #[arg(default_value = "{}")]
        args: String,
        /// json: pretty JSON; jsonl: one line per row (or the whole result); table: columns.
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Json)]
        output: OutputFormat,
    },
    /// List the tools with one-line descriptions.
    Tools {
        /// table: one line per tool; json: full definitions with schemas; markdown: the
        /// reference in docs/tools.md.
        #[arg(long, short, value_enum, default_value_t = ToolsFormat::Table)]
        output: ToolsFormat,
    },
    /// Validate a configuration file, or print the documented defaults.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Make HTTP bearer tokens.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Print a shell completion script, e.g. `ebpf-mcp completions bash >
    /// /etc/bash_completion.d/ebpf-mcp`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `ebpf-mcp man | man -l -`.
    Man,
}

#[derive(Debug, Subcommand)]
pub(super) enum TokenAction {
    /// Print a new secret (once: only its hash is kept) and the line for the tokens file.
    New {
        /// The token's name, as the audit log and metrics show it.
        #[arg(long)]
        id: String,
        /// Tiers it grants, comma-separated: read, trace, deploy.
        #[arg(long, value_delimiter = ',', default_value = "read")]
        tiers: Vec<String>,
        /// Lifetime ("90d", "12h") after which it is refused; none by default.
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
        /// Append the line to this tokens file (created mode 0600) instead of printing it.
        #[arg(long, value_name = "FILE")]
        append: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum ConfigAction {
    /// Parse and validate FILE; report the first error with its key and line.
    Check { file: PathBuf },
    /// Print the default configuration, with comments.
    Default,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum OutputFormat {
    Json,
    Jsonl,
    Table,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum ToolsFormat {
    Table,
    Json,
    Markdown,
}
