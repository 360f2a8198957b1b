#!/usr/bin/env python3
"""Benchmark: what the server's memory does under an event storm, in one run.

A storm: examples/workload.rs opening /dev/null in a loop (hundreds of thousands of opens a
second) for as long as each scenario runs. Measured against the server's idle RSS (after
`initialize` and one `info`):

- one `trace` of gadget `open` in events mode at the configured maximum (`max_events`
  10000, 5 s): the server's peak RSS (VmHWM) above idle. Events are held as text and only
  as many as fit one result, so a storm costs a bounded amount whatever the limits.
- 24 background sessions (`trace_start`, 4 at a time, each 1.5 s, a new batch every
  2.5 s) under the same storm, none stopped or read: RSS after they all finished, above
  idle. Finished sessions keep their buffers for a last read, bounded in count and bytes.
- the same trace by bpftrace (`tracepoint:syscalls:sys_enter_openat { printf(...) }`,
  output to /dev/null) as the peer: its peak RSS, for the ratio.

Targets (docs/benchmarks.md): trace peak ≤ 24 MiB above idle; sessions ≤ 64 MiB above idle.

Run as root from the repository root after
    cargo build --release --bins --examples
with
    .venv/bin/python benches/memory.py [--sessions 24]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time

from mcp import Client

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "target", "release")
BIN = os.environ.get("EBPF_MCP_BIN", os.path.join(REL, "ebpf-mcp"))
WORKLOAD = os.environ.get("EBPF_MCP_WORKLOAD", os.path.join(REL, "examples", "workload"))
CONFIG = """
server:
  rate_limit:
    requests_per_second: 0
tools:
  trace:
    max_duration: "60s"
"""
MIB = 1024 * 1024


def status_kib(pid: int, field: str) -> int:
    m = re.search(rf"{field}:\s+(\d+) kB", open(f"/proc/{pid}/status").read())
    return int(m.group(1)) if m else 0


def reset_peak(pid: int) -> None:
    """Resets VmHWM to the current RSS (Linux ≥ 4.0: write 5 to clear_refs)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


class Server:
    def __init__(self, config: str = CONFIG, wrap: list[str] | None = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="ebpf-mcp-mem-")
        cfg = os.path.join(self.dir, "config.yaml")
        with open(cfg, "w") as f:
            f.write(config + f'security:\n  audit_log: "{self.dir}/audit.log"\n')
        self.err = open(os.path.join(self.dir, "stderr.log"), "wb")
        self.proc = subprocess.Popen([*(wrap or []), BIN, "--config", cfg, "serve", "--http", "127.0.0.1:0"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.err)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            text = open(self.err.name, errors="replace").read()
            m = re.search(r"serving MCP over HTTP at (http://\S+/mcp)", text)
            if m:
                self.url = m.group(1)
                return
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited: {text}")
            time.sleep(0.05)
        raise SystemExit("server did not start")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


class Storm:
    """The workload opening /dev/null for as long as the block runs."""

    def __enter__(self) -> Storm:
        self.proc = subprocess.Popen([WORKLOAD, "opens", "2000000000"], stdout=subprocess.DEVNULL)
        time.sleep(0.2)
        return self

    def __exit__(self, *exc) -> None:
        self.proc.kill()
        self.proc.wait()


async def call(url: str, tool: str, args: dict) -> dict:
    async with Client(url, mode="legacy") as client:
        r = await client.call_tool(tool, args)
        assert not r.is_error, r.structured_content
        return r.structured_content


async def idle_rss(server: Server) -> int:
    await call(server.url, "info", {})
    time.sleep(0.5)
    return status_kib(server.pid, "VmRSS") * 1024


async def one_trace(server: Server) -> tuple[int, dict]:
    """Peak RSS during one events-mode trace at the maximum event count, under a storm."""
    reset_peak(server.pid)
    with Storm():
        out = await call(server.url, "trace", {"gadget": "open", "max_events": 10000, "duration_ms": 5000})
    return status_kib(server.pid, "VmHWM") * 1024, out


async def sessions(server: Server, n: int) -> int:
    """RSS after `n` sessions ran to their end in batches of four under a storm."""
    with Storm():
        started = 0
        while started < n:
            batch = min(4, n - started)
            await asyncio.gather(*[
                call(server.url, "trace_start", {"gadget": "open", "duration_ms": 1500}) for _ in range(batch)
            ])
            started += batch
            await asyncio.sleep(2.5)
    await asyncio.sleep(1)
    return status_kib(server.pid, "VmRSS") * 1024


def bpftrace_peak() -> int:
    """bpftrace's peak RSS printing every open of the storm for 5 s."""
    prog = 'tracepoint:syscalls:sys_enter_openat { printf("%d %s %s\\n", pid, comm, str(args->filename)); }'
    with Storm():
        p = subprocess.Popen(["bpftrace", "-e", prog], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        peak = 0
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and p.poll() is None:
            try:
                peak = max(peak, status_kib(p.pid, "VmHWM"))
            except FileNotFoundError:
                break
            time.sleep(0.2)
        p.terminate()
        p.wait(timeout=20)
    return peak * 1024


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=24)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    server = Server()
    try:
        idle = await idle_rss(server)
        peak, out = await one_trace(server)
        idle_after = status_kib(server.pid, "VmRSS") * 1024
        after_sessions = await sessions(server, args.sessions)
    finally:
        server.stop()
    peer = bpftrace_peak()
    trace_above = peak - idle
    sessions_above = after_sessions - idle
    print(f"idle RSS: {idle / MIB:.1f} MiB")
    print(f"one trace (open, events, max_events 10000, 5 s, storm): peak {peak / MIB:.1f} MiB, "
          f"{trace_above / MIB:.1f} MiB above idle (target <= 24); {out['events_total']} events seen, "
          f"{out['events_returned']} returned, truncated={out['truncated']}; RSS after: {idle_after / MIB:.1f} MiB")
    print(f"{args.sessions} finished sessions (4 at a time, 1.5 s each, storm): RSS {after_sessions / MIB:.1f} MiB, "
          f"{sessions_above / MIB:.1f} MiB above idle (target <= 64)")
    print(f"bpftrace printing the same storm: peak {peer / MIB:.1f} MiB; ebpf-mcp's trace peak is "
          f"{peak / peer:.2f}x bpftrace's")
    ok = trace_above <= 24 * MIB and sessions_above <= 64 * MIB
    if not ok:
        sys.exit("over a memory target")


if __name__ == "__main__":
    asyncio.run(main())
