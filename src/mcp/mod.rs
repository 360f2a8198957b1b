//! The protocol edge: rmcp's `ServerHandler` over the plain tool core. It lists what the
//! configuration enables, hands arguments to `tools::execute`, forwards a tool's progress and
//! log events as notifications, and maps results and errors onto MCP in one place.

// Logging is deprecated by SEP-2577, but 2025-11-25 clients still set levels with it.
#![expect(
    deprecated,
    reason = "logging/setLevel is still part of the 2025-11-25 protocol"
)]

use std::sync::{Arc, Mutex};
use std::time::Instant;

pub mod admission;
pub mod prompts;
mod resources;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, GetPromptRequestParams,
    GetPromptResponse, Implementation, ListPromptsResult, ListResourceTemplatesResult,
    ListResourcesResult, ListToolsResult, LoggingLevel, LoggingMessageNotificationParam,
    PaginatedRequestParams, ProgressNotificationParam, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, ResourceContents, ServerCapabilities, ServerConfig,
    SetLevelRequestParams, SubscriptionFilter, Tool, ToolAnnotations,
};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::LogLevel;
use crate::core::Core;
use crate::security::access::Identity;
use crate::security::audit::Caller;
use crate::tools::{self, CallContext, ToolEvent, ToolSpec};

const INSTRUCTIONS: &str = "ebpf-mcp gives structured, bounded access to this Linux host's \
eBPF: call `info` first to learn what the kernel allows (lockdown, BTF, which program and \
attach types and gadgets work; a summary, details by `sections`). Every result is JSON in structuredContent; errors carry a stable `code` \
and a `message` that says how to fix the call.";

/// One MCP server instance (one per HTTP session, one for stdio) over the shared core.
#[derive(Clone)]
pub struct McpServer {
    core: Arc<Core>,
    /// Who is at the other end when the transport knows it for the whole connection
    /// (stdio, unix socket); HTTP requests carry theirs (see [`McpServer::identity`]).
    identity: Option<Identity>,
    /// Level set by `logging/setLevel` in this session; `None`: send no log messages.
    log_level: Arc<Mutex<Option<LoggingLevel>>>,
    /// This session's number: the owner of what it starts in the background.
    session: u64,
    /// stdio or http.
    transport: &'static str,
    /// Cancelled when the last clone of this session's server is dropped (the session
    /// ended): stops its tools/list_changed watcher.
    ended: CancellationToken,
    _ended_guard: Arc<DropGuard>,
}

fn next_session() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl std::fmt::Debug for McpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpServer")
            .field("transport", &self.transport)
            .field("session", &self.session)
            .finish()
    }
}

impl McpServer {
    pub fn new(core: Arc<Core>, transport: &'static str, identity: Option<Identity>) -> Self {
        let ended = CancellationToken::new();
        Self {
            core,
            identity,
            log_level: Arc::new(Mutex::new(None)),
            session: next_session(),
            transport,
            _ended_guard: Arc::new(ended.clone().drop_guard()),
            ended,
        }
    }

    /// A server for a new session: the same tools, its own logging level.
    pub fn new_session(&self) -> Self {
        Self::new(
            Arc::clone(&self.core),
            self.transport,
            self.identity.clone(),
        )
    }

    /// Who is calling: the connection's identity (stdio, unix socket), or the one the HTTP
    /// layer attached to this request after checking its token. A request without one
    /// (which the HTTP layer never lets through) gets no tiers at all.
    fn identity(&self, context: &RequestContext<RoleServer>) -> Identity {
        if let Some(identity) = &self.identity {
            return identity.clone();
        }
        context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Identity>())
            .cloned()
            .unwrap_or_else(|| Identity {
                id: "unidentified".into(),
                tiers: Default::default(),
                authenticated: false,
            })
    }

    /// Who is calling, for the audit log and the tier check.
    fn caller(&self, identity: &Identity, context: &RequestContext<RoleServer>) -> Caller {
        let mut caller = Caller::new(self.transport, identity);
        caller.client = context.client_info().map(|c| c.name);
        caller
    }

    /// Who owns what a call starts in the background (trace sessions, deployments): an
    /// authenticated principal (a token, a local user); otherwise the 2025-11-25 session,
    /// or in the sessionless 2026-07-28 protocol the name the client gives.
    fn owner(&self, identity: &Identity, context: &RequestContext<RoleServer>) -> String {
        if identity.authenticated {
            return identity.id.clone();
        }
        match (context.meta.protocol_version(), context.meta.client_info()) {
            (Some(_), Some(client)) => format!("client:{}", client.name),
            _ => format!("session:{}", self.session),
        }
    }

    fn enabled_spec(&self, name: &str) -> Option<&'static ToolSpec> {
        tools::registry()
            .enabled(&self.core.config())
            .find(|t| t.name == name)
    }

    /// Runs a tool for a request, forwarding its events as notifications that all reach the
    /// client before the response does.
    async fn run_tool(
        &self,
        spec: &'static ToolSpec,
        args: Value,
        identity: &Identity,
        context: &RequestContext<RoleServer>,
    ) -> Result<Value, crate::EbpfError> {
        let threshold = context
            .meta
            .log_level()
            .or_else(|| *self.log_level.lock().unwrap_or_else(|p| p.into_inner()));
        let progress_token = context.meta.get_progress_token();
        let peer = context.peer.clone();
        let (tx, mut rx) = mpsc::unbounded_channel::<ToolEvent>();
        let (done_tx, mut done_rx) = oneshot::channel::<()>();
        let forwarder = tokio::spawn(async move {
            let send = |event: ToolEvent| {
                let peer = peer.clone();
                let token = progress_token.clone();
                async move {
                    match event {
                        ToolEvent::Log { level, message } => {
                            let level = mcp_level(level);
                            if threshold.is_some_and(|t| rank(level) >= rank(t)) {
                                let param =
                                    LoggingMessageNotificationParam::new(level, json!(message))
                                        .with_logger("ebpf-mcp");
                                let _ = peer.notify_logging_message(param).await;
                            }
                        }
                        ToolEvent::Progress {
                            progress,
                            total,
                            message,
                        } => {
                            if let Some(token) = token {
                                let mut p = ProgressNotificationParam::new(token, progress)
                                    .with_message(message);
                                if let Some(total) = total {
                                    p = p.with_total(total);
                                }
                                let _ = peer.notify_progress(p).await;
                            }
                        }
                    }
                }
            };
            loop {
                tokio::select! {
                    biased;
                    event = rx.recv() => match event {
                        Some(e) => send(e).await,
                        None => return,
                    },
                    _ = &mut done_rx => {
                        while let Ok(e) = rx.try_recv() {
                            send(e).await;
                        }
                        return;
                    }
                }
            }
        });
        // Cancelled by the client (notifications/cancelled, or rmcp ending the request), or
        // when the HTTP client goes away before its response is sent: a trace must not stay
        // attached for the rest of its duration for nobody.
        let cancel = context.ct.child_token();
        let _call_over = client_gone(context).map(|gone| {
            let cancel = cancel.clone();
            let over = CancellationToken::new();
            let call_over = over.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = gone.0.cancelled() => {
                        tracing::info!("the HTTP client went away mid-call: cancelling the call");
                        cancel.cancel();
                    }
                    () = over.cancelled() => {}
                }
            });
            call_over.drop_guard()
        });
        let ctx = CallContext::new(
            self.core.config(),
            cancel,
            self.owner(identity, context),
            move |event| {
                let _ = tx.send(event);
            },
        )
        .with_caller(self.caller(identity, context));
        let result = tools::execute(&self.core, spec, args, ctx).await;
        let _ = done_tx.send(());
        let _ = forwarder.await;
        result
    }
}

/// Waits for the next change of the tools clients may see; `false` when `stop` comes first
/// (or no change can come any more).
async fn tool_list_changed(
    changes: &mut tokio::sync::watch::Receiver<u64>,
    stop: impl Future<Output = ()>,
) -> bool {
    tokio::select! {
        () = stop => false,
        changed = changes.changed() => changed.is_ok(),
    }
}

/// Cancelled when an HTTP client goes away (its connection closes) before the response to
/// its request has been sent. The HTTP layer attaches one to each POST.
#[derive(Debug, Clone, Default)]
pub struct ClientGone(pub CancellationToken);

fn client_gone(context: &RequestContext<RoleServer>) -> Option<ClientGone> {
    context
        .extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<ClientGone>())
        .cloned()
}

/// Every tool of the registry as MCP lists it, built once.
fn mcp_tool(name: &str) -> Option<Tool> {
    static TOOLS: std::sync::LazyLock<Vec<Tool>> =
        std::sync::LazyLock::new(|| tools::registry().all().iter().map(to_mcp_tool).collect());
    TOOLS.iter().find(|t| t.name == name).cloned()
}

fn to_mcp_tool(spec: &'static ToolSpec) -> Tool {
    Tool::new(
        spec.name,
        spec.description,
        Arc::new(spec.listed_input_schema.clone()),
    )
    .with_title(spec.title)
    .with_annotations(annotations(spec.hints))
}

/// MCP annotations; `destructive` and `idempotent` mean something only for tools that
/// change state, so read-only tools leave them out (shorter `tools/list`).
fn annotations(hints: tools::Hints) -> ToolAnnotations {
    let a = ToolAnnotations::new()
        .read_only(hints.read_only)
        .open_world(false);
    if hints.read_only {
        a
    } else {
        a.destructive(hints.destructive)
            .idempotent(hints.idempotent)
    }
}

fn mcp_level(level: LogLevel) -> LoggingLevel {
    match level {
        LogLevel::Error => LoggingLevel::Error,
        LogLevel::Warn => LoggingLevel::Warning,
        LogLevel::Info => LoggingLevel::Info,
        LogLevel::Debug | LogLevel::Trace => LoggingLevel::Debug,
    }
}

fn rank(level: LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

fn resource_missing(uri: &str) -> McpError {
    McpError::resource_not_found(
        format!(
            "no resource `{uri}`; resources/list and resources/templates/list show what exists"
        ),
        Some(json!({"uri": uri})),
    )
}

/// The result of a finished call: structured content plus the same JSON as text.
fn to_call_result(result: Result<Value, crate::EbpfError>) -> CallToolResult {
    match result {
        Ok(value) => CallToolResult::structured(value),
        Err(err) => CallToolResult::structured_error(err.to_json()),
    }
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_logging()
            .enable_prompts()
            .enable_resources()
            .enable_tools()
            .enable_tool_list_changed()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(
                Implementation::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
                    .with_title("ebpf-mcp")
                    .with_description("Structured, safe access to Linux eBPF"),
            )
            .with_instructions(INSTRUCTIONS)
    }

    /// A 2025-11-25 session learns of reloads that change its tools through
    /// `notifications/tools/list_changed`, for as long as the session lasts.
    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        let mut changes = self.core.watch_tool_list();
        let ended = self.ended.clone();
        let peer = context.peer;
        tokio::spawn(async move {
            while tool_list_changed(&mut changes, ended.cancelled()).await {
                if peer.notify_tool_list_changed().await.is_err() {
                    break;
                }
            }
        });
    }

    /// 2026-07-28 clients ask for the same through `subscriptions/listen`; only tool-list
    /// changes are offered (prompts never change; resources change with every program loaded
    /// on the host, which `list_programs` answers better than a stream of notifications).
    fn accepted_subscription_filter(
        &self,
        _requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(SubscriptionFilter::builder().tools_list_changed().build())
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        let mut changes = self.core.watch_tool_list();
        while tool_list_changed(&mut changes, context.cancelled()).await {
            if let Err(e) = context.sink().notify_tool_list_changed().await {
                tracing::debug!(error = %e, "tools/list_changed not delivered; the listen stream ends");
                break;
            }
        }
        Ok(())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        // Only what this caller may call, of what the configuration enables now.
        let identity = self.identity(&context);
        let config = self.core.config();
        let tools = tools::registry()
            .enabled(&config)
            .filter(|t| identity.allows(t.tier))
            .filter_map(|t| mcp_tool(t.name))
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        mcp_tool(name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let name = request.name.as_ref();
        let Some(spec) = self.enabled_spec(name) else {
            let identity = self.identity(&context);
            tools::audit_unknown_tool(&self.core, name, &self.caller(&identity, &context));
            let offered: Vec<&str> = tools::registry()
                .all()
                .iter()
                .map(|t| t.name)
                .filter(|t| self.enabled_spec(t).is_some())
                .collect();
            let guess = crate::suggest::did_you_mean(name, offered);
            return Err(McpError::invalid_params(
                format!(
                    "unknown tool `{name}`{guess}; tools/list shows the tools this server offers"
                ),
                Some(json!({"tool": name})),
            ));
        };
        let args = request.arguments.map(Value::Object).unwrap_or(Value::Null);
        let identity = self.identity(&context);
        let started = Instant::now();
        let result = self.run_tool(spec, args, &identity, &context).await;
        let elapsed_ms = started.elapsed().as_millis();
        // One line per call: which request, who, what, how it ended, how long. Never the
        // arguments (the audit log has them, redacted).
        let identity = identity.id;
        let request_id = format!("{}:{}", self.session, context.id);
        match &result {
            Ok(_) => tracing::info!(
                request_id,
                identity,
                transport = self.transport,
                tool = name,
                outcome = "ok",
                elapsed_ms,
                "tool call"
            ),
            Err(e) => tracing::info!(
                request_id,
                identity,
                transport = self.transport,
                tool = name,
                outcome = "error",
                code = %e.code,
                elapsed_ms,
                "tool call"
            ),
        }
        Ok(to_call_result(result).into())
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        *self.log_level.lock().unwrap_or_else(|p| p.into_inner()) = Some(request.level);
        Ok(())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        Ok(ListPromptsResult::with_all_items(prompts::list()))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        prompts::get(&request.name, request.arguments).map(Into::into)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        Ok(ListResourcesResult::with_all_items(resources::list()))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(ListResourceTemplatesResult::with_all_items(
            resources::templates(),
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let uri = request.uri.as_str();
        let plan = resources::resolve(uri).ok_or_else(|| resource_missing(uri))?;
        let value = match plan {
            resources::Plan::Tool(tool, args) => {
                self.resource_tool(tool, args, &context, uri).await?
            }
            resources::Plan::Part(tool, args, fields) => {
                let whole = self.resource_tool(tool, args, &context, uri).await?;
                Value::Object(
                    fields
                        .iter()
                        .filter_map(|f| Some(((*f).to_owned(), whole.get(*f)?.clone())))
                        .collect(),
                )
            }
            resources::Plan::Map(id) => {
                let (list_args, dump_args) = resources::map_preview_args(id);
                let listed = self
                    .resource_tool("list_maps", list_args, &context, uri)
                    .await?;
                let mut out = json!({"map": listed["maps"][0]});
                match self
                    .resource_tool("map_dump", dump_args, &context, uri)
                    .await
                {
                    Ok(dump) => {
                        out["entries"] = dump["entries"].clone();
                        out["total_entries"] = dump["total_entries"].clone();
                    }
                    // Not every map can be read (ring buffers, queues): say why instead.
                    Err(e) => out["entries_unavailable"] = json!(e.message),
                }
                out
            }
        };
        let contents =
            ResourceContents::text(value.to_string(), uri).with_mime_type("application/json");
        Ok(ReadResourceResult::new(vec![contents]).into())
    }
}

impl McpServer {
    /// Runs a read-tier tool for a resource. An object that does not exist is the spec's
    /// not-found error; other failures are internal errors carrying the tool's error object.
    async fn resource_tool(
        &self,
        tool: &str,
        args: Value,
        context: &RequestContext<RoleServer>,
        uri: &str,
    ) -> Result<Value, McpError> {
        let spec = self.enabled_spec(tool).ok_or_else(|| {
            McpError::internal_error(format!("the {tool} tool is not registered"), None)
        })?;
        let identity = self.identity(context);
        self.run_tool(spec, args, &identity, context)
            .await
            .map_err(|e| {
                if e.code.ends_with("_NOT_FOUND") {
                    resource_missing(uri)
                } else {
                    McpError::internal_error(e.message.clone(), Some(e.to_json()))
                }
            })
    }
}
