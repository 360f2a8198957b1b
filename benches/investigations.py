#!/usr/bin/env python3
"""Benchmark: seven investigations, asked of ebpf-mcp over MCP and of bpftrace, in one run.

Each starts its own workload with a known answer, asks the question the way an agent
would (the fewest calls that answer it: ebpf-mcp tools over MCP through the official SDK;
bpftrace one-liners, and `ps` where bpftrace has no process view), and asserts that the
answer is right. Reported per investigation: calls made and bytes read (result JSON for
ebpf-mcp, stdout for bpftrace), and whether each answer was correct.

1. cpu_hog       what burns the CPU: a busy loop in `ebpf_mcp_spin` (examples/workload)
2. enoent_storm  which file keeps failing to open, while another process opens
                 /dev/null 20x as often
3. short_lived   who keeps starting md5sum every 200 ms: the parent's command line
4. dsync_writes  how long the application's O_DSYNC pwrite() calls take: exact count and
                 the mean the writer measured itself
5. closed_port   who keeps connecting to a closed port
6. malloc        how many malloc(12345) calls one process makes: exact
7. tracepoint    how often a sleeper is woken, asked first with a mistyped tracepoint
                 name and corrected from the answer

Run as root from the repository root after
    cargo build --release --bins --examples && cargo build --examples
with
    .venv/bin/python benches/investigations.py
(ONLY=dsync_writes runs one investigation; VERBOSE=1 prints what the latency one read.)
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "target", "release")
BIN = os.path.join(REL, "ebpf-mcp")
WORKLOAD = os.path.join(REL, "examples", "workload")
# The release examples are stripped: the CPU hog is the debug build, which has symbols.
WORKLOAD_SYMBOLS = os.path.join(ROOT, "target", "debug", "examples", "workload")
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"


class Agent:
    """One MCP session over stdio; counts calls and the bytes of their results."""

    def __init__(self, client) -> None:
        self.client = client
        self.calls = 0
        self.bytes = 0

    async def call(self, tool: str, args: dict) -> dict:
        result = await self.client.call_tool(tool, args)
        self.calls += 1
        text = result.content[0].text if result.content else ""
        self.bytes += len(text.encode())
        return result.structured_content or {}


class Peer:
    """bpftrace (and the odd shell command), counting runs and bytes of output."""

    def __init__(self) -> None:
        self.calls = 0
        self.bytes = 0

    def run(self, cmd: list[str], timeout: float = 60) -> str:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout).stdout
        self.calls += 1
        self.bytes += len(out.encode())
        return out

    def bpftrace(self, program: str, seconds: float) -> str:
        return self.run(["bpftrace", "-e", f"{program} interval:ms:{int(seconds * 1000)} {{ exit(); }}"])


def background(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def go(proc: subprocess.Popen) -> str:
    """Releases a workload waiting on stdin; returns its report line."""
    proc.stdin.write("go\n")
    proc.stdin.flush()
    return proc.stdout.readline().strip()


def stop(*procs: subprocess.Popen) -> None:
    for p in procs:
        p.kill()
        p.wait()


async def cpu_hog(agent: Agent, peer: Peer) -> tuple[bool, bool]:
    hog = subprocess.Popen([WORKLOAD_SYMBOLS, "spin", "20000"], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        r = await agent.call("trace", {"gadget": "profile", "duration_ms": 2000, "top": 3})
        ours = r["functions"][0]["function"] == "ebpf_mcp_spin" and r["counts"][0]["key"]["pid"] == hog.pid
        out = peer.bpftrace("profile:hz:49 { @[comm, pid, ustack(1)] = count(); }", 2)
        entries = re.findall(r"@\[(\w+), (\d+), \n\s+(\S+)\n\]: (\d+)", out)
        top = max(entries, key=lambda e: int(e[3]), default=None)
        theirs = top is not None and int(top[1]) == hog.pid and top[2].startswith("ebpf_mcp_spin")
    finally:
        stop(hog)
    return ours, theirs


async def enoent_storm(agent: Agent, peer: Peer) -> tuple[bool, bool]:
    missing = f"/nonexistent/{uuid.uuid4().hex[:8]}/config.yaml"
    failing = background(f"import time\nwhile True:\n    try: open({missing!r})\n    except OSError: pass\n"
                         "    time.sleep(0.001)\n")
    noisy = background("while True: open('/dev/null').close()\n")
    try:
        time.sleep(0.3)
        r = await agent.call("trace", {"gadget": "open", "mode": "count", "duration_ms": 2000, "filter": "ret < 0",
                                       "group_by": ["pid", "path", "error"], "top": 3})
        top = r["counts"][0]["key"]
        ours = top == {"pid": failing.pid, "path": missing, "error": "ENOENT"}
        out = peer.bpftrace("tracepoint:syscalls:sys_enter_openat { @p[tid] = args->filename; } "
                            "tracepoint:syscalls:sys_exit_openat /@p[tid] != 0/ { "
                            "if (args->ret < 0) { @[pid, str(@p[tid])] = count(); } delete(@p[tid]); }", 2)
        entries = re.findall(r"@\[(\d+), (.*)\]: (\d+)", out)
        best = max(entries, key=lambda e: int(e[2]), default=None)
        theirs = best is not None and (int(best[0]), best[1]) == (failing.pid, missing)
    finally:
        stop(failing, noisy)
    return ours, theirs


async def short_lived(agent: Agent, peer: Peer) -> tuple[bool, bool]:
    marker = uuid.uuid4().hex[:8]
    spawner = subprocess.Popen(["sh", "-c", f"while true; do md5sum /dev/null >/dev/null; sleep 0.2; done # {marker}"])
    try:
        time.sleep(0.3)
        r = await agent.call("trace", {"gadget": "exec", "comm": "md5sum", "duration_ms": 1500,
                                       "fields": ["pid", "ppid", "argv"]})
        parents = {e["ppid"] for e in r["events"]}
        ours = False
        if len(parents) == 1 and len(r["events"]) >= 3:
            p = await agent.call("process_info", {"pid": parents.pop()})
            ours = p["pid"] == spawner.pid and marker in " ".join(p["cmdline"])
        out = peer.bpftrace('tracepoint:sched:sched_process_exec /comm == "md5sum"/ '
                            '{ printf("%d %d\\n", pid, curtask->real_parent->tgid); }', 1.5)
        ppids = {line.split()[1] for line in out.splitlines() if re.fullmatch(r"\d+ \d+", line)}
        theirs = False
        if len(ppids) == 1:
            args = peer.run(["ps", "-o", "args=", "-p", ppids.pop()])
            theirs = marker in args
    finally:
        stop(spawner)
    return ours, theirs


WRITES = 200
DSYNC_WRITER = f"""
import os, sys, time
path = sys.argv[1]
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DSYNC, 0o600)
sys.stdin.readline()
spent = 0
for _ in range({WRITES}):
    t = time.perf_counter_ns()
    os.pwrite(fd, b"x" * 4096, 0)
    spent += time.perf_counter_ns() - t
print(spent / {WRITES} / 1000, flush=True)
sys.stdin.readline()
"""


async def dsync_writes(agent: Agent, peer: Peer) -> tuple[bool, bool]:
    path = os.path.join(tempfile.mkdtemp(dir="/var/tmp"), "dsync.dat")

    def writer() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", DSYNC_WRITER, path], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)

    w = writer()
    try:
        time.sleep(0.3)
        call = asyncio.create_task(agent.call("trace", {"gadget": "syscalls", "mode": "histogram", "pid": w.pid,
                                                        "group_by": ["syscall"], "duration_ms": 4000}))
        await asyncio.sleep(1.0)
        felt_us = float(await asyncio.to_thread(go, w))
        r = await call
        # pwrite: nothing else the writer does (its report line) is one.
        row = next((h for h in r["histograms"] if h["key"]["syscall"] == "pwrite64"), None)
        if os.environ.get("VERBOSE"):
            print("dsync:", felt_us, r["histograms"][:3], file=sys.stderr)
        ours = row is not None and row["count"] == WRITES and 0.5 <= row["avg_us"] / felt_us <= 2.0
    finally:
        stop(w)
    w = writer()
    try:
        time.sleep(0.3)
        program = (f"tracepoint:syscalls:sys_enter_pwrite64 /pid == {w.pid}/ {{ @s[tid] = nsecs; }} "
                   f"tracepoint:syscalls:sys_exit_pwrite64 /@s[tid]/ {{ @us = hist((nsecs - @s[tid]) / 1000); "
                   f"@n = count(); @sum = sum((nsecs - @s[tid]) / 1000); delete(@s[tid]); }}")
        bt = asyncio.create_task(asyncio.to_thread(peer.bpftrace, program, 4))
        await asyncio.sleep(1.5)
        felt_us = float(await asyncio.to_thread(go, w))
        out = await bt
        if os.environ.get("VERBOSE"):
            print("dsync bpftrace:", felt_us, out, file=sys.stderr)
        n = re.search(r"@n: (\d+)", out)
        total = re.search(r"@sum: (\d+)", out)
        theirs = bool(n and total and int(n.group(1)) == WRITES
                      and 0.5 <= int(total.group(1)) / WRITES / felt_us <= 2.0)
    finally:
        stop(w)
        os.unlink(path)
    return ours, theirs


async def closed_port(agent: Agent, peer: Peer) -> tuple[bool, bool]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = background("import socket, time\nwhile True:\n    try: socket.create_connection(('127.0.0.1', "
                        f"{port}))\n    except OSError: pass\n    time.sleep(0.05)\n")
    try:
        time.sleep(0.3)
        r = await agent.call("trace", {"gadget": "tcp_connect", "mode": "count", "duration_ms": 1500,
                                       "filter": f"dport == {port}", "group_by": ["pid", "comm", "result"]})
        top = r["counts"][0]
        ours = top["key"]["pid"] == client.pid and top["key"]["result"] == "ECONNREFUSED" and top["count"] >= 10
        be = ((port & 0xff) << 8) | (port >> 8)
        out = peer.bpftrace("tracepoint:syscalls:sys_enter_connect { "
                            "$sa = (struct sockaddr_in *)args->uservaddr; "
                            f"if ($sa->sin_port == {be}) {{ @c[tid] = 1; }} }} "
                            "tracepoint:syscalls:sys_exit_connect /@c[tid]/ "
                            "{ @[pid, comm, args->ret] = count(); delete(@c[tid]); }", 1.5)
        entries = re.findall(r"@\[(\d+), (\S+), (-?\d+)\]: (\d+)", out)
        theirs = any(int(p) == client.pid and ret == "-111" and int(n) >= 10 for p, _, ret, n in entries)
    finally:
        stop(client)
    return ours, theirs


MALLOCS = """
import ctypes, sys
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
print("ready", flush=True)
sys.stdin.readline()
for _ in range(5000):
    libc.free(libc.malloc(12345))
print("done", flush=True)
sys.stdin.readline()
"""


async def malloc(agent: Agent, peer: Peer) -> tuple[bool, bool]:
    def start() -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", MALLOCS], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
        assert p.stdout.readline().strip() == "ready"
        return p

    p = start()
    try:
        call = asyncio.create_task(agent.call("trace", {"gadget": "uprobe", "target": "libc:malloc", "pid": p.pid,
                                                        "filter": "arg0 == 12345", "group_by": ["pid"],
                                                        "duration_ms": 3000}))
        await asyncio.sleep(1.0)
        await asyncio.to_thread(go, p)
        r = await call
        ours = r["counts"] == [{"key": {"pid": p.pid}, "count": 5000}] and "libc.so.6" in r["hooks"][0]
    finally:
        stop(p)
    p = start()
    try:
        bt = asyncio.create_task(asyncio.to_thread(
            peer.bpftrace, f"uprobe:{LIBC}:malloc /pid == {p.pid} && arg0 == 12345/ {{ @n = count(); }}", 3))
        await asyncio.sleep(1.5)
        await asyncio.to_thread(go, p)
        out = await bt
        theirs = re.search(r"@n: (\d+)", out) is not None and re.search(r"@n: (\d+)", out).group(1) == "5000"
    finally:
        stop(p)
    return ours, theirs


async def tracepoint(agent: Agent, peer: Peer) -> tuple[bool, bool]:
    """How often is the sleeper woken? Asked with a mistyped tracepoint name first."""
    sleeper = subprocess.Popen([WORKLOAD, "sleeps", "100000", "1000"], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        wrong = await agent.call("trace", {"gadget": "tracepoint", "tracepoint": "sched:sched_wakup",
                                           "duration_ms": 1000})
        name = re.search(r"did you mean `([^`]+)`", wrong.get("message", ""))
        ours = False
        if name:
            r = await agent.call("trace", {"gadget": "tracepoint", "tracepoint": name.group(1), "mode": "count",
                                           "filter": f"tp_pid == {sleeper.pid}", "group_by": ["tp_comm"],
                                           "duration_ms": 1000})
            ours = [c["key"] for c in r["counts"]] == [{"tp_comm": "workload"}] and r["counts"][0]["count"] >= 300
        listed = peer.run(["bpftrace", "-l", "tracepoint:sched:*wak*"])
        theirs = False
        if "tracepoint:sched:sched_wakeup" in listed.split():
            out = peer.bpftrace(f"tracepoint:sched:sched_wakeup /args->pid == {sleeper.pid}/ "
                                "{ @[args->comm] = count(); }", 1)
            n = re.search(r"@\[workload\]: (\d+)", out)
            theirs = n is not None and int(n.group(1)) >= 300
    finally:
        stop(sleeper)
    return ours, theirs


INVESTIGATIONS = [cpu_hog, enoent_storm, short_lived, dsync_writes, closed_port, malloc, tracepoint]
if os.environ.get("ONLY"):
    INVESTIGATIONS = [i for i in INVESTIGATIONS if i.__name__ == os.environ["ONLY"]]


async def main() -> None:
    from mcp import Client, StdioServerParameters

    for path in (BIN, WORKLOAD, WORKLOAD_SYMBOLS):
        if not os.path.exists(path):
            sys.exit(f"{path} missing: cargo build --release --bins --examples && cargo build --examples")
    rows, failed = [], []
    env = {k: v for k, v in os.environ.items() if k != "EBPF_MCP_CONFIG"}
    params = StdioServerParameters(command=BIN, args=["serve"], env=env)
    for inv in INVESTIGATIONS:
        async with Client(params, mode="legacy") as client:
            agent, peer = Agent(client), Peer()
            started = time.monotonic()
            ours, theirs = await inv(agent, peer)
            rows.append((inv.__name__, agent.calls, agent.bytes, ours, peer.calls, peer.bytes, theirs,
                         time.monotonic() - started))
            if not ours:
                failed.append(inv.__name__)
    print(f"kernel {os.uname().release}, {time.strftime('%Y-%m-%d')}")
    print("| investigation | ebpf-mcp calls | bytes read | correct | bpftrace runs | bytes read | correct |")
    print("|---|---|---|---|---|---|---|")
    for name, c, b, ok, pc, pb, pok, _ in rows:
        print(f"| {name} | {c} | {b:,} | {'yes' if ok else 'NO'} | {pc} | {pb:,} | {'yes' if pok else 'no'} |")
    print(f"total: ebpf-mcp {sum(r[1] for r in rows)} calls, {sum(r[2] for r in rows):,} bytes; "
          f"bpftrace {sum(r[4] for r in rows)} runs, {sum(r[5] for r in rows):,} bytes; "
          f"wall {sum(r[7] for r in rows):.0f} s")
    if failed:
        sys.exit(f"ebpf-mcp answered wrongly: {', '.join(failed)}")


if __name__ == "__main__":
    asyncio.run(main())
