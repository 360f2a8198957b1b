#!/usr/bin/env python3
"""Benchmark: how fast ebpf-mcp answers "what can eBPF do on this host?".

Cold: `ebpf-mcp call info` (process start, kernel facts, exit), once probing everything
(feature probes and gadget loads: the boot's first call) and once from the probes kept for
the boot, against its peer `bpftool -j feature probe kernel`, run alternately in the same
go; wall time and peak RSS per run. Warm: `info` over MCP (Streamable HTTP, official Python SDK) against a
running server, where the probes are cached.

Run as root from the repository root, after `cargo build --release`:
    .venv/bin/python benches/info.py [--runs 15] [--calls 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

# ping is a legacy-era method; the benchmark uses a legacy session on purpose (it is the floor).
warnings.filterwarnings("ignore", message="ping is removed")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "ebpf-mcp")


def run_once(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one run of `cmd`. The RSS comes from GNU time: a
    child forked straight from this Python process would count Python's pages too."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        start = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name, *cmd],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"{cmd} failed")
        return elapsed, int(rss.read().strip().splitlines()[-1])


BOOT_CACHE = "/run/ebpf-mcp/probes.json"


def cold(runs: int) -> None:
    """Three ways, alternating: ebpf-mcp probing (the boot's first call: the cache file is
    removed before each run), ebpf-mcp answering from the boot's cache, and bpftool."""
    probing, cached, theirs = [], [], []
    for _ in range(runs):
        if os.path.exists(BOOT_CACHE):
            os.unlink(BOOT_CACHE)
        probing.append(run_once([BIN, "call", "info"]))
        cached.append(run_once([BIN, "call", "info"]))
        theirs.append(run_once(["bpftool", "-j", "feature", "probe", "kernel"]))
    b_t = statistics.median(t for t, _ in theirs)
    print(f"cold, median of {runs}:")
    for name, runs_ in (("ebpf-mcp call info, probing", probing), ("ebpf-mcp call info, boot cache", cached),
                        ("bpftool -j feature probe kernel", theirs)):
        t = statistics.median(x for x, _ in runs_)
        rss = max(r for _, r in runs_)
        print(f"  {name:34s} {t * 1000:8.1f} ms   peak RSS {rss / 1024:6.1f} MiB   {t / b_t:5.2f}x bpftool")


async def warm(calls: int) -> None:
    from mcp import Client

    err = tempfile.NamedTemporaryFile(prefix="bench-", suffix=".log", delete=False)
    # The per-identity rate limit (50/s by default) would refuse a client calling back to back.
    config = tempfile.NamedTemporaryFile("w", prefix="bench-", suffix=".yaml", delete=False)
    config.write("server:\n  rate_limit:\n    requests_per_second: 0\n")
    config.close()
    server = subprocess.Popen([BIN, "--config", config.name, "serve", "--http", "127.0.0.1:0"], stderr=err,
                              stdout=subprocess.DEVNULL)
    try:
        url = None
        for _ in range(200):
            match = re.search(r"(http://\S+/mcp)", open(err.name).read())
            if match:
                url = match.group(1)
                break
            time.sleep(0.05)
        assert url, open(err.name).read()
        async with Client(url, mode="legacy") as client:
            await client.call_tool("info", {})  # first call probes
            info, floor = [], []
            for _ in range(calls):
                start = time.perf_counter()
                result = await client.call_tool("info", {})
                info.append(time.perf_counter() - start)
                assert not result.is_error
                # The floor: a round trip that does no work (same client, same transport).
                start = time.perf_counter()
                await client.send_ping()
                floor.append(time.perf_counter() - start)
        rss_kib = int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{server.pid}/status").read()).group(1))

        def pct(xs: list[float], p: float) -> float:
            xs = sorted(xs)
            return xs[min(len(xs) - 1, int(len(xs) * p))] * 1000

        print(f"warm, {calls} calls each over HTTP, alternating (probes cached):")
        print(f"  info   p50 {pct(info, 0.5):6.2f} ms   p99 {pct(info, 0.99):6.2f} ms")
        print(f"  ping   p50 {pct(floor, 0.5):6.2f} ms   p99 {pct(floor, 0.99):6.2f} ms   (floor)")
        print(f"  ratio info / ping p50 {pct(info, 0.5) / pct(floor, 0.5):.2f}x   server RSS {rss_kib / 1024:.1f} MiB")
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the probes load BPF programs")
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} missing: run cargo build --release first")
    print(f"kernel {os.uname().release}, {os.cpu_count()} CPUs")
    cold(args.runs)
    asyncio.run(warm(args.calls))


if __name__ == "__main__":
    main()
