"""MCP over a unix socket: the official SDK (through a stdin/stdout bridge) as root and as an
unprivileged user the test switches to; SO_PEERCRED decides who gets in and with which tiers."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from mcp import Client, StdioServerParameters

from conftest import require_root, server_env

pytestmark = pytest.mark.anyio

BRIDGE = pathlib.Path(__file__).with_name("unix_bridge.py")
NOBODY = 65534


class UnixServer:
    def __init__(self, binary, access: str = "", server: str = ""):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="ebpf-mcp-unix-"))
        os.chmod(self.dir, 0o755)  # the unprivileged client must reach the socket
        self.sock = self.dir / "mcp.sock"
        self.audit = self.dir / "audit.log"
        (self.dir / "config.yaml").write_text(
            f'security:\n  audit_log: "{self.audit}"\n  access_control:\n{access}\n'
            + (f"server:\n{server}\n" if server else "")
        )
        self.log = self.dir / "stderr.log"
        with open(self.log, "wb") as err:
            self.process = subprocess.Popen(
                [str(binary), "--config", str(self.dir / "config.yaml"), "serve", "--unix", str(self.sock)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=server_env(),
            )
        deadline = time.monotonic() + 20
        while "serving MCP on unix socket" not in self.log.read_text():
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)

    def client(self, uid: int | None = None) -> Client:
        cmd = [sys.executable, str(BRIDGE), str(self.sock)]
        if uid is not None:
            cmd = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *cmd]
        return Client(StdioServerParameters(command=cmd[0], args=cmd[1:], env=server_env()))

    def raw(self, uid: int, line: str) -> subprocess.CompletedProcess:
        cmd = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", sys.executable, str(BRIDGE), str(self.sock)]
        return subprocess.run(cmd, input=line, capture_output=True, text=True, timeout=30, env=server_env())

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=20) == 0, self.log.read_text()
        assert not self.sock.exists()  # the socket file goes with the server


INIT = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}) + "\n"


@pytest.fixture
def need_setpriv():
    require_root()
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is needed to switch users")


async def test_root_is_served_with_every_tier(binary, need_setpriv):
    s = UnixServer(binary)
    try:
        assert stat.S_IMODE(os.stat(s.sock).st_mode) == 0o660
        async with s.client() as c:
            names = {t.name for t in (await c.list_tools()).tools}
            assert {"info", "trace", "list_tracepoints"} <= names
            assert not (await c.call_tool("info", {})).is_error
        line = json.loads(s.audit.read_text().splitlines()[-1])
        assert line["transport"] == "unix" and line["identity"] == "uid:0(root)"
    finally:
        s.stop()


def test_a_user_the_socket_mode_excludes_cannot_connect(binary, need_setpriv):
    s = UnixServer(binary)
    try:
        r = s.raw(NOBODY, INIT)
        assert r.returncode == 3 and "Permission denied" in r.stderr
    finally:
        s.stop()


def test_a_user_who_can_connect_but_is_not_permitted_is_refused(binary, need_setpriv):
    s = UnixServer(binary)
    try:
        os.chmod(s.sock, 0o666)  # let the kernel through: the peer check must stop it
        r = s.raw(NOBODY, INIT)
        reply = json.loads(r.stdout.splitlines()[0])
        assert reply["error"]["data"]["code"] == "USER_NOT_PERMITTED"
        assert f"uid:{NOBODY}" in reply["error"]["message"]
        assert "permitted_users" in reply["error"]["message"]
        assert "unix socket connection refused" in s.log.read_text()
    finally:
        s.stop()


async def test_a_permitted_user_gets_the_tiers_of_its_mapping(binary, need_setpriv):
    access = f'    permitted_users: ["{NOBODY}"]\n    user_tiers: {{"{NOBODY}": [read]}}'
    s = UnixServer(binary, access)
    try:
        os.chmod(s.sock, 0o666)
        async with s.client(uid=NOBODY) as c:
            names = {t.name for t in (await c.list_tools()).tools}
            assert "trace" not in names and "info" in names
            refused = await c.call_tool("trace", {"gadget": "exec", "duration_ms": 100})
            assert refused.is_error and refused.structured_content["code"] == "TIER_NOT_PERMITTED"
            assert not (await c.call_tool("list_links", {})).is_error
        identities = {json.loads(l)["identity"] for l in s.audit.read_text().splitlines()}
        assert any(i.startswith(f"uid:{NOBODY}") for i in identities)
    finally:
        s.stop()


def test_a_live_socket_is_not_taken_over(binary, need_setpriv):
    s = UnixServer(binary)
    try:
        second = subprocess.run(
            [str(binary), "serve", "--unix", str(s.sock)], capture_output=True, text=True, timeout=30, env=server_env()
        )
        assert second.returncode == 2 and "another server is listening" in second.stderr
    finally:
        s.stop()


def test_connections_over_the_cap_are_answered_and_closed_at_once(binary):
    """At server.max_connections the unix socket answers each newcomer with
    TOO_MANY_CONNECTIONS and closes it before accepting the next: a flood that never reads
    its answers holds no descriptors in the server, and once the held connections go a
    client is served again."""
    require_root()
    cap = 4
    s = UnixServer(binary, server=f"  max_connections: {cap}")
    held, flood = [], []
    try:
        pid = s.process.pid

        def fds() -> int:
            return len(os.listdir(f"/proc/{pid}/fd"))

        before = fds()
        for _ in range(cap):
            c = socket.socket(socket.AF_UNIX)
            c.connect(str(s.sock))
            held.append(c)
        deadline = time.monotonic() + 10
        while fds() < before + cap:  # the held connections are accepted
            assert time.monotonic() < deadline, (fds(), before)
            time.sleep(0.05)
        baseline = fds()
        seen: list[int] = []
        done = threading.Event()

        def sample():
            while not done.is_set():
                seen.append(fds())

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            for _ in range(300):
                c = socket.socket(socket.AF_UNIX)
                c.connect(str(s.sock))
                flood.append(c)
            time.sleep(0.5)
        finally:
            done.set()
            sampler.join()
        assert max(seen) <= baseline + 2, (max(seen), baseline)
        for c in flood[:: 50]:
            c.settimeout(10)
            answer = b""
            while chunk := c.recv(4096):
                answer += chunk
            error = json.loads(answer)["error"]
            assert error["data"]["code"] == "TOO_MANY_CONNECTIONS" and "server.max_connections" in error["message"], error
        for c in held + flood:
            c.close()
        held, flood = [], []
        deadline = time.monotonic() + 10
        while True:
            r = subprocess.run([sys.executable, str(BRIDGE), str(s.sock)], input=INIT, capture_output=True,
                               text=True, timeout=30, env=server_env())
            if '"result"' in r.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert json.loads(r.stdout.splitlines()[0])["result"]["serverInfo"], r
    finally:
        for c in held + flood:
            c.close()
        s.stop()
