#!/usr/bin/env python3
"""Benchmark: map_dump and list_programs against their peers, in one run.

- A BTF hash map of 1,000,000 entries (u32 key, struct { u64 packets; u64 bytes; } value),
  filled by examples/fixture.rs. Full decoded dump to JSON lines (`ebpf-mcp call map_dump
  ... --output jsonl`) against `bpftool -j map dump`, and against the floor: a bare batch
  lookup loop printing numbers (examples/batch_floor.rs). Top-100 by bytes over all entries,
  with its peak RSS.
- list_programs with 200 extra programs loaded, over MCP against a running server (p50 of
  the call minus the p50 of a no-op ping on the same session is the in-process time), and
  `bpftool -j prog show` as the peer.

Run as root from the repository root after
    cargo build --release --bins --examples
with
    .venv/bin/python benches/inspection.py [--runs 7]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

warnings.filterwarnings("ignore", message="ping is removed")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "target", "release")
BIN = os.path.join(REL, "ebpf-mcp")
FIXTURE = os.path.join(REL, "examples", "fixture")
FLOOR = os.path.join(REL, "examples", "batch_floor")
CONFIG = """
server:
  max_result_bytes: 2000000000
  request_timeout: "300s"
tools:
  map_dump:
    max_entries: 1000000
    timeout: "300s"
"""


def run_once(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one run, output discarded. The RSS comes from GNU
    time: a child forked straight from this Python process would count Python's pages too."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        start = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name, *cmd],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"failed: {cmd}")
        return elapsed, int(rss.read().strip().splitlines()[-1])


def measure(runs: int, cmds: dict[str, list[str]]) -> dict[str, tuple[float, int]]:
    """Median wall time and max peak RSS per command, the commands alternating."""
    samples: dict[str, list[tuple[float, int]]] = {k: [] for k in cmds}
    for _ in range(runs):
        for name, cmd in cmds.items():
            samples[name].append(run_once(cmd))
    return {k: (statistics.median(t for t, _ in v), max(r for _, r in v)) for k, v in samples.items()}


def start_fixture(big: int, programs: int) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([FIXTURE, "--big", str(big), "--programs", str(programs)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    info = json.loads(proc.stdout.readline())
    return proc, info


def stop(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    proc.wait(timeout=60)


async def list_programs_latency(calls: int) -> tuple[float, float, int, float]:
    from mcp import Client

    err = tempfile.NamedTemporaryFile(prefix="bench-", suffix=".log", delete=False)
    server = subprocess.Popen([BIN, "serve", "--http", "127.0.0.1:0"], stderr=err, stdout=subprocess.DEVNULL)
    try:
        url = None
        for _ in range(200):
            m = re.search(r"(http://\S+/mcp)", open(err.name).read())
            if m:
                url = m.group(1)
                break
            time.sleep(0.05)
        async with Client(url, mode="legacy") as client:
            listed, ping = [], []
            count = 0
            for _ in range(calls):
                t = time.perf_counter()
                r = await client.call_tool("list_programs", {"limit": 1000})
                listed.append(time.perf_counter() - t)
                count = r.structured_content["total"]
                t = time.perf_counter()
                await client.send_ping()
                ping.append(time.perf_counter() - t)
    finally:
        server.terminate()
        server.wait(timeout=10)
    # The server logs each call's own duration: the in-process time, without the client.
    inside = [int(m) for m in re.findall(r'tool="list_programs" outcome="ok" elapsed_ms=(\d+)', open(err.name).read())]
    return statistics.median(listed) * 1000, statistics.median(ping) * 1000, count, statistics.median(inside)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    for path in (BIN, FIXTURE, FLOOR):
        if not os.path.exists(path):
            sys.exit(f"{path} missing: cargo build --release --bins --examples")
    cfg = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    cfg.write(CONFIG)
    cfg.close()
    print(f"kernel {os.uname().release}, {os.cpu_count()} CPUs")

    fixture, info = start_fixture(1_000_000, 200)
    try:
        mid = str(info["maps"]["fixture_big"])
        full = measure(args.runs, {
            "floor": [FLOOR, mid],
            "bpftool": ["bpftool", "-j", "map", "dump", "id", mid],
            "ebpf-mcp": [BIN, "--config", cfg.name, "call", "map_dump",
                         json.dumps({"map_id": int(mid), "max_entries": 1_000_000}), "--output", "jsonl"],
            "top100": [BIN, "--config", cfg.name, "call", "map_dump",
                       json.dumps({"map_id": int(mid), "sort_by": "bytes", "max_entries": 100}), "--output", "jsonl"],
        })
        print(f"map_dump, 1,000,000 entries, median of {args.runs} (wall, peak RSS):")
        for name, (t, rss) in full.items():
            print(f"  {name:10s} {t * 1000:8.0f} ms  {rss / 1024:7.1f} MiB")
        f, b, o, top = (full[k][0] for k in ("floor", "bpftool", "ebpf-mcp", "top100"))
        print(f"  full dump: {b / o:.1f}x faster than bpftool, {o / f:.2f}x the floor")
        print(f"  top-100: {top / f:.2f}x the floor's full read, peak RSS {full['top100'][1] / 1024:.1f} MiB")

        peer = measure(args.runs, {"bpftool prog show": ["bpftool", "-j", "prog", "show"]})
        listed, ping, count, inside = asyncio.run(list_programs_latency(50))
        print(f"list_programs with {count} programs loaded:")
        print(f"  in-process (server log) median {inside:.0f} ms; over MCP p50 {listed:.1f} ms (ping {ping:.1f} ms)")
        print(f"  bpftool -j prog show: {peer['bpftool prog show'][0] * 1000:.1f} ms (process, median)")
    finally:
        stop(fixture)


if __name__ == "__main__":
    main()
