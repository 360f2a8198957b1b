//! The command line: `serve` (stdio or HTTP), `call` (one tool, in-process), `tools`,
//! `config check|default`. Exit codes: 0 success, 1 the tool returned an error, 2 usage or
//! configuration error.

use std::io::{self, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, ConfigSource, LogFormat, LogLevel};
use crate::core::Core;
use crate::ebpf::host;
use crate::error::{EbpfError, codes};
use crate::security::access;
use crate::security::audit::Caller;
use crate::tools::{self, CallContext, ToolEvent};

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

#[derive(Debug, Parser)]
#[command(
    name = "ebpf-mcp",
    version,
    about = "Structured, safe access to Linux eBPF for AI agents, over the Model Context Protocol",
    after_help = EXAMPLES
)]
struct Cli {
    /// Configuration file (YAML); without one, built-in defaults apply.
    #[arg(long, global = true, env = "EBPF_MCP_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log level (overrides observability.logging.level). Logs go to stderr or the configured file.
    #[arg(long, global = true, value_enum)]
    log_level: Option<LogLevel>,
    /// Log format (overrides observability.logging.format).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
}

#[derive(Debug, Subcommand)]
enum TokenAction {
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
enum ConfigAction {
    /// Parse and validate FILE; report the first error with its key and line.
    Check { file: PathBuf },
    /// Print the default configuration, with comments.
    Default,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutputFormat {
    Json,
    Jsonl,
    Table,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ToolsFormat {
    Table,
    Json,
    Markdown,
}

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
        return config_command(action);
    }
    if let Command::Token { action } = &cli.command {
        return token_command(action);
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
        return serve_command(config, source, reserved, http, unix);
    }
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ebpf-mcp: {e}");
            return EXIT_TOOL_ERROR;
        }
    };
    let code = match cli.command {
        Command::Tools { output } => tools_command(&config, output),
        Command::Call { tool, args, output } => {
            host::prepare(config.ebpf.auto_mount);
            let core = Arc::new(Core::new(config, source, reserved));
            runtime.block_on(call_command(core, &tool, &args, output))
        }
        Command::Config { .. } | Command::Token { .. } | Command::Serve { .. } => {
            unreachable!("handled above")
        }
    };
    // A blocking stdin reader must not keep the process alive after the work is done.
    runtime.shutdown_timeout(Duration::from_secs(2));
    code
}

fn token_command(action: &TokenAction) -> u8 {
    let TokenAction::New {
        id,
        tiers,
        expires_in,
        append,
    } = action;
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
    {
        eprintln!("ebpf-mcp: --id must be letters, digits and - _ . @ (it appears in logs)");
        return EXIT_USAGE;
    }
    let mut parsed = Vec::new();
    for t in tiers {
        match crate::security::Tier::ALL
            .into_iter()
            .find(|tier| tier.as_str() == t.trim())
        {
            Some(tier) if !parsed.contains(&tier) => parsed.push(tier),
            Some(_) => {}
            None => {
                eprintln!("ebpf-mcp: --tiers: `{t}` is not a tier; use read, trace, deploy");
                return EXIT_USAGE;
            }
        }
    }
    parsed.sort();
    let expires = match expires_in.as_deref().map(humantime::parse_duration) {
        None => None,
        Some(Ok(d)) => Some(crate::time::add(std::time::SystemTime::now(), d)),
        Some(Err(e)) => {
            eprintln!("ebpf-mcp: --expires-in: {e}; write e.g. 90d or 12h");
            return EXIT_USAGE;
        }
    };
    let secret = match access::new_secret() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ebpf-mcp: {e}");
            return 1;
        }
    };
    let line = access::token_line(id, &secret, &parsed, expires);
    let Some(file) = append else {
        return write_stdout(&format!(
            "# secret for `{id}` (shown once; the server keeps only its hash). Clients send:\n\
             #   Authorization: Bearer {secret}\n\
             # add this entry under `tokens:` in security.access_control.tokens_file:\n{line}\n"
        ));
    };
    // Check the file as it would be with the new entry before touching it.
    let existing = std::fs::read_to_string(file).unwrap_or_default();
    let mut updated = existing.clone();
    if existing.trim().is_empty() {
        updated = "tokens:\n".into();
    } else if !updated.ends_with('\n') {
        updated.push('\n');
    }
    updated.push_str(&line);
    updated.push('\n');
    if let Err(e) = access::Tokens::parse(&updated, &file.display().to_string()) {
        eprintln!("ebpf-mcp: not appending: {e}");
        return EXIT_USAGE;
    }
    // Written beside it and renamed over it: a reader never sees half a file, and the
    // result is mode 0600 whatever the old file's mode was.
    use std::os::unix::fs::OpenOptionsExt;
    let staging = file.with_extension(format!("tmp-{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&staging)
        .and_then(|mut f| f.write_all(updated.as_bytes()).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&staging, file));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&staging);
        eprintln!("ebpf-mcp: writing {}: {e}", file.display());
        return 1;
    }
    eprintln!(
        "ebpf-mcp: added `{id}` to {}; a running server picks it up on SIGHUP",
        file.display()
    );
    write_stdout(&format!("{secret}\n"))
}

/// `serve`: bind, enter the sandbox, then start the runtime and serve.
fn serve_command(
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
        crate::security::sandbox::enter(&core, &prepared);
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

fn config_command(action: &ConfigAction) -> u8 {
    match action {
        ConfigAction::Default => write_stdout(config::DEFAULT_YAML),
        ConfigAction::Check { file } => match Config::load(Some(file)) {
            Ok(_) => {
                let text = std::fs::read_to_string(file).unwrap_or_default();
                let reserved = Config::reserved_keys_set(&text);
                let mut msg = format!("{}: valid\n", file.display());
                for key in reserved {
                    msg.push_str(&format!(
                        "note: `{key}` is accepted but not in effect in this version\n"
                    ));
                }
                write_stdout(&msg)
            }
            Err(e) => {
                eprintln!("ebpf-mcp: {e}");
                EXIT_USAGE
            }
        },
    }
}

fn tools_command(config: &Config, output: ToolsFormat) -> u8 {
    let registry = tools::registry();
    match output {
        ToolsFormat::Table => {
            let width = registry
                .all()
                .iter()
                .map(|t| t.name.len())
                .max()
                .unwrap_or(4);
            let mut text = String::new();
            for t in registry.all() {
                let state = if t.enabled(config) { "" } else { " (disabled)" };
                let first_sentence = t.description.split(". ").next().unwrap_or(t.description);
                text.push_str(&format!(
                    "{:width$}  {:6}  {}{state}\n",
                    t.name,
                    t.tier.as_str(),
                    first_sentence.trim_end_matches('.'),
                ));
            }
            write_stdout(&text)
        }
        ToolsFormat::Json => {
            let list: Vec<Value> = registry
                .all()
                .iter()
                .map(|t| {
                    serde_json::json!({
                        "name": t.name,
                        "title": t.title,
                        "tier": t.tier,
                        "enabled": t.enabled(config),
                        "description": t.description,
                        "inputSchema": t.input_schema,
                        "outputSchema": t.output_schema,
                    })
                })
                .collect();
            write_stdout(&format!("{}\n", pretty(&Value::Array(list))))
        }
        ToolsFormat::Markdown => write_stdout(&tools::docs::markdown(registry)),
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

async fn call_command(core: Arc<Core>, tool: &str, args: &str, output: OutputFormat) -> u8 {
    let Some(spec) = tools::registry().get(tool) else {
        let known: Vec<&str> = tools::registry().all().iter().map(|t| t.name).collect();
        eprintln!(
            "ebpf-mcp: unknown tool `{tool}`; known tools: {}",
            known.join(", ")
        );
        return EXIT_USAGE;
    };
    let text = if args == "-" {
        let mut buf = String::new();
        if let Err(e) = io::stdin().read_to_string(&mut buf) {
            eprintln!("ebpf-mcp: cannot read arguments from stdin: {e}");
            return EXIT_USAGE;
        }
        buf
    } else {
        args.to_owned()
    };
    let args: Value = match serde_json::from_str(&text) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            eprintln!("ebpf-mcp: arguments must be a JSON object, e.g. '{{\"refresh\": true}}'");
            return EXIT_USAGE;
        }
        Err(e) => {
            eprintln!(
                "ebpf-mcp: arguments are not valid JSON ({e}); quote them, e.g. '{{\"refresh\": true}}'"
            );
            return EXIT_USAGE;
        }
    };
    let cancel = CancellationToken::new();
    let ctx = CallContext::new(
        cancel.clone(),
        format!("cli:{}", std::process::id()),
        |event| match event {
            ToolEvent::Log { level, message } => match level {
                LogLevel::Error => tracing::error!("{message}"),
                LogLevel::Warn => tracing::warn!("{message}"),
                LogLevel::Info => tracing::info!("{message}"),
                LogLevel::Debug | LogLevel::Trace => tracing::debug!("{message}"),
            },
            ToolEvent::Progress {
                progress,
                total,
                message,
            } => {
                tracing::debug!(progress, total, "{message}");
            }
        },
    );
    // The invoking user, checked like a stdio client: permitted_users applies, tiers map.
    let identity = access::local_identity(
        &core.config().security.access_control,
        &access::Peer::this_process(),
        true,
    );
    let ctx = match &identity {
        Ok(id) => ctx.with_caller(Caller::new("cli", id)),
        Err(_) => ctx,
    };
    // Ctrl-C stops the tool early; tools that can return what they have so far do so.
    let interrupt = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            crate::server::shutdown_signal().await;
            cancel.cancel();
        })
    };
    let result = if matches!(output, OutputFormat::Jsonl) && spec.can_stream() && identity.is_ok() {
        // Rows go straight to stdout as the tool produces them; only the summary is kept.
        let mut out = io::BufWriter::with_capacity(1 << 20, io::stdout());
        let sink = Box::new(move |row: &str| {
            out.write_all(row.as_bytes())
                .and_then(|()| out.write_all(b"\n"))
                .is_ok()
        });
        tools::execute_stream(&core, spec, args, ctx, sink)
            .await
            .map(|summary| {
                if let Some(note) = summary.get("hint").and_then(Value::as_str) {
                    eprintln!("ebpf-mcp: {note}");
                }
                if summary.get("truncated") == Some(&Value::Bool(true)) {
                    let cursor = summary
                        .get("next_cursor")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    eprintln!("ebpf-mcp: more rows remain; continue with \"cursor\": \"{cursor}\"");
                }
                Value::Null
            })
    } else if let Err(refused) = identity {
        Err(EbpfError::permission(codes::USER_NOT_PERMITTED, refused.0))
    } else {
        tools::execute(&core, spec, args, ctx).await
    };
    interrupt.abort();
    // What the call left running (a deployment, a trace session) ends with this process:
    // say so in the result, since its expiry would suggest otherwise.
    let held = core.tracker.counts();
    let result = match result {
        Ok(Value::Object(mut map)) if held.deployments + held.trace_sessions > 0 => {
            let note = "`ebpf-mcp call` holds what it starts only while it runs: it is released \
                as the command exits. Use a running server (`serve`) to keep it until its \
                expiry (`verify_only` needs no server).";
            let hint = match map.get("hint").and_then(Value::as_str) {
                Some(h) => format!("{h} {note}"),
                None => note.to_owned(),
            };
            map.insert("hint".into(), hint.into());
            Ok(Value::Object(map))
        }
        other => other,
    };
    core.shutdown();
    if result.as_ref().is_ok_and(Value::is_null) {
        return 0;
    }
    match result {
        Ok(value) => {
            if value.get("truncated") == Some(&Value::Bool(true))
                && let Some(hint) = value.get("hint").and_then(Value::as_str)
                && io::stderr().is_terminal()
            {
                eprintln!("ebpf-mcp: {hint}");
            }
            write_stdout(&render(&value, spec.list_field, output))
        }
        Err(err) => {
            eprintln!("ebpf-mcp: {tool} failed: {err}");
            let code = write_stdout(&format!("{}\n", pretty(&err.to_json())));
            if code == 0 { EXIT_TOOL_ERROR } else { code }
        }
    }
}

fn render(value: &Value, list_field: Option<&str>, output: OutputFormat) -> String {
    let rows = list_field
        .and_then(|f| value.get(f))
        .and_then(Value::as_array);
    match output {
        OutputFormat::Json => format!("{}\n", pretty(value)),
        OutputFormat::Jsonl => match rows {
            Some(rows) => rows.iter().map(|r| format!("{r}\n")).collect(),
            None => format!("{value}\n"),
        },
        OutputFormat::Table => table_view(value, list_field),
    }
}

/// The view for people: the tool's rows as aligned columns; then its other fields (totals,
/// cursors, why it stopped) as `key  value` lines; then any other list of objects as a table
/// under its name, latency histograms as bars.
fn table_view(value: &Value, list_field: Option<&str>) -> String {
    let Some(fields) = value.as_object() else {
        return format!("{}\n", scalar(value));
    };
    let mut out = String::new();
    if let Some(field) = list_field
        && let Some(rows) = fields.get(field).and_then(Value::as_array)
    {
        if rows.is_empty() {
            out.push_str(&format!("(no {field})\n"));
        } else {
            out.push_str(&table(rows));
        }
    }
    let mut lines = Vec::new();
    let mut lists = Vec::new();
    for (k, v) in fields {
        if Some(k.as_str()) == list_field && v.is_array() {
            continue;
        }
        match v.as_array() {
            Some(rows) if !rows.is_empty() && rows.iter().all(Value::is_object) => {
                lists.push((k, rows));
            }
            _ => flatten(k, v, &mut lines),
        }
    }
    if !lines.is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in &lines {
            out.push_str(&format!("{k:width$}  {v}\n"));
        }
    }
    for (name, rows) in lists {
        if !out.is_empty() {
            out.push('\n');
        }
        if name == "histograms" {
            out.push_str(&histograms(rows));
        } else {
            out.push_str(&format!("{name}:\n{}", table(rows)));
        }
    }
    out
}

/// Log2 latency histograms as bars, one block per group, in the style of bpftrace's `hist()`.
fn histograms(groups: &[Value]) -> String {
    const BAR: usize = 40;
    let mut out = String::new();
    for (i, group) in groups.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let key = group
            .get("key")
            .and_then(Value::as_object)
            .filter(|k| !k.is_empty())
            .map(|k| {
                k.iter()
                    .map(|(f, v)| format!("{f}={}", scalar(v)))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_else(|| "all".to_owned());
        let stat = |f: &str| group.get(f).map(scalar).unwrap_or_default();
        out.push_str(&format!(
            "{key}: {} observations, avg {} us, p50 <= {} us, p90 <= {} us, p99 <= {} us\n",
            stat("count"),
            stat("avg_us"),
            stat("p50_us"),
            stat("p90_us"),
            stat("p99_us")
        ));
        let buckets: Vec<(String, u64)> = group
            .get("buckets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|b| {
                let bound = |f: &str| b.get(f).and_then(Value::as_u64).unwrap_or(0);
                let range = format!("[{}, {}]", bound("low_us"), bound("high_us"));
                (range, bound("count"))
            })
            .collect();
        let most = buckets.iter().map(|(_, c)| *c).max().unwrap_or(0).max(1);
        let range_width = buckets.iter().map(|(r, _)| r.len()).max().unwrap_or(0);
        let count_width = buckets
            .iter()
            .map(|(_, c)| c.to_string().len())
            .max()
            .unwrap_or(0);
        for (range, count) in &buckets {
            let filled = usize::try_from(count * BAR as u64 / most).unwrap_or(BAR);
            out.push_str(&format!(
                "{range:>range_width$} {count:>count_width$} |{:<BAR$}|\n",
                "@".repeat(filled)
            ));
        }
    }
    out
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                flatten(&key(k), child, out);
            }
        }
        Value::Array(a) if a.iter().all(|x| !x.is_object() && !x.is_array()) => {
            out.push((
                prefix.to_owned(),
                a.iter().map(scalar).collect::<Vec<_>>().join(", "),
            ));
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), child, out);
            }
        }
        other => out.push((prefix.to_owned(), scalar(other))),
    }
}

/// Rows as aligned columns; nested objects become dotted columns (`value.bytes`).
fn table(rows: &[Value]) -> String {
    let flat: Vec<Vec<(String, String)>> = rows
        .iter()
        .map(|r| {
            let mut cells = Vec::new();
            flatten("", r, &mut cells);
            cells
        })
        .collect();
    let mut columns: Vec<String> = Vec::new();
    for row in &flat {
        for (k, _) in row {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
    }
    let cells: Vec<Vec<String>> = flat
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| {
                    row.iter()
                        .find(|(k, _)| k == c)
                        .map(|(_, v)| v.replace(", ", ","))
                        .unwrap_or_default()
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].len())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |vals: &[String]| -> String {
        let mut s = vals
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let header: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
    let mut out = line(&header);
    for r in &cells {
        out.push_str(&line(r));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn table_renders_rows_with_union_of_columns() {
        let rows = vec![
            json!({"id": 1, "name": "a", "maps": [3, 4]}),
            json!({"id": 22, "extra": true}),
        ];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["ID", "NAME", "MAPS", "EXTRA"]
        );
        assert!(lines[1].contains("3,4"));
        assert!(lines[2].ends_with("true"));
    }

    #[test]
    fn objects_flatten_to_dotted_keys() {
        let v = json!({"kernel": {"release": "6.1", "caps": ["A", "B"]}, "n": 1});
        let s = render(&v, None, OutputFormat::Table);
        assert!(s.contains("kernel.release  6.1"), "{s}");
        assert!(s.contains("kernel.caps     A, B"), "{s}");
    }

    #[test]
    fn table_view_puts_rows_first_then_totals_then_other_lists() {
        let v = json!({
            "events": [{"pid": 1, "comm": "a"}],
            "events_total": 7,
            "stopped_by": "duration",
            "counts": [{"key": {"comm": "a"}, "count": 7}],
        });
        let s = render(&v, Some("events"), OutputFormat::Table);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["PID", "COMM"]
        );
        assert!(
            s.contains("events_total  7\nstopped_by    duration\n"),
            "{s}"
        );
        assert!(s.contains("counts:\nKEY.COMM  COUNT\na         7\n"), "{s}");
        let empty = render(
            &json!({"events": [], "events_total": 0}),
            Some("events"),
            OutputFormat::Table,
        );
        assert!(empty.starts_with("(no events)\n"), "{empty}");
    }

    #[test]
    fn histograms_draw_bars_scaled_to_the_fullest_bucket() {
        let v = json!({"histograms": [{
            "key": {"comm": "dd"}, "count": 30, "avg_us": 5.5, "p50_us": 7, "p90_us": 15, "p99_us": 15,
            "buckets": [
                {"low_us": 4, "high_us": 7, "count": 20},
                {"low_us": 8, "high_us": 15, "count": 10},
            ],
        }]});
        let s = render(&v, None, OutputFormat::Table);
        let lines: Vec<&str> = s.lines().collect();
        assert!(
            lines[0].starts_with("comm=dd: 30 observations, avg 5.5 us, p50 <= 7 us"),
            "{s}"
        );
        assert_eq!(lines[1], format!(" [4, 7] 20 |{}|", "@".repeat(40)));
        assert_eq!(
            lines[2],
            format!("[8, 15] 10 |{}{}|", "@".repeat(20), " ".repeat(20))
        );
    }

    #[test]
    fn jsonl_prints_one_row_per_line() {
        let v = json!({"rows": [{"a": 1}, {"a": 2}], "total": 2});
        assert_eq!(
            render(&v, Some("rows"), OutputFormat::Jsonl),
            "{\"a\":1}\n{\"a\":2}\n"
        );
        assert_eq!(render(&v, None, OutputFormat::Jsonl).lines().count(), 1);
    }
}
