#!/usr/bin/env python3
"""Benchmark: ebpf-mcp under load — 32 MCP clients (official Python SDK, Streamable HTTP,
one session each) making mixed calls for 60 s against one server.

Reports calls per second, latency percentiles per tool, every error (tool errors by code and
protocol errors, which must be zero), and the server's RSS before and after. The peer, in
the same go and under the same load: `bpftool -j prog show` run back to back, against our
`list_programs` (the same question: every program on the host).

The server runs with its defaults except `server.rate_limit.requests_per_second: 0` (all
anonymous clients share one identity, whose default budget is 50 requests/s) and
`tools.trace.max_concurrent: 8`.

Run as root from the repository root, after `cargo build --release --examples`:
    .venv/bin/python benches/load.py [--clients 32] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)  # the SDK warns on every session close answered with 202

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "ebpf-mcp")
# Holds a few maps and programs (examples/fixture.rs), so the host has something to list.
FIXTURE = os.path.join(ROOT, "target", "release", "examples", "fixture")

# (tool, arguments, weight): mostly reads, as agents make them, and some short traces.
MIX = [
    ("info", {}, 20),
    ("list_programs", {}, 20),
    ("list_maps", {}, 15),
    ("list_links", {}, 10),
    ("list_tracepoints", {"pattern": "sched:*"}, 10),
    ("map_dump", None, 15),  # the fixture's 5000-entry hash map, first 100 entries
    ("trace", {"gadget": "syscalls", "duration_ms": 250}, 10),
]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def start_server(workdir: str) -> tuple[subprocess.Popen, str]:
    cfg = os.path.join(workdir, "config.yaml")
    with open(cfg, "w") as f:
        f.write(
            f'server:\n  rate_limit:\n    requests_per_second: 0\n'
            f'security:\n  audit_log: "{workdir}/audit.log"\n'
            f'tools:\n  trace:\n    max_concurrent: 8\n'
        )
    err = open(os.path.join(workdir, "stderr.log"), "wb")
    proc = subprocess.Popen([BIN, "--config", cfg, "serve", "--http", "127.0.0.1:0"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        text = open(os.path.join(workdir, "stderr.log"), errors="replace").read()
        m = re.search(r"serving MCP over HTTP at (http://\S+/mcp)", text)
        if m:
            return proc, m.group(1)
        time.sleep(0.05)
    sys.exit("server did not start")


async def client_loop(url: str, stop_at: float, results: dict, errors: dict, map_id: int) -> None:
    from mcp import Client

    weights = [w for _, _, w in MIX]
    try:
        async with Client(url, mode="legacy") as c:
            while time.monotonic() < stop_at:
                tool, args, _ = random.choices(MIX, weights=weights)[0]
                if args is None:
                    args = {"map_id": map_id, "max_entries": 100}
                t0 = time.perf_counter()
                try:
                    r = await c.call_tool(tool, args)
                except Exception as e:  # a protocol error: must not happen
                    errors[f"protocol:{type(e).__name__}"] = errors.get(f"protocol:{type(e).__name__}", 0) + 1
                    continue
                dt = time.perf_counter() - t0
                if r.is_error:
                    code = (r.structured_content or {}).get("code", "?")
                    errors[f"{tool}:{code}"] = errors.get(f"{tool}:{code}", 0) + 1
                else:
                    results.setdefault(tool, []).append(dt)
    except Exception as e:
        errors[f"session:{type(e).__name__}"] = errors.get(f"session:{type(e).__name__}", 0) + 1


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def sample_rss(pid: int, stop_at: float, out: list) -> None:
    """The server's RSS every 10 s: growth that levels off is caches filling; growth that
    does not is a leak."""
    start = time.monotonic()
    while time.monotonic() < stop_at:
        await asyncio.sleep(10)
        out.append((round(time.monotonic() - start), rss_kib(pid)))


def bpftool_during(stop_at: float, out: list) -> None:
    while time.monotonic() < stop_at:
        t0 = time.perf_counter()
        subprocess.run(["bpftool", "-j", "prog", "show"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out.append(time.perf_counter() - t0)


def pct(xs: list, p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1000


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60)
    a = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="ebpf-mcp-load-")
    fixture = subprocess.Popen([FIXTURE], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    map_id = json.loads(fixture.stdout.readline())["maps"]["fixture_big"]
    proc, url = start_server(workdir)
    try:
        from mcp import Client

        async with Client(url, mode="legacy") as c:  # warm up: probes, BTF
            await c.call_tool("info", {})
        rss_before = rss_kib(proc.pid)
        cpu_before = cpu_seconds(proc.pid)
        rss_curve: list = []
        results: dict = {}
        errors: dict = {}
        bpftool: list = []
        start = time.monotonic()
        stop_at = start + a.seconds
        peer = asyncio.get_running_loop().run_in_executor(None, bpftool_during, stop_at, bpftool)
        await asyncio.gather(
            sample_rss(proc.pid, stop_at, rss_curve),
            *(client_loop(url, stop_at, results, errors, map_id) for _ in range(a.clients)),
        )
        await peer
        elapsed = time.monotonic() - start
        rss_after = rss_kib(proc.pid)
        server_cpu = cpu_seconds(proc.pid) - cpu_before
    finally:
        proc.terminate()
        code = proc.wait(timeout=30)
        fixture.stdin.close()
        fixture.wait(timeout=30)
    total = sum(len(v) for v in results.values())
    protocol = sum(n for k, n in errors.items() if k.startswith(("protocol:", "session:")))
    print(f"{a.clients} clients, {elapsed:.0f} s: {total} successful calls ({total / elapsed:.0f}/s), "
          f"protocol errors {protocol}, server exit {code}")
    print(f"{'tool':<18}{'calls':>7}{'p50 ms':>9}{'p99 ms':>9}")
    for tool, xs in sorted(results.items()):
        print(f"{tool:<18}{len(xs):>7}{pct(xs, 50):>9.1f}{pct(xs, 99):>9.1f}")
    print(f"tool errors: {dict(sorted(errors.items())) or 'none'}")
    print(f"server CPU: {server_cpu:.1f} s in {elapsed:.0f} s ({server_cpu / elapsed * 100:.0f}% of one core), "
          f"{server_cpu / max(total, 1) * 1000:.2f} ms per call")
    print(f"server RSS: {rss_before / 1024:.1f} MiB after warm-up, {rss_after / 1024:.1f} MiB at the end "
          f"(+{(rss_after - rss_before) / 1024:.1f} MiB); every 10 s: "
          + ", ".join(f"{t}s {k / 1024:.0f}" for t, k in rss_curve))
    if bpftool and results.get("list_programs"):
        ours = statistics.median(results["list_programs"]) * 1000
        theirs = statistics.median(bpftool) * 1000
        print(f"under the same load: list_programs p50 {ours:.1f} ms vs bpftool -j prog show p50 "
              f"{theirs:.1f} ms ({len(bpftool)} runs): {ours / theirs:.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
