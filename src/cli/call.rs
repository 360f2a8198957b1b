//! `call`: one tool in-process, as the invoking user, its result as JSON, JSON lines or a
//! table (`table`).

use std::io::{self, IsTerminal, Read, Write};
use std::sync::Arc;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::args::OutputFormat;
use super::table::table_view;
use super::{EXIT_TOOL_ERROR, EXIT_USAGE, write_stdout};
use crate::config::LogLevel;
use crate::core::Core;
use crate::error::{Code, EbpfError};
use crate::security::access;
use crate::security::audit::Caller;
use crate::tools::{self, CallContext, ToolEvent};

pub(super) fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

pub(super) async fn call_command(
    core: Arc<Core>,
    tool: &str,
    args: &str,
    output: OutputFormat,
) -> u8 {
    let Some(spec) = tools::registry().get(tool) else {
        let known: Vec<&str> = tools::registry().all().iter().map(|t| t.name).collect();
        eprintln!(
            "ebpf-mcp: unknown tool `{tool}`{}; known tools: {}",
            crate::suggest::did_you_mean(tool, known.iter().copied()),
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
    let progress = Arc::new(Progress::new());
    let shown = Arc::clone(&progress);
    let ctx = CallContext::new(
        core.config(),
        cancel.clone(),
        format!("cli:{}", std::process::id()),
        move |event| match event {
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
                shown.show(&message);
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
            .map(|mut summary| {
                // The last line: what the rows add up to (totals, drops, why it stopped).
                if let (Value::Object(m), Some(field)) = (&mut summary, spec.list_field) {
                    m.remove(field);
                }
                write_stdout(&format!("{}\n", serde_json::json!({ "summary": summary })));
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
        Err(EbpfError::new(Code::UserNotPermitted, refused.0))
    } else {
        tools::execute(&core, spec, args, ctx).await
    };
    interrupt.abort();
    progress.clear();
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

pub(super) fn render(value: &Value, list_field: Option<&str>, output: OutputFormat) -> String {
    let rows = list_field
        .and_then(|f| value.get(f))
        .and_then(Value::as_array);
    match output {
        OutputFormat::Json => format!("{}\n", pretty(value)),
        OutputFormat::Jsonl => match (rows, list_field) {
            (Some(rows), Some(field)) => {
                let mut out: String = rows.iter().map(|r| format!("{r}\n")).collect();
                // The last line: the rest of the result (totals, drops, why it stopped).
                let mut summary = value.clone();
                if let Value::Object(m) = &mut summary {
                    m.remove(field);
                }
                out.push_str(&format!("{}\n", serde_json::json!({ "summary": summary })));
                out
            }
            _ => format!("{value}\n"),
        },
        OutputFormat::Table => table_view(value, list_field),
    }
}

/// Progress of a long call on stderr, when stderr is a terminal: one line, rewritten in
/// place, from the first report after a second; cleared when the call ends.
struct Progress {
    started: std::time::Instant,
    on: bool,
    drawn: std::sync::atomic::AtomicBool,
}

impl Progress {
    fn new() -> Self {
        Self {
            started: std::time::Instant::now(),
            on: io::stderr().is_terminal(),
            drawn: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn show(&self, message: &str) {
        let elapsed = self.started.elapsed();
        if !self.on || elapsed < std::time::Duration::from_secs(1) {
            return;
        }
        let line: String = format!("ebpf-mcp: {message} ({}s)", elapsed.as_secs())
            .chars()
            .take(100)
            .collect();
        eprint!("\r\x1b[2K{line}");
        self.drawn.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn clear(&self) {
        if self.drawn.swap(false, std::sync::atomic::Ordering::Relaxed) {
            eprint!("\r\x1b[2K");
        }
    }
}
