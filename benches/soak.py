#!/usr/bin/env python3
"""Soak: the server under a mixed load for hours, sampled every minute, failing on any
upward trend.

The load, from several concurrent clients over HTTP: reads (info, list_programs,
list_maps, list_links, list_tracepoints, map_dump of the server's own deployment maps),
short traces (exec, open in count mode, syscalls), background sessions (trace_start,
trace_read, trace_stop, and some left to end by themselves), deploy/undeploy cycles of a
tracepoint counter, configuration reloads (SIGHUP), and clients that go away mid-call.

Every minute the load pauses until nothing is in flight, and the server is sampled: RSS,
open descriptors, threads, the BPF programs, maps and links it holds (from its own
/proc fdinfo), and the pins under its bpffs directory. At quiescence every BPF count must
be back to its starting value, and RSS, descriptors and threads must show no upward trend:
the median of the last third of the samples may not exceed that of the first third (after
a warm-up) by more than 10% and 4 MiB (RSS) or 8 (descriptors, threads).

Run as root from the repository root after
    cargo build --release --bins --examples
with
    .venv/bin/python benches/soak.py --hours 1        # 24 where there is the time
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import pathlib
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import httpx2 as httpx
from mcp import Client

ROOT = pathlib.Path(__file__).resolve().parents[1]
REL = ROOT / "target" / "release"
BIN = pathlib.Path(os.environ.get("EBPF_MCP_BIN", REL / "ebpf-mcp"))
OBJECT = base64.b64encode((ROOT / "bpf" / "obj" / "tests" / "ok_tracepoint.bpf.o").read_bytes()).decode()


class Server:
    def __init__(self) -> None:
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="ebpf-mcp-soak-"))
        self.bpffs = pathlib.Path(f"/sys/fs/bpf/ebpf-mcp-soak-{uuid.uuid4().hex[:6]}")
        self.config = self.dir / "config.yaml"
        self.config.write_text(f"""
server:
  rate_limit:
    requests_per_second: 0
security:
  audit_log: "{self.dir}/audit.log"
ebpf:
  bpffs_dir: "{self.bpffs}"
tools:
  deploy:
    enabled: true
    allowed_types: ["tracepoint"]
    allowed_attach_points: ["tracepoint:syscalls:*"]
""")
        self.err = open(self.dir / "stderr.log", "wb")
        self.proc = subprocess.Popen([str(BIN), "--config", str(self.config), "serve", "--http", "127.0.0.1:0"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.err)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            m = re.search(r"serving MCP over HTTP at (http://\S+/mcp)", (self.dir / "stderr.log").read_text(errors="replace"))
            if m:
                self.url = m.group(1)
                return
            time.sleep(0.05)
        raise SystemExit("server did not start")

    def sample(self) -> dict:
        pid = self.proc.pid
        status = open(f"/proc/{pid}/status").read()
        rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) * 1024
        threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))
        fds = os.listdir(f"/proc/{pid}/fd")
        bpf = {"prog": 0, "map": 0, "link": 0}
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            for kind, name in (("prog", "bpf-prog"), ("map", "bpf-map"), ("link", "bpf_link")):
                if name in target or (kind == "link" and "bpf-link" in target):
                    bpf[kind] += 1
        pins = sum(len(files) for _, _, files in os.walk(self.bpffs)) if self.bpffs.exists() else 0
        return {"rss": rss, "fds": len(fds), "threads": threads, **bpf, "pins": pins}

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


class Load:
    """Clients doing a bit of everything until told to pause or stop."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.running = asyncio.Event()
        self.running.set()
        self.in_flight = 0
        self.calls = 0
        self.errors: list[str] = []
        self.stopped = False

    async def act(self, client: Client, tool: str, args: dict, held: bool = False) -> dict | None:
        """One call. `held`: part of a sequence that already counts as in flight (see
        deployer), so it must not wait for a pause to end."""
        if not held:
            await self.running.wait()
        self.in_flight += 1
        try:
            r = await client.call_tool(tool, args)
            self.calls += 1
            if r.is_error and r.structured_content.get("code") not in ("TOO_MANY_SESSIONS", "TOO_MANY_TRACES"):
                self.errors.append(f"{tool}: {r.structured_content.get('code')}")
            return r.structured_content
        finally:
            self.in_flight -= 1

    async def reader(self) -> None:
        while not self.stopped:
            async with Client(self.server.url, mode="legacy") as c:
                for _ in range(20):
                    tool, args = random.choice([
                        ("info", {}), ("list_programs", {}), ("list_maps", {}), ("list_links", {}),
                        ("list_tracepoints", {"pattern": "sched:*"}), ("list_programs", {"sample_ms": 200}),
                    ])
                    await self.act(c, tool, args)

    async def tracer(self) -> None:
        while not self.stopped:
            async with Client(self.server.url, mode="legacy") as c:
                for _ in range(5):
                    args = random.choice([
                        {"gadget": "exec", "duration_ms": 500},
                        {"gadget": "open", "mode": "count", "duration_ms": 500},
                        {"gadget": "syscalls", "duration_ms": 500},
                    ])
                    await self.act(c, "trace", args)

    async def sessions(self) -> None:
        while not self.stopped:
            async with Client(self.server.url, mode="legacy") as c:
                s = await self.act(c, "trace_start", {"gadget": "exec", "duration_ms": 3000})
                if s and "session_id" in s:
                    await asyncio.sleep(0.5)
                    await self.act(c, "trace_read", {"session_id": s["session_id"]})
                    if random.random() < 0.5:
                        await self.act(c, "trace_stop", {"session_id": s["session_id"]})
            await asyncio.sleep(1)

    async def deployer(self) -> None:
        while not self.stopped:
            async with Client(self.server.url, mode="legacy") as c:
                # Deploy to undeploy is one unit: a pause between them would find the
                # deployment held, as it is meant to be.
                await self.running.wait()
                self.in_flight += 1
                try:
                    d = await self.act(c, "deploy", {"object": OBJECT, "ttl_seconds": 60}, held=True)
                    if d and "deployment_id" in d:
                        await self.act(c, "map_dump", {"map_id": d["maps"][0]["id"]}, held=True)
                        await self.act(c, "undeploy", {"deployment_id": d["deployment_id"]}, held=True)
                finally:
                    self.in_flight -= 1
            await asyncio.sleep(0.5)

    async def leaver(self) -> None:
        """Clients that give up mid-call: the call must be released all the same."""
        while not self.stopped:
            await self.running.wait()
            self.in_flight += 1
            try:
                async with httpx.AsyncClient(timeout=1.0) as h:
                    init = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                            "params": {"name": "trace", "arguments": {"gadget": "exec", "duration_ms": 20000}}}
                    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
                               "Mcp-Protocol-Version": "2026-07-28"}
                    try:
                        await h.post(self.server.url, json=init, headers=headers)
                    except httpx.HTTPError:
                        pass
            finally:
                self.in_flight -= 1
            await asyncio.sleep(3)

    async def reloader(self) -> None:
        while not self.stopped:
            await asyncio.sleep(20)
            await self.running.wait()
            self.server.proc.send_signal(signal.SIGHUP)

    async def pause(self) -> None:
        self.running.clear()
        deadline = time.monotonic() + 60
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        # Sessions left running end by themselves; calls the leavers started are cancelled.
        await asyncio.sleep(4)

    def resume(self) -> None:
        self.running.set()


def trend_failures(samples: list[dict]) -> list[str]:
    warm = samples[max(1, len(samples) // 6):]
    if len(warm) < 3:
        return []
    third = max(1, len(warm) // 3)
    out = []
    for key, rel, abs_ in (("rss", 0.10, 4 * 2**20), ("fds", 0.10, 8), ("threads", 0.10, 8)):
        first = statistics.median(s[key] for s in warm[:third])
        last = statistics.median(s[key] for s in warm[-third:])
        if last > first * (1 + rel) and last - first > abs_:
            out.append(f"{key} rose from {first} to {last}")
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--every", type=float, default=60.0, help="seconds between samples")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    server = Server()
    load = Load(server)
    workers = [asyncio.create_task(w()) for w in (
        load.reader, load.reader, load.tracer, load.sessions, load.deployer, load.leaver, load.reloader)]
    samples = []
    started = time.monotonic()
    end = started + args.hours * 3600
    try:
        await load.pause()
        baseline = server.sample()
        samples.append(baseline)
        load.resume()
        print(f"{'min':>5} {'rss MiB':>8} {'fds':>5} {'threads':>7} {'progs':>5} {'maps':>5} {'links':>5} {'pins':>4} {'calls':>7}")
        while time.monotonic() < end:
            await asyncio.sleep(args.every)
            await load.pause()
            s = server.sample()
            samples.append(s)
            load.resume()
            mins = (time.monotonic() - started) / 60
            print(f"{mins:5.0f} {s['rss'] / 2**20:8.1f} {s['fds']:5} {s['threads']:7} {s['prog']:5} {s['map']:5} "
                  f"{s['link']:5} {s['pins']:4} {load.calls:7}", flush=True)
            leaked = {k: s[k] for k in ("prog", "map", "link", "pins") if s[k] > baseline[k]}
            if leaked:
                raise SystemExit(f"BPF objects or pins held at quiescence: {leaked} (baseline {baseline})")
            if server.proc.poll() is not None:
                raise SystemExit("the server died")
    finally:
        load.stopped = True
        load.resume()
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        server.stop()
    failures = trend_failures(samples)
    errors = sorted(set(load.errors))
    print(f"{load.calls} calls in {(time.monotonic() - started) / 3600:.2f} h; errors seen: {errors or 'none'}")
    first, last = samples[1] if len(samples) > 1 else samples[0], samples[-1]
    print(f"RSS {first['rss'] / 2**20:.1f} -> {last['rss'] / 2**20:.1f} MiB, fds {first['fds']} -> {last['fds']}, "
          f"threads {first['threads']} -> {last['threads']}")
    if failures:
        sys.exit("upward trend: " + "; ".join(failures))
    print("no upward trend")


if __name__ == "__main__":
    asyncio.run(main())
