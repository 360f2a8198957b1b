//! The one error type every tool returns (the seed's `EBPFError`). Module errors convert into
//! it at their edge; `mcp/` turns it into an `isError` result and the CLI into exit code 1.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What kind of failure this is; decides whether retrying the same call can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ErrorCategory {
    /// The call's arguments are wrong; the message says how to fix them.
    Validation,
    /// The caller or the server process lacks a right (capability, tier, file mode).
    Permission,
    /// A limit was reached or something the call needs is busy or missing.
    Resource,
    /// The kernel refused or failed an operation.
    Kernel,
    /// A defect in the server.
    Internal,
}

/// Stable error codes. Clients match on these; never rename one.
pub mod codes {
    /// Arguments do not match the tool's input schema.
    pub const INVALID_ARGUMENTS: &str = "INVALID_ARGUMENTS";
    /// The tool exists but its tier is disabled by configuration.
    pub const TOOL_DISABLED: &str = "TOOL_DISABLED";
    /// The local user is not in security.access_control.permitted_users/groups.
    pub const USER_NOT_PERMITTED: &str = "USER_NOT_PERMITTED";
    /// The caller's identity does not grant the tool's tier.
    pub const TIER_NOT_PERMITTED: &str = "TIER_NOT_PERMITTED";
    /// The process lacks a Linux capability the operation needs.
    pub const MISSING_CAPABILITY: &str = "MISSING_CAPABILITY";
    /// The call ran longer than `server.request_timeout`.
    pub const REQUEST_TIMEOUT: &str = "REQUEST_TIMEOUT";
    /// The client cancelled the call.
    pub const CANCELLED: &str = "CANCELLED";
    /// Even a cut-down result does not fit `server.max_result_bytes`.
    pub const RESULT_TOO_LARGE: &str = "RESULT_TOO_LARGE";
    /// A pseudo filesystem the server needs (tracefs, bpffs, securityfs) is not mounted.
    pub const FILESYSTEM_NOT_MOUNTED: &str = "FILESYSTEM_NOT_MOUNTED";
    /// The server failed in a way that is a defect.
    pub const INTERNAL: &str = "INTERNAL";

    /// Every code with its category and meaning, for docs/tools.md.
    pub const CATALOGUE: &[(&str, &str, &str)] = &[
        (
            INVALID_ARGUMENTS,
            "validation",
            "Arguments do not match the tool's input schema.",
        ),
        (CANCELLED, "validation", "The client cancelled the call."),
        (
            TOOL_DISABLED,
            "permission",
            "The tool's tier is disabled by configuration.",
        ),
        (
            USER_NOT_PERMITTED,
            "permission",
            "The local user is not in `security.access_control.permitted_users` or a permitted group.",
        ),
        (
            TIER_NOT_PERMITTED,
            "permission",
            "The caller's token or user mapping does not grant the tool's tier.",
        ),
        (
            MISSING_CAPABILITY,
            "permission",
            "The server lacks CAP_BPF/CAP_PERFMON; the message says how to grant them.",
        ),
        (
            REQUEST_TIMEOUT,
            "resource",
            "The call ran longer than `server.request_timeout`.",
        ),
        (
            RESULT_TOO_LARGE,
            "resource",
            "Even a cut-down result does not fit `server.max_result_bytes`.",
        ),
        (
            FILESYSTEM_NOT_MOUNTED,
            "resource",
            "tracefs, bpffs or securityfs is missing and could not be mounted.",
        ),
        (
            INTERNAL,
            "internal",
            "A defect in the server; please report it.",
        ),
        (
            "PROGRAM_NOT_FOUND",
            "validation",
            "No BPF program has this id.",
        ),
        (
            "MAP_NOT_FOUND",
            "validation",
            "No BPF map has this id, name or pin.",
        ),
        (
            "AMBIGUOUS_MAP_NAME",
            "validation",
            "Several maps have this name; use `map_id`.",
        ),
        ("LINK_NOT_FOUND", "validation", "No BPF link has this id."),
        ("NOT_A_MAP", "validation", "The pinned object is not a map."),
        (
            "PIN_PATH_NOT_ON_BPFFS",
            "validation",
            "No BPF object is pinned at `pin_path` on a bpffs mount (the same answer whether the path exists elsewhere or not).",
        ),
        (
            "MAP_NOT_DUMPABLE",
            "validation",
            "This map type has no entries to read (ring buffers, perf arrays...).",
        ),
        (
            "INVALID_CURSOR",
            "validation",
            "The cursor is not one a previous page returned.",
        ),
        (
            "PROCESS_NOT_FOUND",
            "validation",
            "No process with the given `pid` is running.",
        ),
        (
            "TARGET_NOT_FOUND",
            "validation",
            "The uprobe `target` binary or symbol does not exist.",
        ),
        (
            "SESSION_NOT_FOUND",
            "validation",
            "No trace session with this id belongs to this client.",
        ),
        (
            "TOO_MANY_TRACES",
            "resource",
            "`tools.trace.max_concurrent` traces are running.",
        ),
        (
            "TOO_MANY_SESSIONS",
            "resource",
            "`tools.trace.max_sessions` sessions are running.",
        ),
        (
            "HOOK_NOT_FOUND",
            "kernel",
            "This kernel lacks a tracepoint or hook the gadget needs.",
        ),
        (
            "VERIFIER_REJECTED",
            "kernel",
            "The kernel verifier refused a program (a gadget's, or a deployed one: its log is in the error).",
        ),
        (
            "GADGET_FAILED",
            "kernel",
            "The gadget could not be loaded, attached or read.",
        ),
        (
            "TRACEFS_READ_FAILED",
            "kernel",
            "A tracefs file could not be read.",
        ),
        (
            "BPF_SYSCALL_FAILED",
            "kernel",
            "A bpf(2) call failed unexpectedly.",
        ),
        (
            "BPF_ENABLE_STATS",
            "kernel",
            "Kernel BPF run-time statistics could not be turned on.",
        ),
        (
            "INVALID_ELF",
            "validation",
            "The object is not a BPF ELF the validator can read (truncated, not ELF, not BPF).",
        ),
        (
            "NO_PROGRAMS",
            "validation",
            "The object holds no program (or none of the names in `programs`).",
        ),
        (
            "OBJECT_TOO_LARGE",
            "validation",
            "The object is larger than `tools.deploy.max_object_bytes`.",
        ),
        (
            "TOO_MANY_INSTRUCTIONS",
            "validation",
            "A program is longer than `security.bytecode_validation.max_instructions`.",
        ),
        (
            "OPCODE_NOT_ALLOWED",
            "validation",
            "A program uses an instruction class outside `security.bytecode_validation.allowed_opcodes`.",
        ),
        (
            "BLOCKED_HELPER",
            "validation",
            "A program calls a helper in `security.bytecode_validation.blocked_helpers`.",
        ),
        (
            "BLOCKED_SYMBOL",
            "validation",
            "A program calls a kfunc or reads a ksym in `security.bytecode_validation.blocked_symbols`.",
        ),
        (
            "PROGRAM_TYPE_NOT_ALLOWED",
            "validation",
            "A program's type is not in `tools.deploy.allowed_types` (fmod_ret, lsm, struct_ops, freplace and kprobe only when listed there).",
        ),
        (
            "ATTACH_POINT_NOT_ALLOWED",
            "validation",
            "An attach target matches no glob of `tools.deploy.allowed_attach_points`.",
        ),
        (
            "TOO_MANY_PROGRAMS",
            "validation",
            "The object holds more programs than `resources.max_programs`.",
        ),
        (
            "TOO_MANY_FUNCTIONS",
            "validation",
            "The object holds more than 256 functions (the kernel's limit on subprograms).",
        ),
        (
            "INVALID_CALL",
            "validation",
            "A call or function reference names a program's entry; only subprograms may be called.",
        ),
        (
            "TOO_MANY_RELOCATIONS",
            "validation",
            "The object has more CO-RE relocations (or types in them) than linking is allowed to look up.",
        ),
        (
            "UNRESOLVED_REFERENCE",
            "validation",
            "A 64-bit load names a map, map value, BTF id or function by a number the object encodes itself (or an extern `__ksym`), not through a relocation the loader resolves against the object.",
        ),
        (
            "KFUNC_NOT_ALLOWED",
            "validation",
            "A program calls a kfunc; the loader resolves none, so every kfunc call is refused.",
        ),
        (
            "INVALID_RELOCATION",
            "validation",
            "A relocation targets an instruction that is not a 64-bit load or a call, or falls inside one.",
        ),
        (
            "INVALID_INSTRUCTION",
            "validation",
            "A program holds a call encoding the kernel does not define.",
        ),
        (
            "INVALID_MAP_NAME",
            "validation",
            "A map's name is not made of letters, digits, `_` and `.` (maps are pinned by name).",
        ),
        (
            "MAP_PINNING_NOT_ALLOWED",
            "validation",
            "A map asks to be pinned by name; deploy with `pin: true` instead.",
        ),
        (
            "TOO_MANY_MAPS",
            "validation",
            "The object declares more maps than `resources.max_maps`.",
        ),
        (
            "MAPS_TOO_LARGE",
            "validation",
            "The object's maps would take more than `resources.max_memory_mb`.",
        ),
        (
            "ATTACH_UNSUPPORTED",
            "validation",
            "The server cannot attach this program type; `verify_only` still checks it.",
        ),
        (
            "DEPLOYMENT_NOT_FOUND",
            "validation",
            "No deployment with this id belongs to this client.",
        ),
        (
            "PATH_NOT_ALLOWED",
            "permission",
            "`path` is not a file under `tools.deploy.allowed_dirs` (links out of them are not followed).",
        ),
        (
            "RESOURCE_LIMIT",
            "resource",
            "Deployments would exceed `resources.max_*` or `resources.per_owner.*`; the error names the limit and current use.",
        ),
        (
            "AUDIT_UNAVAILABLE",
            "resource",
            "The audit log cannot be written, so deploy-tier calls are refused (fail closed).",
        ),
        (
            "LOAD_FAILED",
            "kernel",
            "The kernel refused to create the object's maps or load a program.",
        ),
        (
            "ATTACH_FAILED",
            "kernel",
            "The kernel refused to attach a program to its target.",
        ),
        (
            "PIN_FAILED",
            "kernel",
            "A map could not be pinned under the server's bpffs directory.",
        ),
        (
            "RELEASE_FAILED",
            "kernel",
            "Detaching or unpinning part of a deployment failed; the error names what and why.",
        ),
    ];
}

/// The error every failed tool call returns, in `structuredContent` and as text. Boxed so
/// that `Result<_, EbpfError>` stays one pointer wide; fields read through `Deref`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct EbpfError(Box<ErrorObject>);

/// The fields of [`EbpfError`] (the seed's `EBPFError`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorObject {
    /// Kind of failure.
    pub category: ErrorCategory,
    /// Stable SCREAMING_SNAKE code to match on.
    pub code: String,
    /// What failed and how to fix the call.
    pub message: String,
    /// Whether the same call may succeed later or after the fix the message names.
    pub recoverable: bool,
    /// Facts about the failure: the argument, limit, syscall, path or errno involved.
    pub context: Map<String, Value>,
    /// When the error happened (RFC 3339, UTC).
    pub timestamp: String,
}

impl EbpfError {
    /// An error of `category` with `code` and a message that says how to fix the call.
    pub fn new(category: ErrorCategory, code: &str, message: impl Into<String>) -> Self {
        let recoverable = matches!(
            category,
            ErrorCategory::Validation | ErrorCategory::Resource
        );
        Self(Box::new(ErrorObject {
            category,
            code: code.to_owned(),
            message: message.into(),
            recoverable,
            context: Map::new(),
            timestamp: now_rfc3339(),
        }))
    }

    pub fn validation(code: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorCategory::Validation, code, message)
    }

    pub fn permission(code: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorCategory::Permission, code, message)
    }

    pub fn resource(code: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorCategory::Resource, code, message)
    }

    pub fn kernel(code: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorCategory::Kernel, code, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCategory::Internal, codes::INTERNAL, message)
    }

    /// Adds one fact to `context`. Values that cannot be serialized are recorded as their
    /// serialization error rather than dropped, so the context never silently lies.
    #[must_use]
    pub fn with_context(mut self, key: &str, value: impl Serialize) -> Self {
        let value = serde_json::to_value(value)
            .unwrap_or_else(|e| Value::String(format!("<unserializable: {e}>")));
        self.context.insert(key.to_owned(), value);
        self
    }

    #[must_use]
    pub fn recoverable(mut self, recoverable: bool) -> Self {
        self.recoverable = recoverable;
        self
    }

    /// The error as a JSON object (what `structuredContent` carries).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_else(|e| {
            serde_json::json!({"category": "internal", "code": codes::INTERNAL,
                "message": format!("error could not be serialized: {e}")})
        })
    }
}

impl std::ops::Deref for EbpfError {
    type Target = ErrorObject;
    fn deref(&self) -> &ErrorObject {
        &self.0
    }
}

impl std::ops::DerefMut for EbpfError {
    fn deref_mut(&mut self) -> &mut ErrorObject {
        &mut self.0
    }
}

impl fmt::Display for EbpfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for EbpfError {}

/// The current time as RFC 3339 with milliseconds, UTC.
pub fn now_rfc3339() -> String {
    crate::time::rfc3339_millis(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_the_seed_fields() {
        let err = EbpfError::validation(codes::INVALID_ARGUMENTS, "bad `x`: use an integer")
            .with_context("argument", "x");
        let v = err.to_json();
        assert_eq!(v["category"], "validation");
        assert_eq!(v["code"], "INVALID_ARGUMENTS");
        assert_eq!(v["recoverable"], true);
        assert_eq!(v["context"]["argument"], "x");
        let ts = v["timestamp"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(ts).is_ok(), "{ts}");
    }

    #[test]
    fn kernel_and_permission_errors_are_not_recoverable_by_default() {
        assert!(!EbpfError::kernel("X", "m").recoverable);
        assert!(!EbpfError::permission("X", "m").recoverable);
        assert!(EbpfError::resource("X", "m").recoverable);
    }
}
