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

/// Defines [`Code`] from one table: variant, wire name, category, meaning.
macro_rules! codes {
    ($($variant:ident = $name:literal, $category:ident, $meaning:literal;)*) => {
        /// Stable error codes. Clients match on their names; never rename one. Each knows
        /// its category, so a call site cannot pick another, and its meaning, which is the
        /// catalogue in docs/tools.md.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $(
                #[doc = $meaning]
                $variant,
            )*
        }

        impl Code {
            /// Every code, in catalogue order.
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            /// The name on the wire (`MAP_NOT_FOUND`).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $name,)*
                }
            }

            pub const fn category(self) -> ErrorCategory {
                match self {
                    $(Code::$variant => ErrorCategory::$category,)*
                }
            }

            /// What the code means, for the catalogue.
            pub const fn meaning(self) -> &'static str {
                match self {
                    $(Code::$variant => $meaning,)*
                }
            }
        }
    };
}

codes! {
    InvalidArguments = "INVALID_ARGUMENTS", Validation, "Arguments do not match the tool's input schema.";
    Cancelled = "CANCELLED", Validation, "The client cancelled the call (or it reached its time limit while it could still stop on its own).";
    ToolDisabled = "TOOL_DISABLED", Permission, "The tool's tier is disabled by configuration.";
    UserNotPermitted = "USER_NOT_PERMITTED", Permission, "The local user is not in `security.access_control.permitted_users` or a permitted group.";
    TierNotPermitted = "TIER_NOT_PERMITTED", Permission, "The caller's token or user mapping does not grant the tool's tier.";
    MissingCapability = "MISSING_CAPABILITY", Permission, "The server lacks CAP_BPF/CAP_PERFMON; the message says how to grant them.";
    RequestTimeout = "REQUEST_TIMEOUT", Resource, "The call ran longer than `server.request_timeout`.";
    ResultTooLarge = "RESULT_TOO_LARGE", Resource, "Even a cut-down result does not fit `server.max_result_bytes`.";
    FilesystemNotMounted = "FILESYSTEM_NOT_MOUNTED", Resource, "tracefs, bpffs or securityfs is missing and could not be mounted.";
    Internal = "INTERNAL", Internal, "A defect in the server; please report it.";
    ProgramNotFound = "PROGRAM_NOT_FOUND", Validation, "No BPF program has this id.";
    MapNotFound = "MAP_NOT_FOUND", Validation, "No BPF map has this id, name or pin.";
    AmbiguousMapName = "AMBIGUOUS_MAP_NAME", Validation, "Several maps have this name; use `map_id`.";
    LinkNotFound = "LINK_NOT_FOUND", Validation, "No BPF link has this id.";
    NotAMap = "NOT_A_MAP", Validation, "The pinned object is not a map.";
    PinPathNotOnBpffs = "PIN_PATH_NOT_ON_BPFFS", Validation, "No BPF object is pinned at `pin_path` on a bpffs mount (the same answer whether the path exists elsewhere or not).";
    MapNotDumpable = "MAP_NOT_DUMPABLE", Validation, "This map type has no entries to read (ring buffers, perf arrays...).";
    InvalidCursor = "INVALID_CURSOR", Validation, "The cursor is not one a previous page returned.";
    ProcessNotFound = "PROCESS_NOT_FOUND", Validation, "No process with the given `pid` is running.";
    TargetNotFound = "TARGET_NOT_FOUND", Validation, "The uprobe `target` binary or symbol does not exist.";
    SessionNotFound = "SESSION_NOT_FOUND", Validation, "No trace session with this id belongs to this client.";
    TooManyTraces = "TOO_MANY_TRACES", Resource, "`tools.trace.max_concurrent` traces are running.";
    TooManySessions = "TOO_MANY_SESSIONS", Resource, "`tools.trace.max_sessions` sessions are running.";
    HookNotFound = "HOOK_NOT_FOUND", Kernel, "This kernel lacks a tracepoint or hook the gadget needs.";
    VerifierRejected = "VERIFIER_REJECTED", Kernel, "The kernel verifier refused a program (a gadget's, or a deployed one: its log is in the error).";
    GadgetFailed = "GADGET_FAILED", Kernel, "The gadget could not be loaded, attached or read.";
    TracefsReadFailed = "TRACEFS_READ_FAILED", Kernel, "A tracefs file could not be read.";
    BpfSyscallFailed = "BPF_SYSCALL_FAILED", Kernel, "A bpf(2) call failed unexpectedly.";
    BpfEnableStats = "BPF_ENABLE_STATS", Kernel, "Kernel BPF run-time statistics could not be turned on.";
    InvalidElf = "INVALID_ELF", Validation, "The object is not a BPF ELF the validator can read (truncated, not ELF, not BPF).";
    NoPrograms = "NO_PROGRAMS", Validation, "The object holds no program (or none of the names in `programs`).";
    ObjectTooLarge = "OBJECT_TOO_LARGE", Validation, "The object is larger than `tools.deploy.max_object_bytes`.";
    TooManyInstructions = "TOO_MANY_INSTRUCTIONS", Validation, "A program is longer than `security.bytecode_validation.max_instructions`.";
    OpcodeNotAllowed = "OPCODE_NOT_ALLOWED", Validation, "A program uses an instruction class outside `security.bytecode_validation.allowed_opcodes`.";
    BlockedHelper = "BLOCKED_HELPER", Validation, "A program calls a helper in `security.bytecode_validation.blocked_helpers`.";
    BlockedSymbol = "BLOCKED_SYMBOL", Validation, "A program calls a kfunc or reads a ksym in `security.bytecode_validation.blocked_symbols`.";
    ProgramTypeNotAllowed = "PROGRAM_TYPE_NOT_ALLOWED", Validation, "A program's type is not in `tools.deploy.allowed_types` (fmod_ret, lsm, struct_ops, freplace and kprobe only when listed there).";
    AttachPointNotAllowed = "ATTACH_POINT_NOT_ALLOWED", Validation, "An attach target matches no glob of `tools.deploy.allowed_attach_points`.";
    TooManyPrograms = "TOO_MANY_PROGRAMS", Validation, "The object holds more programs than `resources.max_programs`.";
    TooManyFunctions = "TOO_MANY_FUNCTIONS", Validation, "The object holds more than 256 functions (the kernel's limit on subprograms).";
    InvalidCall = "INVALID_CALL", Validation, "A call or function reference names a program's entry; only subprograms may be called.";
    TooManyRelocations = "TOO_MANY_RELOCATIONS", Validation, "The object has more CO-RE relocations (or types in them) than linking is allowed to look up.";
    UnresolvedReference = "UNRESOLVED_REFERENCE", Validation, "A 64-bit load names a map, map value, BTF id or function by a number the object encodes itself (or an extern `__ksym`), not through a relocation the loader resolves against the object.";
    KfuncNotAllowed = "KFUNC_NOT_ALLOWED", Validation, "A program calls a kfunc; the loader resolves none, so every kfunc call is refused.";
    InvalidRelocation = "INVALID_RELOCATION", Validation, "A relocation targets an instruction that is not a 64-bit load or a call, or falls inside one.";
    InvalidInstruction = "INVALID_INSTRUCTION", Validation, "A program holds a call encoding the kernel does not define.";
    InvalidMapName = "INVALID_MAP_NAME", Validation, "A map's name is not made of letters, digits, `_` and `.` (maps are pinned by name).";
    MapPinningNotAllowed = "MAP_PINNING_NOT_ALLOWED", Validation, "A map asks to be pinned by name; deploy with `pin: true` instead.";
    TooManyMaps = "TOO_MANY_MAPS", Validation, "The object declares more maps than `resources.max_maps`.";
    MapsTooLarge = "MAPS_TOO_LARGE", Validation, "The object's maps would take more than `resources.max_memory_mb`.";
    DeploymentNotFound = "DEPLOYMENT_NOT_FOUND", Validation, "No deployment with this id belongs to this client.";
    UnknownTool = "UNKNOWN_TOOL", Validation, "No tool has this name (as the audit log records a call to one; clients get JSON-RPC error -32602).";
    ValidationFailed = "VALIDATION_FAILED", Validation, "The object was refused before loading; `context.violations` lists every reason (the code is the first violation's when there is one).";
    PathNotAllowed = "PATH_NOT_ALLOWED", Permission, "`path` is not a file under `tools.deploy.allowed_dirs` (links out of them are not followed).";
    SessionNotYours = "SESSION_NOT_YOURS", Permission, "An HTTP request named an MCP session opened by another identity (HTTP 403).";
    ResourceLimit = "RESOURCE_LIMIT", Resource, "Deployments would exceed `resources.max_*` or `resources.per_owner.*`; the error names the limit and current use.";
    AuditUnavailable = "AUDIT_UNAVAILABLE", Resource, "The audit log cannot be written, so deploy-tier calls are refused (fail closed).";
    TooManyConnections = "TOO_MANY_CONNECTIONS", Resource, "`server.max_connections` connections are open on the Unix socket; retry later.";
    LoadFailed = "LOAD_FAILED", Kernel, "The kernel refused to create the object's maps or load a program.";
    AttachFailed = "ATTACH_FAILED", Kernel, "The kernel refused to attach a program to its target.";
    PinFailed = "PIN_FAILED", Kernel, "A map could not be pinned under the server's bpffs directory.";
    ReleaseFailed = "RELEASE_FAILED", Kernel, "Detaching or unpinning part of a deployment failed; the error names what and why.";
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl PartialEq<Code> for String {
    fn eq(&self, other: &Code) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Code> for str {
    fn eq(&self, other: &Code) -> bool {
        self == other.as_str()
    }
}

impl ErrorCategory {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Validation => "validation",
            Self::Permission => "permission",
            Self::Resource => "resource",
            Self::Kernel => "kernel",
            Self::Internal => "internal",
        }
    }
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
    /// An error with `code` (which decides its category) and a message that says how to
    /// fix the call.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        let category = code.category();
        let recoverable = matches!(
            category,
            ErrorCategory::Validation | ErrorCategory::Resource
        );
        Self(Box::new(ErrorObject {
            category,
            code: code.as_str().to_owned(),
            message: message.into(),
            recoverable,
            context: Map::new(),
            timestamp: now_rfc3339(),
        }))
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
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
            serde_json::json!({"category": "internal", "code": Code::Internal.as_str(),
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
        let err = EbpfError::new(Code::InvalidArguments, "bad `x`: use an integer")
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
        assert!(!EbpfError::new(Code::LoadFailed, "m").recoverable);
        assert!(!EbpfError::new(Code::PathNotAllowed, "m").recoverable);
        assert!(EbpfError::new(Code::ResourceLimit, "m").recoverable);
    }

    #[test]
    fn codes_are_unique_screaming_snake_with_a_meaning() {
        let mut seen = std::collections::BTreeSet::new();
        for code in Code::ALL {
            let name = code.as_str();
            assert!(seen.insert(name), "{name} twice");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
                "{name}"
            );
            assert!(code.meaning().ends_with('.'), "{name}: {}", code.meaning());
            let e = EbpfError::new(*code, "m");
            assert_eq!(e.category, code.category());
            assert_eq!(e.code, *code);
        }
    }
}
