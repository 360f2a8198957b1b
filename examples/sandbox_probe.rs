//! Enters the server's sandbox with a configuration, then tries what it must forbid and what
//! it must allow, printing one JSON line of outcomes (the errno name, or "ok"):
//!
//!   sandbox_probe CONFIG WRITE_DIR DENIED_DIR PORT
//!
//! - write a file in WRITE_DIR (the audit log's directory: allowed)
//! - write a file in DENIED_DIR (anywhere else: refused by Landlock)
//! - execute /bin/true (refused: nothing is executable, and execve is not in the allow-list)
//! - connect to 127.0.0.1:PORT over TCP (refused by Landlock)
//! - mount tmpfs on DENIED_DIR (refused by seccomp)
//! - read /proc/self/status (allowed) and report its NoNewPrivs, Seccomp and CapEff lines.

use std::io::Write;

use ebpf_mcp::config::Config;
use ebpf_mcp::security::sandbox;

fn outcome<T>(r: std::io::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => match e.raw_os_error() {
            Some(libc::EACCES) => "EACCES".into(),
            Some(libc::EPERM) => "EPERM".into(),
            Some(n) => format!("errno {n}"),
            None => e.to_string(),
        },
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, config, write_dir, denied_dir, port] = &args[..] else {
        eprintln!("usage: sandbox_probe CONFIG WRITE_DIR DENIED_DIR PORT");
        std::process::exit(2);
    };
    let (config, _) = Config::load(Some(std::path::Path::new(config))).expect("config");
    let report = sandbox::apply(&config, None, None);
    let allowed_write = outcome(std::fs::write(format!("{write_dir}/allowed"), b"x"));
    let denied_write = outcome(std::fs::write(format!("{denied_dir}/denied"), b"x"));
    let exec = outcome(std::process::Command::new("/bin/true").status());
    let connect = outcome(std::net::TcpStream::connect(format!("127.0.0.1:{port}")));
    let target = std::ffi::CString::new(denied_dir.as_str()).expect("path");
    // SAFETY: valid NUL-terminated strings; a null data pointer is allowed for tmpfs.
    let rc = unsafe {
        libc::mount(
            c"none".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    let mount = outcome(if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    });
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    let line = serde_json::json!({
        "report": report,
        "allowed_write": allowed_write,
        "denied_write": denied_write,
        "exec": exec,
        "connect": connect,
        "mount": mount,
        "no_new_privs": field("NoNewPrivs:"),
        "seccomp": field("Seccomp:"),
        "cap_eff": field("CapEff:"),
        "cap_bnd": field("CapBnd:"),
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}
