//! The command line, run as a user would: exit codes, output formats, configuration
//! commands, and the permission error an unprivileged user gets.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ebpf-mcp");

/// Tests that load BPF need root. They are `#[ignore = "needs root"]`, so a plain
/// `cargo test` lists them as ignored; scripts/test runs them with `--include-ignored`.
/// Run without root, they fail here with the reason rather than deep inside.
fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root (CAP_BPF, CAP_PERFMON): run the tests as root (scripts/test)"
    );
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("EBPF_MCP_CONFIG")
        .output()
        .expect("run ebpf-mcp")
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ebpf-mcp-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
#[ignore = "needs root"]
fn call_info_prints_the_running_kernel() {
    require_root();
    let out = run(&["call", "info", r#"{"sections": ["all"]}"#]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = json(&out);
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(v["kernel"]["release"], release.trim());
    assert_eq!(v["features"]["attach"]["tracepoint"]["status"], "available");
    assert_eq!(v["server"]["config_source"], "built-in defaults");
}

#[test]
#[ignore = "needs root"]
fn tool_errors_exit_1_with_the_error_object_on_stdout() {
    require_root();
    let out = run(&["call", "info", r#"{"refresh": "yes"}"#]);
    assert_eq!(out.status.code(), Some(1));
    let err = json(&out);
    assert_eq!(err["code"], "INVALID_ARGUMENTS");
    assert_eq!(err["category"], "validation");
    assert!(err["message"].as_str().unwrap().contains("refresh"));
    assert!(stderr(&out).contains("info failed"));
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["call", "no_such_tool"][..],
        &["call", "info", "not json"],
        &["call", "info", "[1, 2]"],
        &["frobnicate"],
        &["call"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?} wrote to stdout");
    }
    let out = run(&["call", "no_such_tool"]);
    assert!(
        stderr(&out).contains("known tools: info"),
        "{}",
        stderr(&out)
    );
}

#[test]
#[ignore = "needs root"]
fn output_formats() {
    require_root();
    let table = run(&["call", "info", "--output", "table"]);
    assert_eq!(table.status.code(), Some(0));
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("summary.kernel ")),
        "{text}"
    );
    let jsonl = run(&["call", "info", "-o", "jsonl"]);
    let text = String::from_utf8(jsonl.stdout).unwrap();
    assert_eq!(text.lines().count(), 1);
    let v: Value = serde_json::from_str(text.trim()).unwrap();
    assert!(v["summary"].is_object());
    // A list: one line per row, then one line with the rest of the result.
    for tool in ["list_tracepoints", "list_programs"] {
        let args = if tool == "list_tracepoints" {
            r#"{"pattern": "sched:*", "limit": 3}"#
        } else {
            "{}"
        };
        let out = run(&["call", tool, args, "-o", "jsonl"]);
        assert_eq!(out.status.code(), Some(0), "{tool}");
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let (last, rows) = lines.split_last().unwrap();
        assert!(last["summary"].is_object(), "{tool}: {text}");
        assert!(rows.iter().all(|r| r.get("summary").is_none()), "{tool}");
        if tool == "list_tracepoints" {
            assert_eq!(rows.len(), 3);
            assert!(last["summary"]["total"].as_u64().unwrap() > 3);
        }
    }
}

#[test]
#[ignore = "needs root"]
fn mistyped_names_get_a_suggestion() {
    require_root();
    let out = run(&["call", "list_program"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("did you mean `list_programs`?"), "{err}");
}

#[test]
#[ignore = "needs root"]
fn arguments_can_come_from_stdin() {
    require_root();
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(["call", "info", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"refresh": true, "sections": ["features"]}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(json(&out)["features"].is_object());
}

#[test]
fn tools_lists_every_tool() {
    let out = run(&["tools"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("info ") && l.contains("read")),
        "{text}"
    );
    let out = run(&["tools", "--output", "json"]);
    let list = json(&out);
    assert_eq!(list[0]["name"], "info");
    assert_eq!(list[0]["inputSchema"]["type"], "object");
}

#[test]
fn config_default_is_a_valid_config() {
    let out = run(&["config", "default"]);
    assert_eq!(out.status.code(), Some(0));
    let path = temp_file("default.yaml", &String::from_utf8(out.stdout).unwrap());
    let check = run(&["config", "check", path.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
    assert!(String::from_utf8_lossy(&check.stdout).contains("valid"));
}

#[test]
fn config_check_reports_key_and_line() {
    let path = temp_file(
        "bad.yaml",
        "server:\n  request_timeout: 30s\n  max_result_bytez: 5\n",
    );
    let out = run(&["config", "check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("server.max_result_bytez"), "{err}");
    assert!(err.contains("max_result_bytes"), "{err}");
}

#[test]
fn shipped_configs_check_clean() {
    let root = env!("CARGO_MANIFEST_DIR");
    for name in ["default.yaml", "production.yaml"] {
        let path = format!("{root}/configs/{name}");
        let out = run(&["config", "check", &path]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
    }
}

#[test]
#[ignore = "needs root"]
fn config_comes_from_flag_or_environment() {
    require_root();
    let path = temp_file("small.yaml", "server:\n  request_timeout: 7s\n");
    let server = r#"{"sections": ["server"]}"#;
    let by_flag = run(&["--config", path.to_str().unwrap(), "call", "info", server]);
    assert_eq!(
        json(&by_flag)["server"]["limits"]["request_timeout_ms"],
        7000
    );
    let by_env = Command::new(BIN)
        .args(["call", "info", server])
        .env("EBPF_MCP_CONFIG", &path)
        .output()
        .unwrap();
    let v = json(&by_env);
    assert_eq!(v["server"]["config_source"], path.to_str().unwrap());
    let missing = run(&["--config", "/nonexistent/ebpf-mcp.yaml", "call", "info"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("/nonexistent/ebpf-mcp.yaml"));
}

#[test]
fn reserved_keys_are_reported_not_ignored() {
    let path = temp_file("reserved.yaml", "ebpf:\n  program_timeout: 5s\n");
    let out = run(&["config", "check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ebpf.program_timeout"), "{text}");
    assert!(text.contains("not in effect"), "{text}");
}

#[test]
fn tls_without_its_files_is_refused_with_the_fix() {
    let path = temp_file("tls.yaml", "server:\n  tls:\n    enabled: true\n");
    let out = run(&["--config", path.to_str().unwrap(), "serve", "--http"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("server.tls") && err.contains("cert_file") && err.contains("key_file"),
        "{err}"
    );
    // Files that are not PEM are named in the error.
    let bogus = temp_file("bogus.pem", "not a certificate\n");
    let path = temp_file(
        "tls2.yaml",
        &format!(
            "server:\n  tls:\n    enabled: true\n    cert_file: {0}\n    key_file: {0}\n",
            bogus.display()
        ),
    );
    let out = run(&[
        "--config",
        path.to_str().unwrap(),
        "serve",
        "--http",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("bogus.pem") && err.contains("cert_file"),
        "{err}"
    );
}

#[test]
fn version_and_help() {
    let out = run(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "serve",
        "call",
        "tools",
        "config",
        "--log-format",
        "EBPF_MCP_CONFIG",
    ] {
        assert!(help.contains(word), "help lacks {word}");
    }
}

/// An unprivileged user gets kernel facts and a permission problem that names the missing
/// capabilities and how to grant them; nothing fails.
#[test]
#[ignore = "needs root"]
fn unprivileged_info_names_the_missing_capabilities() {
    require_root();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            BIN,
            "call",
            "info",
            r#"{"sections": ["all"]}"#,
        ])
        .env_remove("EBPF_MCP_CONFIG")
        .output()
        .expect("setpriv (util-linux) is needed for this test");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = json(&out);
    assert!(v.get("features").is_none(), "no features without CAP_BPF");
    let problem = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["code"] == "MISSING_CAPABILITY")
        .expect("a MISSING_CAPABILITY problem");
    assert_eq!(problem["category"], "permission");
    let msg = problem["message"].as_str().unwrap();
    assert!(
        msg.contains("CAP_BPF") && msg.contains("CAP_PERFMON"),
        "{msg}"
    );
    assert!(
        msg.contains("setcap") && msg.contains("AmbientCapabilities"),
        "{msg}"
    );
    assert_eq!(v["kernel"]["capabilities"]["bpf"], false);
}

/// Ids of every BPF program, map and link on the system, from bpftool.
fn bpf_ids() -> std::collections::BTreeSet<(String, u64)> {
    let mut ids = std::collections::BTreeSet::new();
    for kind in ["prog", "map", "link"] {
        let out = Command::new("bpftool")
            .args(["-j", kind, "show"])
            .output()
            .expect("bpftool is needed for leak checks (scripts/bootstrap installs it)");
        let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Array(vec![]));
        // An object freed while bpftool lists it shows up as an entry with an error and no
        // id (other tests run in parallel): it is gone, so it is not counted.
        for entry in list.as_array().into_iter().flatten() {
            if let Some(id) = entry["id"].as_u64() {
                ids.insert((kind.to_owned(), id));
            }
        }
    }
    ids
}

/// The feature probes load and attach many programs; none may outlive the call. Other tests
/// run in parallel, so only objects that appeared during this call *and stay* count.
#[test]
#[ignore = "needs root"]
fn probes_leave_no_bpf_objects_behind() {
    require_root();
    let before = bpf_ids();
    let out = run(&["call", "info", r#"{"refresh": true}"#]);
    assert_eq!(out.status.code(), Some(0));
    let mut new: Vec<_> = bpf_ids().difference(&before).cloned().collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !new.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let now = bpf_ids();
        new.retain(|id| now.contains(id));
    }
    assert!(new.is_empty(), "BPF objects left behind: {new:?}");
}

#[test]
fn docs_tools_md_is_generated_from_the_live_schemas() {
    let out = run(&["tools", "--output", "markdown"]);
    assert_eq!(out.status.code(), Some(0));
    let generated = String::from_utf8(out.stdout).unwrap();
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/tools.md")).unwrap();
    assert!(
        committed == generated,
        "docs/tools.md is stale; regenerate it with \
         `cargo run -- tools --output markdown > docs/tools.md`"
    );
}

#[test]
#[ignore = "needs root"]
fn deploy_from_the_command_line_lasts_as_long_as_the_command() {
    require_root();
    let objects = concat!(env!("CARGO_MANIFEST_DIR"), "/bpf/obj/tests");
    let audit = temp_file("deploy-audit.log", "");
    let config = temp_file(
        "deploy.yaml",
        &format!(
            "tools:\n  deploy:\n    enabled: true\n    allowed_dirs: [\"{objects}\"]\n\
             security:\n  audit_log: \"{}\"\n",
            audit.display()
        ),
    );
    let config = config.to_str().unwrap();
    let args = format!(r#"{{"path": "{objects}/ok_tracepoint.bpf.o"}}"#);
    let out = run(&["--config", config, "call", "deploy", &args]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let result = json(&out);
    assert_eq!(result["verdict"], "deployed");
    assert!(
        result["hint"]
            .as_str()
            .unwrap()
            .contains("released as the command exits"),
        "{result}"
    );
    // Released with the process: its program is gone.
    let prog = result["programs"][0]["id"].as_u64().unwrap();
    let mut left = true;
    for _ in 0..50 {
        left = bpf_ids().contains(&("prog".to_owned(), prog));
        if !left {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(!left, "program {prog} outlived `ebpf-mcp call deploy`");
    // And the call is on the record, attributed to the command line.
    let log = std::fs::read_to_string(&audit).unwrap();
    let line: Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(line["tool"], "deploy");
    assert_eq!(line["transport"], "cli");
    assert_eq!(line["outcome"], "ok");
}

#[test]
fn info_names_the_node_and_cluster_in_a_pod() {
    let out = Command::new(BIN)
        .args(["call", "info", r#"{"sections": ["server"]}"#])
        .env_remove("EBPF_MCP_CONFIG")
        .env("NODE_NAME", "node-7")
        .env("POD_NAME", "ebpf-mcp-x1")
        .env("POD_NAMESPACE", "ebpf-mcp")
        .env("CLUSTER_NAME", "prod-eu")
        .output()
        .expect("run ebpf-mcp");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let k = &json(&out)["server"]["kubernetes"];
    assert_eq!(k["node"], "node-7");
    assert_eq!(k["pod"], "ebpf-mcp-x1");
    assert_eq!(k["namespace"], "ebpf-mcp");
    assert_eq!(k["cluster"], "prod-eu");
    // Outside a pod there is no such section.
    let plain = Command::new(BIN)
        .args(["call", "info", r#"{"sections": ["server"]}"#])
        .env_remove("EBPF_MCP_CONFIG")
        .env_remove("NODE_NAME")
        .env_remove("POD_NAME")
        .env_remove("POD_NAMESPACE")
        .env_remove("CLUSTER_NAME")
        .output()
        .expect("run ebpf-mcp");
    assert!(json(&plain)["server"].get("kubernetes").is_none());
}

#[test]
fn completions_and_the_manual_page() {
    let bash = run(&["completions", "bash"]);
    assert_eq!(bash.status.code(), Some(0));
    let text = String::from_utf8(bash.stdout).unwrap();
    assert!(
        text.contains("complete -F _ebpf__mcp") && text.contains("completions"),
        "{text}"
    );
    for shell in ["zsh", "fish"] {
        let out = run(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        assert!(!out.stdout.is_empty());
    }
    let man = run(&["man"]);
    assert_eq!(man.status.code(), Some(0));
    let text = String::from_utf8(man.stdout).unwrap();
    assert!(
        text.starts_with(".ie") || text.contains(".TH ebpf-mcp"),
        "{}",
        &text[..200.min(text.len())]
    );
    assert!(text.contains("serve") && text.contains("call"));
    assert_eq!(run(&["completions", "tcsh"]).status.code(), Some(2));
}
