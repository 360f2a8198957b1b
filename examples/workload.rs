//! Workloads the tracing tests and benchmarks start, each doing one known thing a known
//! number of times so a trace of it can be checked exactly.
//!
//!   workload opens N        open and close /dev/null N times (the benchmark's workload)
//!   workload calls N        call `ebpf_mcp_work` N times (uprobe target), after a line on stdin
//!   workload spin MS        burn CPU in `ebpf_mcp_spin` for MS milliseconds (profile target)
//!   workload sleeps N US    sleep N times for US microseconds (run-queue wakeups)
//!
//! `calls` prints `ready <pid>` and waits for a line on stdin before calling, so a test can
//! attach first; every mode prints `done` and what it did as one JSON line at the end.

use std::hint::black_box;
use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

/// The uprobe target: its symbol stays in the binary and each call is one real call.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn ebpf_mcp_work(i: u64) -> u64 {
    black_box(i.wrapping_mul(2654435761).rotate_left(7))
}

/// The profile target: a busy loop that shows up as the leaf frame of CPU samples.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn ebpf_mcp_spin(until: &Instant) -> u64 {
    // Plain operators only: even unoptimized, the loop calls nothing, so CPU samples land
    // in this function.
    let mut x: u64 = 1;
    let mut i: u32 = 0;
    loop {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        i += 1;
        if i == 1 << 20 {
            i = 0;
            if Instant::now() >= *until {
                return x;
            }
        }
    }
}

fn opens(n: u64) -> Result<(), String> {
    let path = c"/dev/null";
    for _ in 0..n {
        // SAFETY: a valid NUL-terminated path; the descriptor is closed right away.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(format!(
                "open /dev/null: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: fd was returned by open above and is closed once.
        unsafe { libc::close(fd) };
    }
    Ok(())
}

fn calls(n: u64) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {}", std::process::id()).map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    drop(out);
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let mut acc = 0u64;
    for i in 0..n {
        acc ^= ebpf_mcp_work(i);
    }
    black_box(acc);
    Ok(())
}

fn arg(args: &[String], i: usize, what: &str) -> Result<u64, String> {
    args.get(i)
        .ok_or_else(|| format!("missing {what}"))?
        .parse()
        .map_err(|e| format!("{what}: {e}"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let started = Instant::now();
    let result = match args.get(1).map(String::as_str) {
        Some("opens") => arg(&args, 2, "N").and_then(opens),
        Some("calls") => arg(&args, 2, "N").and_then(calls),
        Some("spin") => arg(&args, 2, "MS").map(|ms| {
            let until = Instant::now() + Duration::from_millis(ms);
            black_box(ebpf_mcp_spin(&until));
        }),
        Some("sleeps") => arg(&args, 2, "N").and_then(|n| {
            let us = arg(&args, 3, "US")?;
            for _ in 0..n {
                std::thread::sleep(Duration::from_micros(us));
            }
            Ok(())
        }),
        _ => Err("usage: workload opens N | calls N | spin MS | sleeps N US".into()),
    };
    if let Err(e) = result {
        eprintln!("workload: {e}");
        std::process::exit(2);
    }
    let _ = writeln!(
        std::io::stdout().lock(),
        "{{\"done\": true, \"pid\": {}, \"elapsed_ns\": {}}}",
        std::process::id(),
        started.elapsed().as_nanos()
    );
}
