#!/usr/bin/env python3
"""Benchmark: the cost of tracing a syscall-heavy workload, against bpftrace, in one run.

Workload: examples/workload.rs opening and closing /dev/null N times (1,000,000 by
default); it reports its own elapsed time. Measured, each as the median of --runs runs and
as a ratio against the untraced workload measured in the same go:

- ebpf-mcp `trace` gadget `open`, `mode: count`, filtered to the workload in the kernel
  (`comm`), over MCP against a running server, grouped by `path`: every event crosses the
  ring buffer to the server and is decoded and counted (the /dev/null count must equal N,
  `events_dropped` 0); and grouped by `comm`, which the kernel counts in a table (the count
  must equal the path run's total).
  Also the server's CPU time per event and its peak RSS (VmHWM) while tracing.
- The same ebpf-mcp trace with the kernel's BPF run-time statistics on (kernel.bpf_stats_enabled,
  as while the server watches deployments for resources.max_cpu_time_ms): what the
  statistics cost every BPF program on the host.
- bpftrace printing each event (`tracepoint:syscalls:sys_enter_openat /comm == .../ {
  printf(...) }`, output to /dev/null) and bpftrace counting in the kernel (`count()`).
- Call-to-first-event latency: from sending the `trace` call to the time stamp of the first
  event it returns, while a process opens files in a loop (first call on a fresh server,
  then warm calls).

Run as root from the repository root after
    cargo build --release --bins --examples
with
    .venv/bin/python benches/trace.py [--runs 3] [--opens 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "target", "release")
BIN = os.path.join(REL, "ebpf-mcp")
WORKLOAD = os.path.join(REL, "examples", "workload")
CONFIG = """
server:
  request_timeout: "300s"
tools:
  trace:
    max_duration: "300s"
"""


def workload(opens: int) -> float:
    """Seconds the workload took, by its own clock."""
    out = subprocess.run([WORKLOAD, "opens", str(opens)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["elapsed_ns"] / 1e9


def proc_times(pid: int) -> float:
    """User plus system CPU seconds of a process so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vm_hwm_kib(pid: int) -> int:
    m = re.search(r"VmHWM:\s+(\d+) kB", open(f"/proc/{pid}/status").read())
    return int(m.group(1)) if m else 0


class Server:
    def __init__(self) -> None:
        self.cfg = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
        self.cfg.write(CONFIG)
        self.cfg.close()
        self.err = tempfile.NamedTemporaryFile(prefix="bench-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([BIN, "--config", self.cfg.name, "serve", "--http", "127.0.0.1:0"],
                                     stderr=self.err, stdout=subprocess.DEVNULL)
        self.url = None
        for _ in range(400):
            m = re.search(r"(http://\S+/mcp)", open(self.err.name).read())
            if m:
                self.url = m.group(1)
                break
            time.sleep(0.05)
        if not self.url:
            sys.exit(f"server did not start: {open(self.err.name).read()}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


async def traced_by_ebpf_mcp(server: Server, opens: int, group_by: list[str]) -> tuple[float, dict, float]:
    """Workload seconds under `trace open` count mode grouped by `group_by`, the trace's
    result, and the server's CPU seconds over the trace."""
    from mcp import Client

    ready = asyncio.Event()

    async def on_log(params) -> None:
        if "tracing with" in str(params.data):
            ready.set()

    async with Client(server.url, mode="legacy", logging_callback=on_log) as client:
        await client.set_logging_level("info")
        cpu_before = proc_times(server.proc.pid)
        call = asyncio.create_task(client.call_tool("trace", {
            "gadget": "open", "mode": "count", "comm": "workload", "group_by": group_by,
            "duration_ms": 1000 + int(opens / 1000_000 * 12_000)}))
        await asyncio.wait_for(ready.wait(), 30)
        elapsed = await asyncio.to_thread(workload, opens)
        result = await call
        cpu = proc_times(server.proc.pid) - cpu_before
    if result.is_error:
        sys.exit(f"trace failed: {result.structured_content}")
    return elapsed, result.structured_content, cpu


def traced_by_bpftrace(program: str, opens: int) -> float:
    """Workload seconds while bpftrace runs `program`. Its output goes through a pipe to
    `cat > /dev/null` (what a redirected bpftrace costs); the first line, "Attaching N
    probes...", says it is attached."""
    quoted = program.replace("'", "'\\''")
    bt = subprocess.Popen(["sh", "-c", f"bpftrace -e '{quoted}' 2>/dev/null | {{ head -n1 >&2; exec cat >/dev/null; }}"],
                          stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = bt.stderr.readline()
        if "Attaching" not in line:
            sys.exit(f"bpftrace did not attach: {line!r}")
        time.sleep(0.5)
        return workload(opens)
    finally:
        os.killpg(bt.pid, signal.SIGINT)
        bt.wait(timeout=60)


async def first_event_latency(server: Server) -> float:
    """Milliseconds from sending a trace call to the time stamp of its first event."""
    from mcp import Client

    opener = subprocess.Popen([sys.executable, "-c",
                               "import time\nwhile True:\n    open('/dev/null').close()\n    time.sleep(0.001)"])
    try:
        async with Client(server.url, mode="legacy") as client:
            sent = datetime.datetime.now(datetime.timezone.utc)
            r = await client.call_tool("trace", {"gadget": "open", "pid": opener.pid, "max_events": 1,
                                                 "duration_ms": 5000})
        first = r.structured_content["events"][0]["time"]
        # RFC 3339 with nanoseconds: keep microseconds for datetime.
        stamp = datetime.datetime.fromisoformat(re.sub(r"(\.\d{6})\d*Z$", r"\1+00:00", first))
        return (stamp - sent).total_seconds() * 1000
    finally:
        opener.kill()
        opener.wait()


class bpf_stats:
    """kernel.bpf_stats_enabled on for a block, as it was afterwards."""

    PATH = "/proc/sys/kernel/bpf_stats_enabled"

    def __enter__(self) -> None:
        self.before = open(self.PATH).read().strip()
        with open(self.PATH, "w") as f:
            f.write("1")

    def __exit__(self, *exc) -> None:
        with open(self.PATH, "w") as f:
            f.write(self.before)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--opens", type=int, default=1_000_000)
    args = ap.parse_args()
    for path in (BIN, WORKLOAD):
        if not os.path.exists(path):
            sys.exit(f"{path} missing: cargo build --release --bins --examples")
    n = args.opens
    workload(10_000)  # warm the page cache and the binary

    base, ours, in_kernel, with_stats, bt_print, bt_count, cpu, hwm = [], [], [], [], [], [], [], 0
    results, kernel_results = [], []
    server = Server()
    try:
        cold = asyncio.run(first_event_latency(server))
        for _ in range(args.runs):
            base.append(workload(n))
            elapsed, result, server_cpu = asyncio.run(traced_by_ebpf_mcp(server, n, ["path"]))
            ours.append(elapsed)
            cpu.append(server_cpu)
            results.append(result)
            elapsed, result, _ = asyncio.run(traced_by_ebpf_mcp(server, n, ["comm"]))
            in_kernel.append(elapsed)
            kernel_results.append(result)
            with bpf_stats():
                elapsed, result, _ = asyncio.run(traced_by_ebpf_mcp(server, n, ["path"]))
            with_stats.append(elapsed)
            results.append(result)
            bt_print.append(traced_by_bpftrace(
                'tracepoint:syscalls:sys_enter_openat /comm == "workload"/ '
                '{ printf("%d %s %d\\n", pid, str(args->filename), args->flags); }', n))
            bt_count.append(traced_by_bpftrace(
                'tracepoint:syscalls:sys_enter_openat /comm == "workload"/ { @[comm] = count(); }', n))
        hwm = vm_hwm_kib(server.proc.pid)
        warm = [asyncio.run(first_event_latency(server)) for _ in range(5)]
    finally:
        server.stop()

    # The workload's own start-up opens (its libraries) come on top of the N of /dev/null.
    dev_null = [sum(c["count"] for c in r["counts"] if c["key"]["path"] == "/dev/null") for r in results]
    exact = all(d == n for d in dev_null) and all(r["events_dropped"] == 0 for r in results)
    # Counted in the kernel by comm: the same opens, start-up ones included.
    startup = results[0]["events_total"] - dev_null[0]
    by_comm = [r["counts"][0]["count"] if r["counts"] else 0 for r in kernel_results]
    exact = exact and all(r["counted_in"] == "kernel" and r["events_dropped"] == 0 for r in kernel_results)
    exact = exact and all(c == n + startup for c in by_comm)
    b = statistics.median(base)

    def row(name: str, xs: list[float]) -> str:
        m = statistics.median(xs)
        return f"| {name} | {m:.3f} s | {m / b:.2f}x |"

    print(f"workload: {n} opens of /dev/null, median of {args.runs} runs, kernel {os.uname().release}")
    print("| run | workload time | vs untraced |\n|---|---|---|")
    print(row("untraced", base))
    print(row("ebpf-mcp trace open, mode count by path (every event to user space)", ours))
    print(row("ebpf-mcp trace open, mode count by comm (counted in the kernel)", in_kernel))
    print(row("the same with BPF run-time statistics on", with_stats))
    print(row("bpftrace printf per event", bt_print))
    print(row("bpftrace count() in the kernel", bt_count))
    print(f"\nebpf-mcp: opens of /dev/null counted {dev_null}, events_total {[r['events_total'] for r in results]}, "
          f"events_dropped {[r['events_dropped'] for r in results]}; counted in the kernel by comm {by_comm} "
          f"(expected {n + startup}); exact: {exact}")
    # Two programs run per open (the openat entry and exit tracepoints).
    stats_ns = (statistics.median(with_stats) - statistics.median(ours)) / (2 * n) * 1e9
    print(f"BPF run-time statistics: {stats_ns:.0f} ns more per program run")
    per_event = statistics.median(cpu) / n * 1e9
    print(f"server CPU while tracing: median {statistics.median(cpu):.3f} s = {per_event:.0f} ns per event; "
          f"peak RSS (VmHWM) {hwm / 1024:.1f} MiB")
    print(f"call to first event: first call {cold:.1f} ms, then median {statistics.median(warm):.1f} ms "
          f"(max {max(warm):.1f} ms)")
    if not exact:
        sys.exit("ebpf-mcp missed events")


if __name__ == "__main__":
    main()
