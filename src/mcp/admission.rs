//! What the HTTP edge asks of a JSON-RPC message before rmcp's session sees it: its method,
//! and whether the caller's tiers allow the tool a `tools/call` names. The transport renders
//! a refusal (HTTP 403); deciding it, auditing it and counting it happen here, with the same
//! check every other caller of a tool goes through (`tools::tier_refusal`).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use crate::config::Config;
use crate::core::Core;
use crate::error::EbpfError;
use crate::security::access::Identity;
use crate::security::audit::Caller;
use crate::tools;

/// The method of a JSON-RPC message and, for tools/call, the tool. The rest (a deploy object
/// can be megabytes) is skipped, not built into a tree. Anything unreadable peeks as empty:
/// rmcp answers it.
#[derive(Debug, Default, Deserialize)]
pub struct Peek<'a> {
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<PeekParams<'a>>,
}

#[derive(Debug, Default, Deserialize)]
struct PeekParams<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
}

impl<'a> Peek<'a> {
    pub fn of(body: &'a [u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_default()
    }

    pub fn method(&self) -> Option<&str> {
        self.method.as_deref()
    }

    fn tool(&self) -> Option<&str> {
        if self.method() != Some("tools/call") {
            return None;
        }
        self.params.as_ref()?.name.as_deref()
    }
}

/// A call refused before it reached a session: the request's id and the error to answer.
#[derive(Debug)]
pub struct Refusal {
    pub id: Value,
    pub error: EbpfError,
}

/// `Some` when `body` calls an enabled tool outside `identity`'s tiers. The refusal is
/// audited (with the call's arguments, redacted) and counted before it is returned. Unknown
/// or disabled tools pass: the session answers them as it answers everyone.
pub fn tier_refusal(
    core: &Core,
    config: &Config,
    identity: &Identity,
    peek: &Peek<'_>,
    body: &[u8],
) -> Option<Refusal> {
    let name = peek.tool()?;
    let spec = tools::registry().enabled(config).find(|t| t.name == name)?;
    if identity.allows(spec.tier) {
        return None;
    }
    // Refused: only now is the whole message read, for the audit line and the reply.
    let message: Value = serde_json::from_slice(body).unwrap_or_default();
    let mut caller = Caller::new("http", identity);
    caller.client = message
        .pointer("/params/_meta/io.modelcontextprotocol~1clientInfo/name")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let error = tools::tier_refusal(spec, &caller)?;
    let args = message
        .pointer("/params/arguments")
        .cloned()
        .unwrap_or(Value::Null);
    tools::audit_refused(core, spec, &caller, &args, &error);
    core.metrics.refused("tier");
    tracing::warn!(identity = %identity.id, tool = name, "HTTP request refused: tier");
    Some(Refusal {
        id: message.get("id").cloned().unwrap_or(Value::Null),
        error,
    })
}
