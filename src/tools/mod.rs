//! The tools: one module per tool, each a plain Rust action with typed parameters and output.
//! This module holds the registry (names, descriptions, tiers, schemas) and the one execution
//! path every caller uses — MCP and the command line alike: argument parsing, a blocking
//! thread, the request timeout, cancellation and the result size bound.

mod bound;
pub mod deploy;

pub mod functions;
pub mod info;
pub mod inventory;
pub mod maps;
pub mod process;
pub mod schema;
pub mod sessions;
pub mod trace;
pub mod tracepoints;

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use std::time::Duration;

use crate::config::Config;
use crate::config::Tier;
use crate::core::Core;
use crate::error::{Code, EbpfError};
use crate::security::audit::{self, Caller};

pub use crate::call::{CallContext, ToolEvent};
pub use bound::{bound_result, json_len};
use schema::Side;

/// How a tool affects its environment (MCP annotations).
#[derive(Debug, Clone, Copy)]
pub struct Hints {
    pub read_only: bool,
    pub destructive: bool,
    pub idempotent: bool,
}

impl Hints {
    pub const READ_ONLY: Hints = Hints {
        read_only: true,
        destructive: false,
        idempotent: true,
    };
}

/// A boolean configuration key and how to read it.
type Switch = (&'static str, fn(&Config) -> bool);

type RunFn = Box<dyn Fn(&Core, Value, &CallContext) -> Result<Value, EbpfError> + Send + Sync>;

/// A tool as the registry knows it.
pub struct ToolSpec {
    pub name: &'static str,
    pub title: &'static str,
    /// When an agent should use the tool, in a few sentences.
    pub description: &'static str,
    pub tier: Tier,
    pub hints: Hints,
    /// The field holding the result's rows, for `--output jsonl|table` (`None`: one object).
    pub list_field: Option<&'static str>,
    /// Clean JSON Schema of the arguments (see `schema`).
    pub input_schema: Map<String, Value>,
    /// The input schema as `tools/list` shows it: the same, or without parameter
    /// descriptions for a tool whose description points to another's (`with_brief_input`).
    pub listed_input_schema: Map<String, Value>,
    /// Clean JSON Schema of the result (result trimming, docs/tools.md, `tools --output
    /// json`). `tools/list` leaves it out: agents read the result itself, and the list's
    /// size is their context.
    pub output_schema: Map<String, Value>,
    run: RunFn,
    /// A per-tool switch beyond the tier (`tools.map_dump.enabled`), with its key.
    switch: Option<Switch>,
    /// A per-tool time limit beyond `server.request_timeout` (`tools.map_dump.timeout`).
    timeout: Option<fn(&Config) -> Duration>,
    /// Streams the rows of `list_field` instead of collecting them (command-line jsonl).
    stream: Option<StreamFn>,
    /// Changes what the server holds (deploy, undeploy, trace_start, trace_stop): audited
    /// before it acts.
    pub changes_state: bool,
}

/// Runs a tool writing each row of its list as JSON text to the sink (which returns false
/// to stop), and returns the rest of the result.
pub type StreamFn =
    fn(&Core, Value, &CallContext, &mut dyn FnMut(&str) -> bool) -> Result<Value, EbpfError>;

impl std::fmt::Debug for ToolSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolSpec")
            .field("name", &self.name)
            .finish()
    }
}

/// Static facts about a tool; `ToolSpec::new` adds the schemas and the typed runner.
#[derive(Debug)]
pub struct ToolMeta {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub tier: Tier,
    pub hints: Hints,
    pub list_field: Option<&'static str>,
}

impl ToolSpec {
    /// A tool from a typed function: its schemas come from `P` and `O`, and arguments are
    /// parsed into `P` with errors that name the offending argument.
    pub fn new<P, O>(
        meta: ToolMeta,
        run: fn(&Core, P, &CallContext) -> Result<O, EbpfError>,
    ) -> Self
    where
        P: DeserializeOwned + JsonSchema + 'static,
        O: Serialize + JsonSchema + 'static,
    {
        let name = meta.name;
        let input_schema = schema::clean(&schemars::schema_for!(P), Side::Input);
        let output_schema = schema::clean(&schemars::schema_for!(O), Side::Output);
        Self {
            name,
            title: meta.title,
            description: meta.description,
            tier: meta.tier,
            hints: meta.hints,
            list_field: meta.list_field,
            listed_input_schema: schema::listed_input(&input_schema),
            input_schema,
            output_schema,
            switch: None,
            timeout: None,
            stream: None,
            changes_state: false,
            run: Box::new(move |core, args, ctx| {
                let params = parse_args::<P>(name, args)?;
                let out = run(core, params, ctx)?;
                serde_json::to_value(out).map_err(|e| {
                    EbpfError::internal(format!("{name}: result not serializable: {e}"))
                })
            }),
        }
    }
}

impl ToolSpec {
    /// Lists the tool only when `key` (a boolean configuration key) is true.
    #[must_use]
    pub fn with_switch(mut self, key: &'static str, on: fn(&Config) -> bool) -> Self {
        self.switch = Some((key, on));
        self
    }

    /// Bounds the tool's calls by this limit instead of `server.request_timeout`.
    #[must_use]
    pub fn with_timeout(mut self, limit: fn(&Config) -> Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// Lists the parameters without their descriptions: for a tool whose own description
    /// says its parameters are another tool's (`trace_start` takes `trace`'s).
    #[must_use]
    pub fn with_brief_input(mut self) -> Self {
        self.listed_input_schema = schema::without_descriptions(&self.listed_input_schema);
        self
    }

    /// Marks the tool as changing what the server holds: its audit record is begun before
    /// it acts.
    #[must_use]
    pub fn with_state_change(mut self) -> Self {
        self.changes_state = true;
        self
    }

    /// Lets the command line stream the tool's rows (`--output jsonl`).
    #[must_use]
    pub fn with_stream(mut self, stream: StreamFn) -> Self {
        self.stream = Some(stream);
        self
    }

    pub fn can_stream(&self) -> bool {
        self.stream.is_some()
    }

    /// Whether this configuration lists and allows the tool: its tier and its own switch.
    pub fn enabled(&self, config: &Config) -> bool {
        self.tier.enabled(config) && self.switch.is_none_or(|(_, on)| on(config))
    }

    /// The time limit for one call: the tool's own when it has one (a trace lasts as long
    /// as asked), `server.request_timeout` otherwise.
    pub fn time_limit(&self, config: &Config) -> Duration {
        self.timeout
            .map_or(config.server.request_timeout.0, |f| f(config))
    }
}

pub(crate) fn parse_args<P: DeserializeOwned>(tool: &str, args: Value) -> Result<P, EbpfError> {
    let args = match args {
        Value::Null => Value::Object(Default::default()),
        Value::Object(_) => args,
        other => {
            return Err(EbpfError::new(
                Code::InvalidArguments,
                format!(
                    "arguments for `{tool}` must be a JSON object, not {}",
                    json_kind(&other)
                ),
            ));
        }
    };
    serde_path_to_error::deserialize(args).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        let at = if path == "." { String::new() } else { format!("argument `{path}`: ") };
        EbpfError::new(
            Code::InvalidArguments,
            format!("invalid arguments for `{tool}`: {at}{message}; the tool's inputSchema lists what it accepts"),
        )
        .with_context("tool", tool)
        .with_context("argument", path)
    })
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// How long a cancelled tool may take to return its partial result.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// Room left for the fields around a tool's list when its rows are fitted to
/// `server.max_result_bytes` (totals, cursors, hints).
const ENVELOPE_BYTES: usize = 4096;

/// How many bytes of rows a paged result may carry, so that the page itself fits
/// `server.max_result_bytes` and its cursor continues exactly after the last row shown.
pub fn row_budget(config: &Config) -> usize {
    usize::try_from(config.server.max_result_bytes.get())
        .unwrap_or(usize::MAX)
        .saturating_sub(ENVELOPE_BYTES)
        .max(1)
}

pub use crate::rows::fit_rows;

/// Every tool this build has, in the order they are listed.
#[derive(Debug)]
pub struct Registry {
    tools: Vec<ToolSpec>,
}

static REGISTRY: std::sync::LazyLock<Registry> = std::sync::LazyLock::new(|| Registry {
    tools: vec![
        info::spec(),
        inventory::programs_spec(),
        inventory::maps_spec(),
        inventory::links_spec(),
        maps::dump_spec(),
        maps::lookup_spec(),
        tracepoints::spec(),
        functions::spec(),
        process::spec(),
        trace::spec(),
        sessions::start_spec().with_state_change(),
        sessions::read_spec(),
        sessions::stop_spec().with_state_change(),
        deploy::deploy_spec().with_state_change(),
        deploy::undeploy_spec().with_state_change(),
        deploy::list_spec(),
    ],
});

/// The process-wide registry (tools are fixed at build time; tiers filter them at run time).
pub fn registry() -> &'static Registry {
    &REGISTRY
}

impl Registry {
    pub fn all(&self) -> &[ToolSpec] {
        &self.tools
    }

    /// Tools of the tiers (and switches) `config` enables, in registry order.
    pub fn enabled<'r, 'c>(
        &'r self,
        config: &'c Config,
    ) -> impl Iterator<Item = &'r ToolSpec> + use<'r, 'c> {
        self.tools.iter().filter(move |t| t.enabled(config))
    }

    pub fn get(&self, name: &str) -> Option<&ToolSpec> {
        self.tools.iter().find(|t| t.name == name)
    }
}

/// Runs `tool` with `args`: on a blocking thread (tools make syscalls), bounded by the
/// tool's time limit, stopped by `ctx.cancel`, its result cut to `server.max_result_bytes`.
pub async fn execute(
    core: &Arc<Core>,
    tool: &'static ToolSpec,
    args: Value,
    ctx: CallContext,
) -> Result<Value, EbpfError> {
    let params = audit::redact(&args);
    let cap = ctx.config.server.max_result_bytes.get();
    let mut value = audited(core, tool, ctx, params, move |core, ctx| {
        (tool.run)(core, args, ctx)
    })
    .await?;
    bound_result(
        &mut value,
        &tool.output_schema,
        usize::try_from(cap).unwrap_or(usize::MAX),
    )?;
    Ok(value)
}

/// Runs a streaming tool (see [`StreamFn`]): its rows go to `sink` as they are produced, so
/// their number is bounded by the tool's own limits, not by `server.max_result_bytes`.
/// Returns the rest of the result.
pub async fn execute_stream(
    core: &Arc<Core>,
    tool: &'static ToolSpec,
    args: Value,
    ctx: CallContext,
    mut sink: Box<dyn FnMut(&str) -> bool + Send>,
) -> Result<Value, EbpfError> {
    let Some(stream) = tool.stream else {
        return Err(EbpfError::internal(format!(
            "`{}` cannot stream its rows",
            tool.name
        )));
    };
    let params = audit::redact(&args);
    audited(core, tool, ctx, params, move |core, ctx| {
        stream(core, args, ctx, &mut *sink)
    })
    .await
}

/// [`guarded`], recorded in the audit log before the result goes back. A call that changes
/// state (deploy, undeploy, trace_start, trace_stop) first writes a `begin` record and does
/// not run when it cannot: a refusal never follows the act. Deploy-tier calls (and, with
/// security.audit_required_for_reads, all calls) fail closed when the log cannot be
/// written, and a deployment whose closing record cannot be written is undone.
async fn audited(
    core: &Arc<Core>,
    tool: &'static ToolSpec,
    ctx: CallContext,
    params: Value,
    work: impl FnOnce(&Core, &CallContext) -> Result<Value, EbpfError> + Send + 'static,
) -> Result<Value, EbpfError> {
    let enabled = core.audit.enabled();
    let required = enabled
        && (tool.tier == Tier::Deploy
            || tool.changes_state
            || ctx.config.security.audit_required_for_reads);
    let unavailable = |why: crate::security::audit::AuditError| {
        EbpfError::new(
            Code::AuditUnavailable,
            format!(
                "the audit log cannot be written ({why}); `{}` is refused until it can \
                 (security.audit_log; docs/operations.md says how to recover)",
                tool.name
            ),
        )
    };
    let caller = ctx.caller.clone();
    let owner = ctx.owner.clone();
    let call_id = format!(
        "c-{}-{:08x}",
        CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
        crate::resources::id_suffix()
    );
    if enabled && tool.changes_state {
        // Room for the closing record too, not only for this one.
        let begin = begin_record(tool, &caller, &owner, &params, &call_id);
        if let Err(why) = core.audit.check().and_then(|()| core.audit.record(&begin)) {
            core.metrics.audit_failures.inc();
            core.metrics.tool_call(tool.name, "AUDIT_UNAVAILABLE", 0.0);
            return Err(unavailable(why));
        }
    } else if required && let Err(why) = core.audit.check() {
        core.metrics.audit_failures.inc();
        core.metrics.tool_call(tool.name, "AUDIT_UNAVAILABLE", 0.0);
        return Err(unavailable(why));
    }
    let started = std::time::Instant::now();
    let result = guarded(core, tool, ctx, work).await;
    let elapsed = started.elapsed();
    core.metrics.tool_call(
        tool.name,
        match &result {
            Ok(_) => "ok",
            Err(e) => &e.code,
        },
        elapsed.as_secs_f64(),
    );
    let mut record = audit_record(tool, &caller, &owner, params, &result, elapsed);
    if tool.changes_state {
        record["call_id"] = call_id.clone().into();
        record["phase"] = "end".into();
    }
    let written = core.audit.record(&record);
    if written.is_err() {
        core.metrics.audit_failures.inc();
    }
    match written {
        Ok(()) => result,
        // A deployment runs only on the record: its programs' tags are in this line.
        Err(why)
            if required
                && result
                    .as_ref()
                    .is_ok_and(|v| v.get("deployment_id").and_then(Value::as_str).is_some()) =>
        {
            if let Some(id) = result
                .as_ref()
                .ok()
                .and_then(|v| v.get("deployment_id"))
                .and_then(Value::as_str)
            {
                crate::deploy::watchdog::rollback(&core.deploy_env(), id);
            }
            Err(unavailable(why))
        }
        // Done, and its `begin` line is on the record: answer with what happened.
        Err(why) if tool.changes_state => {
            tracing::error!(error = %why, tool = tool.name, call_id, "the closing audit record of a call was not written (its begin record was)");
            result
        }
        Err(why) if required => Err(unavailable(why)),
        Err(why) => {
            tracing::warn!(error = %why, tool = tool.name, "audit record not written");
            result
        }
    }
}

/// Calls so far, for audit call ids.
static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The record a state-changing call writes before it acts.
fn begin_record(
    tool: &ToolSpec,
    caller: &Caller,
    owner: &str,
    params: &Value,
    call_id: &str,
) -> Value {
    serde_json::json!({
        "timestamp": crate::time::rfc3339_millis(std::time::SystemTime::now()),
        "identity": caller.identity,
        "transport": caller.transport,
        "client": caller.client,
        "owner": owner,
        "tool": tool.name,
        "tier": tool.tier.as_str(),
        "parameters": params,
        "call_id": call_id,
        "phase": "begin",
    })
}

/// Records a call the MCP layer turned away before any tool ran: a tool that this server
/// does not offer to the caller (its tier disabled, or no such tool).
pub fn audit_unknown_tool(core: &Core, name: &str, caller: &Caller) {
    // A client chooses the name: keep the record small whatever it sends.
    let name: String = name.chars().take(128).collect();
    let name = name.as_str();
    let record = serde_json::json!({
        "timestamp": crate::time::rfc3339_millis(std::time::SystemTime::now()),
        "identity": caller.identity,
        "transport": caller.transport,
        "client": caller.client,
        "tool": name,
        "outcome": "error",
        "error_code": if registry().get(name).is_some() { Code::ToolDisabled.as_str() } else { Code::UnknownTool.as_str() },
    });
    if let Err(why) = core.audit.record_refusal(&format!("tool:{name}"), record) {
        core.metrics.audit_failures.inc();
        tracing::warn!(error = %why, tool = name, "audit record not written");
    }
}

/// The error for a caller whose identity does not grant `tool`'s tier, if it does not.
pub fn tier_refusal(tool: &ToolSpec, caller: &Caller) -> Option<EbpfError> {
    let tiers = caller.tiers.as_ref()?;
    if tiers.contains(&tool.tier) {
        return None;
    }
    let granted: Vec<&str> = tiers.iter().map(|t| t.as_str()).collect();
    Some(
        EbpfError::new(
            Code::TierNotPermitted,
            format!(
                "`{}` is a {} tier tool and {} may use only {}; ask the operator for a token \
                 or user mapping that grants the {} tier",
                tool.name,
                tool.tier.as_str(),
                caller.identity,
                if granted.is_empty() {
                    "none".into()
                } else {
                    granted.join(", ")
                },
                tool.tier.as_str()
            ),
        )
        .with_context("tier", tool.tier)
        .with_context("identity", &caller.identity),
    )
}

/// Records a call refused before it reached the tool (the HTTP layer's tier check).
pub fn audit_refused(
    core: &Core,
    tool: &ToolSpec,
    caller: &Caller,
    params: &Value,
    error: &EbpfError,
) {
    let record = audit_record(
        tool,
        caller,
        &caller.identity,
        audit::redact(params),
        &Err(error.clone()),
        Duration::ZERO,
    );
    core.metrics.tool_call(tool.name, &error.code, 0.0);
    if let Err(why) = core.audit.record(&record) {
        core.metrics.audit_failures.inc();
        tracing::warn!(error = %why, tool = tool.name, "audit record not written");
    }
}

fn audit_record(
    tool: &ToolSpec,
    caller: &Caller,
    owner: &str,
    params: Value,
    result: &Result<Value, EbpfError>,
    elapsed: Duration,
) -> Value {
    let mut r = Map::new();
    r.insert(
        "timestamp".into(),
        crate::time::rfc3339_millis(std::time::SystemTime::now()).into(),
    );
    r.insert("identity".into(), caller.identity.clone().into());
    r.insert("transport".into(), caller.transport.into());
    r.insert(
        "client".into(),
        caller.client.clone().map_or(Value::Null, Value::from),
    );
    r.insert("owner".into(), owner.into());
    r.insert("tool".into(), tool.name.into());
    r.insert("tier".into(), tool.tier.as_str().into());
    r.insert("parameters".into(), params);
    match result {
        Ok(value) => {
            r.insert("outcome".into(), "ok".into());
            if tool.tier == Tier::Deploy {
                for key in ["verdict", "deployment_id", "object_sha256"] {
                    if let Some(v) = value.get(key) {
                        r.insert(key.into(), v.clone());
                    }
                }
                if let Some(programs) = value.get("programs").and_then(Value::as_array) {
                    let tags: Vec<Value> = programs
                        .iter()
                        .filter_map(|p| p.get("tag").cloned())
                        .collect();
                    r.insert("program_tags".into(), Value::Array(tags));
                    if let Some(helpers) = program_helpers(programs) {
                        r.insert("program_helpers".into(), helpers);
                    }
                }
            }
        }
        Err(e) => {
            r.insert("outcome".into(), "error".into());
            r.insert("error_code".into(), e.code.clone().into());
            if let Some(v) = e.context.get("violations") {
                let codes: Vec<Value> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.get("code").cloned())
                    .collect();
                r.insert("verdict".into(), "refused".into());
                r.insert("violations".into(), Value::Array(codes));
            }
            if let Some(helpers) = e
                .context
                .get("programs")
                .and_then(Value::as_array)
                .and_then(|p| program_helpers(p))
            {
                r.insert("program_helpers".into(), helpers);
            }
        }
    }
    r.insert(
        "duration_ms".into(),
        u64::try_from(elapsed.as_millis())
            .unwrap_or(u64::MAX)
            .into(),
    );
    Value::Object(r)
}

/// `{program: [helpers]}` of a deploy result's or refusal's programs: what the code may
/// call, callbacks included, on the record whatever the verdict.
fn program_helpers(programs: &[Value]) -> Option<Value> {
    let map: Map<String, Value> = programs
        .iter()
        .filter_map(|p| {
            Some((
                p.get("name")?.as_str()?.to_owned(),
                p.get("helpers")?.clone(),
            ))
        })
        .collect();
    (!map.is_empty()).then_some(Value::Object(map))
}

/// The common envelope of a call: tier and switch checks, a blocking thread, the time
/// limit and cancellation.
async fn guarded(
    core: &Arc<Core>,
    tool: &'static ToolSpec,
    ctx: CallContext,
    work: impl FnOnce(&Core, &CallContext) -> Result<Value, EbpfError> + Send + 'static,
) -> Result<Value, EbpfError> {
    let config = Arc::clone(&ctx.config);
    if let Some(refusal) = tier_refusal(tool, &ctx.caller) {
        return Err(refusal);
    }
    if !tool.enabled(&config) {
        let key = match tool.switch {
            Some((key, _)) if tool.tier.enabled(&config) => key,
            _ => tool.tier.config_key().unwrap_or("tools"),
        };
        return Err(EbpfError::new(
            Code::ToolDisabled,
            format!(
                "`{}` ({} tier) is disabled by this server's configuration; set `{key}: true` \
                 to enable it",
                tool.name,
                tool.tier.as_str()
            ),
        )
        .with_context("tier", tool.tier));
    }
    let timeout = tool.time_limit(&config);
    drop(config);
    let cancel = ctx.cancel.clone();
    let mut worker = {
        let core = Arc::clone(core);
        tokio::task::spawn_blocking(move || {
            let out = work(&core, &ctx);
            // What the call allocated and freed (a trace's events, a BTF parse) goes back
            // to the kernel now rather than staying in the allocator's arenas.
            crate::ebpf::sys::trim_heap();
            out
        })
    };
    tokio::select! {
        joined = &mut worker => joined.unwrap_or_else(|e| {
            Err(EbpfError::internal(format!("`{}` failed unexpectedly: {e}", tool.name)))
        }),
        () = tokio::time::sleep(timeout) => {
            cancel.cancel();
            Err(EbpfError::new(
                Code::RequestTimeout,
                format!(
                    "`{}` did not finish within its time limit ({}: server.request_timeout, or \
                     the tool's own timeout if shorter); narrow the call or raise the limit",
                    tool.name,
                    humantime::format_duration(timeout)
                ),
            )
            .with_context("timeout_ms", timeout.as_millis()))
        }
        () = cancel.cancelled() => {
            // Tools that can stop early return what they have (a trace's events so far);
            // give them a moment to do so.
            match tokio::time::timeout(CANCEL_GRACE, worker).await {
                Ok(Ok(result)) => result,
                _ => Err(EbpfError::new(
                    Code::Cancelled,
                    format!("`{}` was cancelled by the client", tool.name),
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_an_object_or_nothing() {
        let none: crate::tools::info::InfoParams = parse_args("info", Value::Null).unwrap();
        assert!(!none.refresh);
        for (args, kind) in [
            (serde_json::json!([1]), "an array"),
            (serde_json::json!("x"), "a string"),
            (serde_json::json!(3), "a number"),
            (serde_json::json!(true), "a boolean"),
        ] {
            let e = parse_args::<crate::tools::info::InfoParams>("info", args).unwrap_err();
            assert!(e.message.contains(&format!("not {kind}")), "{}", e.message);
        }
        let e = parse_args::<crate::tools::info::InfoParams>(
            "info",
            serde_json::json!({"refresh": "yes"}),
        )
        .unwrap_err();
        assert!(e.message.contains("argument `refresh`"), "{}", e.message);
        assert_eq!(json_kind(&Value::Null), "null");
        assert_eq!(json_kind(&serde_json::json!({})), "an object");
    }

    #[test]
    fn the_registry_names_every_tool_once() {
        let names: Vec<&str> = registry().all().iter().map(|t| t.name).collect();
        let unique: std::collections::BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(names.len(), unique.len(), "{names:?}");
        let info = registry().get("info").unwrap();
        assert!(format!("{info:?}").contains("info"));
        assert!(registry().get("nope").is_none());
        let config = Config::default();
        assert!(info.enabled(&config));
        assert!(!registry().get("deploy").unwrap().enabled(&config));
        assert_eq!(info.time_limit(&config), config.server.request_timeout.0);
    }
}
