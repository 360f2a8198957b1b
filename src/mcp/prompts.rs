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
            "Call the `info` tool of the ebpf-mcp server with `{\"sections\": [\"all\"]}`, then \
             write a short report for an SRE:\n\
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
                 1. Call `info`. Note `summary.lockdown` and which attach kinds are available \
                 (`summary.attach`); for the reasons of the others call it again with \
                 `{{\"sections\": [\"features\"]}}` and read `features.attach`.\n\
                 2. Choose the least intrusive mechanism that can answer the goal and is \
                 available here: first a `trace` gadget (`summary.gadgets` names those this \
                 kernel supports; the ebpf://gadgets resource, or `info` with section \
                 `gadgets`, lists their fields), then any tracepoint \
                 (`list_tracepoints`, gadget `tracepoint`), uprobes for user-space functions, \
                 perf_event for CPU sampling; kprobe, fentry or lsm only if `info` reports \
                 them available.\n\
                 3. If `problems` is not empty, say which entries block the goal and quote \
                 their fix.\n\
                 4. Answer with the mechanism and the exact hook (for example the tracepoint \
                 `syscalls:sys_enter_openat`), why it is available on this host, and what it \
                 cannot see. Never assume a capability that `info` does not report as available."
            )
        },
    },
    PromptDef {
        name: "diagnose_high_cpu",
        title: "Diagnose high CPU",
        description: "Find what is using the CPU: processes, their hottest functions and stacks, syscalls, and BPF programs",
        arguments: &[SECONDS, PID],
        render: |args| {
            let (ms, filter) = (duration_ms(args), pid_filter(args));
            format!(
                "Find out where CPU time goes on this host{}.\n\
                 1. Call `trace` with {{\"gadget\": \"profile\", \"duration_ms\": {ms}, \
                 \"frequency_hz\": 99{filter}}}. `counts` gives samples per process (at 99 Hz, \
                 99 samples per second is one full CPU); `functions` the functions samples \
                 landed in; `stacks` the hottest call paths (kernel frames `[k]` first). \
                 `file+0x…` frames are code without symbols (stripped binaries, JIT), `[unknown]` frames \
                 belong to processes that exited.\n\
                 2. For the top process, call `trace` with {{\"gadget\": \"syscalls\", \
                 \"duration_ms\": {ms}, \"pid\": <its pid>}}: many syscalls per second means \
                 time in the kernel on its behalf.\n\
                 3. Call `list_programs` with {{\"sample_ms\": 2000}}: if `busiest` names BPF \
                 programs whose `stats.cpu_percent` is notable, BPF itself costs CPU.\n\
                 4. Report: the top consumers with their share of samples, the functions and \
                 stacks that explain them, syscall rates, BPF overhead if any, and what to look \
                 at next. State only what the results show; quote numbers.",
                pid_note(args)
            )
        },
    },
    PromptDef {
        name: "who_is_opening_files",
        title: "Who is opening files",
        description: "Find which processes open which files (optionally under a path), and which opens fail",
        arguments: &[
            SECONDS,
            (
                "path_prefix",
                "Only files under this path, e.g. /etc",
                false,
            ),
        ],
        render: |args| {
            let ms = duration_ms(args);
            let prefix = text(args, "path_prefix");
            // The prefix as a glob in a filter string: glob characters, quotes and
            // backslashes escaped, twice (the glob, then the filter's string).
            let (scope, under, failed) = if prefix.is_empty() {
                (String::new(), String::new(), "ret < 0".to_owned())
            } else {
                let glob: String = prefix
                    .chars()
                    .flat_map(|c| match c {
                        '*' | '?' | '[' | ']' | '\\' => vec!['\\', c],
                        _ => vec![c],
                    })
                    .collect();
                let quoted = glob.replace('\\', "\\\\").replace('"', "\\\"");
                let cond = format!("path ~ \"{quoted}*\"");
                (
                    format!(" Only paths starting with `{prefix}` matter."),
                    format!(", \"filter\": {}", json!(cond)),
                    format!("{cond} && ret < 0"),
                )
            };
            let failed = json!(failed);
            format!(
                "Find which processes open which files.{scope}\n\
                 1. Call `trace` with {{\"gadget\": \"open\", \"mode\": \"count\", \
                 \"group_by\": [\"comm\", \"path\"], \"top\": 50, \"duration_ms\": {ms}{under}}} \
                 for the busiest process/file pairs.\n\
                 2. Call `trace` with {{\"gadget\": \"open\", \"mode\": \"count\", \
                 \"group_by\": [\"comm\", \"path\", \"error\"], \"top\": 50, \"duration_ms\": \
                 {ms}, \"filter\": {failed}}}: only failed opens, with their errors (ENOENT, \
                 EACCES, ...).\n\
                 3. For a process worth a closer look, call `trace` with {{\"gadget\": \"open\", \
                 \"pid\": <pid>, \"duration_ms\": {ms}}} to see its opens in order with flags.\n\
                 4. Report per process: files opened and how often, failures with their \
                 errors, and anything unexpected (secrets, configuration, files of other \
                 users). `events_total` is exact; mention `events_dropped` if not zero."
            )
        },
    },
    PromptDef {
        name: "network_connections_audit",
        title: "Audit network connections",
        description: "List who connects where, who accepts connections, failed connects and retransmits",
        arguments: &[SECONDS],
        render: |args| {
            let ms = duration_ms(args);
            format!(
                "Audit the TCP connections this host makes and accepts.\n\
                 1. Call `trace_start` with {{\"gadget\": \"tcp_connect\", \"duration_ms\": \
                 {ms}}} and `trace_start` with {{\"gadget\": \"tcp_accept\", \"duration_ms\": \
                 {ms}}}, then `trace` with {{\"gadget\": \"tcp_retransmit\", \"duration_ms\": \
                 {ms}}} while they run.\n\
                 2. Call `trace_stop` on both sessions. From tcp_connect: group the events by \
                 `comm`, `daddr` and `dport`; list failures (`result` other than `connected`) \
                 and slow handshakes (`latency_ns`). From tcp_accept: which processes accept on \
                 which local ports (`sport`) from which peers (`daddr`).\n\
                 3. From tcp_retransmit: the peers (`daddr`, `dport`) with retransmits, a sign \
                 of loss or an unresponsive peer (its pid/comm are not meaningful).\n\
                 4. Report: outbound destinations per process, listeners and their clients, \
                 failures and retransmits, and anything unexpected (unknown destinations, \
                 processes that should not use the network)."
            )
        },
    },
    PromptDef {
        name: "slow_disk",
        title: "Investigate slow disk I/O",
        description: "Measure block I/O latency per device and operation, and find who issues the I/O",
        arguments: &[SECONDS],
        render: |args| {
            let ms = duration_ms(args);
            format!(
                "Find out whether disk I/O is slow and why.\n\
                 1. Call `trace` with {{\"gadget\": \"biolatency\", \"group_by\": [\"device\", \
                 \"op\"], \"duration_ms\": {ms}}}. Each histogram has an exact `count` and \
                 `avg_us`, and `p50_us`/`p99_us` (upper ends of log2 buckets). Compare with \
                 what the device should do (NVMe: tens of µs; SSD: hundreds; disks: ms).\n\
                 2. Call `trace` with {{\"gadget\": \"syscalls\", \"group_by\": [\"comm\", \
                 \"syscall\"], \"top\": 30, \"duration_ms\": {ms}}} and look for processes \
                 heavy in read, write, fsync, fdatasync, pread64, pwrite64.\n\
                 3. Call `trace` with {{\"gadget\": \"runqlat\", \"duration_ms\": {ms}}}: if \
                 run-queue latency is high too, the slowness may be CPU contention rather \
                 than the disk.\n\
                 4. Report per device: operation mix, latency distribution and outliers, the \
                 processes likely behind it, and whether the disk or the CPU is the \
                 bottleneck. Quote numbers from the results."
            )
        },
    },
    PromptDef {
        name: "unexpected_process_launches",
        title: "Find unexpected process launches",
        description: "Watch every program started on the host, with arguments, parents and users, and flag the unusual ones",
        arguments: &[SECONDS],
        render: |args| {
            let ms = duration_ms(args);
            format!(
                "Watch which programs start on this host and flag unusual ones.\n\
                 1. Call `trace` with {{\"gadget\": \"exec\", \"duration_ms\": {ms}, \
                 \"max_events\": 2000}}. Each event has `filename`, `argv`, `pid`, `ppid`, \
                 `uid`, `ret` (and `error` when the exec failed).\n\
                 2. Call `trace` with {{\"gadget\": \"exit\", \"duration_ms\": {ms}}} to see \
                 short-lived processes and how they ended (`exit_code`, `signal`).\n\
                 3. Build the parent chains (`ppid`) and flag: shells or interpreters started \
                 by services, programs run from /tmp, /dev/shm or hidden directories, \
                 downloads (curl, wget) piped to shells, privilege changes (uid 0 children of \
                 other users), failed execs, and anything spawning in a tight loop.\n\
                 4. Report what started, grouped by parent, with the flagged launches first \
                 and the exact command lines. If `truncated` is true, say so and suggest \
                 filters (`uid`, `comm`, `cgroup`)."
            )
        },
    },
];

/// Every investigation takes an optional duration.
const SECONDS: (&str, &str, bool) = (
    "seconds",
    "How long to observe, 1 to 60 (default 10)",
    false,
);
const PID: (&str, &str, bool) = ("pid", "Only this process", false);

fn text<'a>(args: &'a JsonObject, name: &str) -> &'a str {
    args.get(name).and_then(Value::as_str).unwrap_or("").trim()
}

fn duration_ms(args: &JsonObject) -> u64 {
    text(args, "seconds")
        .parse::<u64>()
        .unwrap_or(10)
        .clamp(1, 60)
        * 1000
}

fn pid_filter(args: &JsonObject) -> String {
    match text(args, "pid") {
        "" => String::new(),
        pid => format!(", \"pid\": {pid}"),
    }
}

fn pid_note(args: &JsonObject) -> String {
    match text(args, "pid") {
        "" => String::new(),
        pid => format!(" for process {pid}"),
    }
}

/// Arguments that must be whole numbers, with their range.
const NUMERIC: &[(&str, u64, u64)] = &[("seconds", 1, 60), ("pid", 1, u32::MAX as u64)];

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
    for (arg, low, high) in NUMERIC {
        let value = text(&args, arg);
        if !value.is_empty()
            && !value
                .parse::<u64>()
                .is_ok_and(|n| (*low..=*high).contains(&n))
        {
            return Err(McpError::invalid_params(
                format!(
                    "prompt `{name}`: `{arg}` must be a whole number from {low} to {high}, not `{value}`"
                ),
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
        let mut bad = JsonObject::new();
        bad.insert("seconds".into(), json!("forever"));
        assert!(get("slow_disk", Some(bad)).is_err());
    }

    /// Every tool and gadget a prompt tells the agent to use exists, with the fields named.
    #[test]
    fn prompts_only_name_real_tools_and_gadgets() {
        let mut args = JsonObject::new();
        args.insert("question".into(), json!("q"));
        args.insert("pid".into(), json!("42"));
        for def in PROMPTS {
            let mine: JsonObject = args
                .iter()
                .filter(|(k, _)| def.arguments.iter().any(|(a, _, _)| a == k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let text = (def.render)(&mine);
            for call in text.split("Call `").skip(1) {
                let tool = call.split('`').next().unwrap_or_default();
                assert!(
                    crate::tools::registry().get(tool).is_some(),
                    "{}: no tool `{tool}`",
                    def.name
                );
            }
            for part in text.split("\"gadget\": \"").skip(1) {
                let gadget = part.split('"').next().unwrap_or_default();
                let g = crate::gadgets::find(gadget)
                    .unwrap_or_else(|| panic!("{}: no gadget `{gadget}`", def.name));
                // Every group_by field the prompt uses is one of the gadget's.
                if let Some(fields) = part.split("\"group_by\": [").nth(1) {
                    let fields = fields.split(']').next().unwrap_or_default();
                    for f in fields.split(',').map(|f| f.trim().trim_matches('"')) {
                        assert!(
                            g.all_fields().any(|x| x.name == f),
                            "{}: `{f}` is not a field of {gadget}",
                            def.name
                        );
                    }
                }
            }
        }
    }

    /// The `{"gadget": …}` arguments a prompt text gives, parsed.
    fn trace_calls(text: &str) -> Vec<serde_json::Map<String, Value>> {
        let mut out = Vec::new();
        for (at, _) in text.match_indices("{\"gadget\"") {
            let mut depth = 0;
            let mut in_string = false;
            let mut escaped = false;
            for (i, c) in text[at..].char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' if in_string => escaped = true,
                    '"' => in_string = !in_string,
                    '{' if !in_string => depth += 1,
                    '}' if !in_string => {
                        depth -= 1;
                        if depth == 0 {
                            // Calls with placeholders (`<pid>`) are not JSON: skipped.
                            if let Ok(Value::Object(call)) =
                                serde_json::from_str(&text[at..=at + i])
                            {
                                out.push(call);
                            }
                            break;
                        }
                    }
                    _ => {}
                }
            }
        }
        out
    }

    #[test]
    fn filters_in_prompts_parse_and_match_the_prefix_literally() {
        use crate::trace::filter::{Filter, Kind};
        let gadget = crate::gadgets::find("open").unwrap();
        let fields: Vec<(String, Kind)> = gadget
            .all_fields()
            .map(|f| (f.name.to_owned(), Kind::of_type(f.ty)))
            .collect();
        let prefix = r#"/tmp/a*b"c\d["#;
        let mut args = JsonObject::new();
        args.insert("path_prefix".into(), json!(prefix));
        let def = PROMPTS
            .iter()
            .find(|d| d.name == "who_is_opening_files")
            .unwrap();
        let calls = trace_calls(&(def.render)(&args));
        let filters: Vec<&str> = calls
            .iter()
            .filter_map(|c| c.get("filter").and_then(Value::as_str))
            .collect();
        assert_eq!(filters.len(), 2, "{calls:?}");
        let event = |path: &str, ret: i64| {
            json!({"path": path, "ret": ret})
                .as_object()
                .unwrap()
                .clone()
        };
        for f in &filters {
            let f = Filter::parse(f, &fields).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert!(
                f.matches(&event(&format!("{prefix}/x"), -2)),
                "{}",
                f.text()
            );
            assert!(!f.matches(&event("/tmp/aXb\"c\\d[/x", -2)), "{}", f.text());
        }
        let without = trace_calls(&(def.render)(&JsonObject::new()));
        assert!(
            without
                .iter()
                .any(|c| c.get("filter") == Some(&json!("ret < 0")))
        );
    }
}
