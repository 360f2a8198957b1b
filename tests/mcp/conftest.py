"""Shared fixtures for the MCP tests: the real ebpf-mcp binary, started over stdio or HTTP and
driven by the official Python MCP SDK. Every test also checks that the system-wide lists of
BPF programs, maps and links are back to what they were (bpftool is the independent witness).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import anyio
import pytest
from mcp import Client

ROOT = pathlib.Path(__file__).resolve().parents[2]
# The debug build scripts/test made (CARGO_TARGET_DIR when it builds elsewhere, as the
# coverage run does).
BUILD = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug"
BIN = pathlib.Path(os.environ.get("EBPF_MCP_BIN", BUILD / "ebpf-mcp"))
IN_CI = os.environ.get("CI") == "true"
WORKLOAD = pathlib.Path(os.environ.get("EBPF_MCP_WORKLOAD", BUILD / "examples" / "workload"))

# A raw 2025-11-25 initialize request, for the few tests that must speak below the SDK
# (HTTP status codes, signals mid-session).
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "ebpf-mcp-tests", "version": "0"},
    },
}


def require_root() -> None:
    """Tests that load BPF need root. Outside CI they skip with the reason; under CI=true a
    missing privilege fails the run instead, so a skip can never hide a broken machine."""
    if os.geteuid() == 0:
        return
    reason = "needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN): run the tests as root"
    if IN_CI:
        pytest.fail(f"{reason}; CI=true forbids skipping")
    pytest.skip(reason)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def binary() -> pathlib.Path:
    if not BIN.exists():
        pytest.fail(f"{BIN} not found: run `cargo build` first (scripts/test does)")
    return BIN


def server_env(**extra: str) -> dict[str, str]:
    """The environment for a server child. The SDK passes a reduced environment to stdio
    servers unless given one; pass ours so RUST_LOG, PATH and CI reach the server."""
    env = dict(os.environ)
    env.pop("EBPF_MCP_CONFIG", None)
    env.update(extra)
    return env


def _bpf_ids() -> dict[str, set[int]]:
    ids: dict[str, set[int]] = {}
    for kind in ("prog", "map", "link"):
        out = subprocess.run(
            ["bpftool", "-j", kind, "show"], capture_output=True, text=True, check=True
        ).stdout
        # An object freed while bpftool lists it appears as an error entry without an id.
        ids[kind] = {entry["id"] for entry in json.loads(out or "[]") if "id" in entry}
    return ids


@pytest.fixture(autouse=True)
def no_bpf_leaks() -> Iterator[None]:
    """Fails a test that leaves BPF programs, maps or links behind."""
    if os.geteuid() != 0:
        yield
        return
    if shutil.which("bpftool") is None:
        if IN_CI:
            pytest.fail("bpftool is missing; scripts/bootstrap installs it")
        yield
        return
    before = _bpf_ids()
    yield
    # The kernel frees a program after its last fd closes, through RCU: give it a moment.
    deadline = time.monotonic() + 5
    while True:
        after = _bpf_ids()
        leaked = {k: sorted(after[k] - before[k]) for k in after if after[k] - before[k]}
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not leaked, f"BPF objects left behind: {leaked}"


@dataclass
class HttpServer:
    url: str
    process: subprocess.Popen[bytes]
    stderr_path: pathlib.Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)


# For a module's shared server whose tests open a session per call (about six HTTP requests
# each): the tools are under test there, not admission, which test_access.py tests with its
# own limits. With the default 50 requests/s a fast run can drain the burst and get 429s.
UNLIMITED = "server:\n  rate_limit:\n    requests_per_second: 0\n"


def start_http_server(
    binary: pathlib.Path,
    *args: str,
    config: str | None = None,
    addr: str = "127.0.0.1:0",
    prefix: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> HttpServer:
    """Starts `ebpf-mcp serve --http ADDR` and waits for the URL it prints. `prefix` runs it
    through another command (`setpriv` for another user: the work directory and the
    configuration are readable by all); `env` adds to the environment."""
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="ebpf-mcp-test-"))
    workdir.chmod(0o755)
    cmd = [*prefix, str(binary)]
    if config is not None:
        cfg = workdir / "config.yaml"
        cfg.write_text(config)
        cfg.chmod(0o644)
        cmd += ["--config", str(cfg)]
    cmd += ["serve", "--http", addr, *args]
    stderr_path = workdir / "stderr.log"
    with open(stderr_path, "wb") as err:
        process = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            env={**server_env(), **(env or {})},
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        text = stderr_path.read_text(errors="replace")
        match = re.search(r"serving MCP over HTTP at (https?://\S+/mcp)", text)
        if match:
            return HttpServer(match.group(1), process, stderr_path)
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}: {text}")
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"server did not start: {stderr_path.read_text(errors='replace')}")


@pytest.fixture
def http_server(binary: pathlib.Path) -> Iterator[HttpServer]:
    require_root()
    server = start_http_server(binary)
    yield server
    code = server.stop()
    assert code == 0, f"server exited with {code}: {server.stderr()}"


async def trace_while(url: str, args: dict, action) -> dict:
    """Runs `trace` and, once the server says the gadget is attached, `action` (in a
    thread). Returns the trace's structured result."""
    ready = anyio.Event()

    async def on_log(params) -> None:
        if "tracing with" in str(params.data):
            ready.set()

    result = None
    async with Client(url, mode="legacy", logging_callback=on_log) as client:
        await client.set_logging_level("info")

        async def run() -> None:
            nonlocal result
            result = await client.call_tool("trace", args)

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            with anyio.fail_after(15):
                await ready.wait()
            await anyio.to_thread.run_sync(action)
    assert result is not None and not result.is_error, result
    return result.structured_content


def unique_marker() -> str:
    return f"ebpf-mcp-{uuid.uuid4().hex[:12]}"


@contextlib.contextmanager
def veth_namespace(subnet: int):
    """A network namespace joined to this one by a veth pair on 10.<subnet>.x.0/24:
    `emcp<tag>` here (.1), `peer0` in the namespace (.2), loopback up in both. Yields
    (namespace, host interface, host address, peer address); both go afterwards."""
    tag = uuid.uuid4().hex[:6]
    ns, host_if = f"emcp-{tag}", f"emcp{tag}"
    net = f"10.{subnet}.{int(tag[:2], 16)}"
    run = lambda *cmd: subprocess.run(cmd, check=True, capture_output=True)  # noqa: E731
    run("ip", "netns", "add", ns)
    try:
        run("ip", "link", "add", host_if, "type", "veth", "peer", "name", "peer0", "netns", ns)
        run("ip", "addr", "add", f"{net}.1/24", "dev", host_if)
        run("ip", "link", "set", host_if, "up")
        run("ip", "-n", ns, "addr", "add", f"{net}.2/24", "dev", "peer0")
        run("ip", "-n", ns, "link", "set", "peer0", "up")
        run("ip", "-n", ns, "link", "set", "lo", "up")
        yield ns, host_if, f"{net}.1", f"{net}.2"
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
