//! MCP prompts: short scripts that walk an agent through a real investigation with this
//! server's tools. Arguments arrive as strings, whatever their meaning.

use rmcp::ErrorData as McpError;
use rmcp::model::{GetPromptResult, JsonObject, Prompt, PromptArgument, PromptMessage, Role};
use serde_json::{Value, json};

struct PromptDef {
    name: &'static str,
    title: &'static str,
    description: &'static str,
    /// (name, description, required)
    arguments: &'static [(&'static str, &'static str, bool)],
    render: fn(&JsonObject) -> String,
}

const PROMPTS: &[PromptDef] = &[
    PromptDef {
        name: "ebpf_host_report",
        title: "eBPF host report",
        description: "Report what eBPF can and cannot do on this host, and what to fix",
        arguments: &[],
        render: |_| {
            "Call the `info` tool of the ebpf-mcp server, then write a short report for an SRE:\n\
             1. Kernel: `kernel.release`, `kernel.arch`, and `kernel.lockdown.mode` with what \
             it blocks (`kernel.lockdown.detail`).\n\
             2. Type information: whether `kernel.btf.vmlinux` is present (needed for CO-RE and \
             tp_btf/fentry programs).\n\
             3. Attach kinds: list those in `features.attach` whose status is `available`, then \
             those that are not, each with the kernel's reason quoted from `reason`.\n\
             4. Helpers in `features.helpers` that are unavailable, with their reasons.\n\
             5. The server: enabled tiers (`server.tiers`) and limits (`server.limits`).\n\
             6. Every entry of `problems`, with its `message` (it says how to fix it).\n\
             Report only what `info` returned; do not infer support it does not state."
                .to_owned()
        },
    },
    PromptDef {
        name: "plan_observation",
        title: "Plan an eBPF observation",
        description: "Choose the eBPF mechanism that can answer a question on this host, given what its kernel allows",
        arguments: &[(
            "question",
            "What you want to find out, e.g. \"which process keeps opening /etc/passwd\"",
            true,
        )],
        render: |args| {
            let question = args
                .get("question")
                .and_then(Value::as_str)
                .unwrap_or_default();
            format!(
                "Goal: {question}\n\n\
                 Plan how to observe this with the ebpf-mcp server:\n\
                 1. Call `info`. Note `kernel.lockdown.mode` and which entries of \
                 `features.attach` have status `available`; read the `reason` of the others.\n\
                 2. Choose the least intrusive mechanism that can answer the goal and is \
                 available here: tracepoints first (stable ABI), then raw_tp or tp_btf, uprobes \
                 for user-space functions, perf_event for CPU sampling; kprobe, fentry or lsm \
                 only if `info` reports them available.\n\
                 3. If `problems` is not empty, say which entries block the goal and quote \
                 their fix.\n\
                 4. Answer with the mechanism and the exact hook (for example the tracepoint \
                 `syscalls:sys_enter_openat`), why it is available on this host, and what it \
                 cannot see. Never assume a capability that `info` does not report as available."
            )
        },
    },
];

pub fn list() -> Vec<Prompt> {
    PROMPTS
        .iter()
        .map(|p| {
            let args = p
                .arguments
                .iter()
                .map(|(name, description, required)| {
                    PromptArgument::new(*name)
                        .with_description(*description)
                        .with_required(*required)
                })
                .collect::<Vec<_>>();
            Prompt::new(
                p.name,
                Some(p.description),
                (!args.is_empty()).then_some(args),
            )
            .with_title(p.title)
        })
        .collect()
}

pub fn get(name: &str, arguments: Option<JsonObject>) -> Result<GetPromptResult, McpError> {
    let Some(def) = PROMPTS.iter().find(|p| p.name == name) else {
        return Err(McpError::invalid_params(
            format!("unknown prompt `{name}`; prompts/list shows the prompts this server offers"),
            Some(json!({"prompt": name})),
        ));
    };
    let args = arguments.unwrap_or_default();
    for (arg, _, required) in def.arguments {
        let present = args
            .get(*arg)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.trim().is_empty());
        if *required && !present {
            return Err(McpError::invalid_params(
                format!("prompt `{name}` needs the argument `{arg}` (a non-empty string)"),
                Some(json!({"prompt": name, "argument": arg})),
            ));
        }
    }
    if let Some(unknown) = args
        .keys()
        .find(|k| !def.arguments.iter().any(|(a, _, _)| a == k))
    {
        return Err(McpError::invalid_params(
            format!("prompt `{name}` has no argument `{unknown}`"),
            Some(json!({"prompt": name, "argument": unknown})),
        ));
    }
    let text = (def.render)(&args);
    Ok(
        GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)])
            .with_description(def.description),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_render_their_arguments_and_reject_bad_ones() {
        assert_eq!(list().len(), PROMPTS.len());
        let mut args = JsonObject::new();
        args.insert("question".into(), json!("who opens /etc/shadow"));
        let r = get("plan_observation", Some(args)).unwrap();
        let text = serde_json::to_string(&r.messages).unwrap();
        assert!(text.contains("who opens /etc/shadow"));
        assert!(get("plan_observation", None).is_err());
        assert!(get("nope", None).is_err());
        let mut extra = JsonObject::new();
        extra.insert("bogus".into(), json!("x"));
        assert!(get("ebpf_host_report", Some(extra)).is_err());
    }
}
