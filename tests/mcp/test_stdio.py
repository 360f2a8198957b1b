"""stdio specifics: stdout carries only JSON-RPC, and the server stops cleanly on end of
input, SIGTERM and SIGINT, releasing what it created."""

from __future__ import annotations

import json
import pathlib
import shlex
import signal
import subprocess
import tempfile
import time

import pytest
from mcp import Client, StdioServerParameters

from conftest import INITIALIZE, require_root, server_env

pytestmark = pytest.mark.anyio


async def test_stdout_carries_only_json_rpc(binary):
    """A whole session (both eras, debug logging on) through a tee that records the server's
    stdout: every line must be a JSON-RPC 2.0 message."""
    require_root()
    capture = pathlib.Path(tempfile.mkdtemp()) / "stdout.jsonl"
    # The server reads the client's pipe directly; tee copies what it writes.
    script = f"{shlex.quote(str(binary))} --log-level debug serve | tee {shlex.quote(str(capture))}"
    for mode in ("legacy", "auto"):
        params = StdioServerParameters(command="sh", args=["-c", script], env=server_env(RUST_LOG="debug"))
        async with Client(params, mode=mode) as client:
            await client.list_tools()
            await client.call_tool("info", {"refresh": True})
            await client.call_tool("info", {"bogus": True})
            await client.list_resources()
            await client.list_prompts()
        lines = capture.read_text().splitlines()
        assert len(lines) >= 5, lines
        for line in lines:
            message = json.loads(line)
            assert message.get("jsonrpc") == "2.0", line
            assert {"id", "method", "result", "error"} & message.keys(), line


def _start(binary: pathlib.Path) -> tuple[subprocess.Popen[bytes], pathlib.Path]:
    require_root()
    err_path = pathlib.Path(tempfile.mkdtemp()) / "stderr.log"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [str(binary), "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=server_env()
        )
    deadline = time.monotonic() + 10
    while "waiting for the client's messages" not in err_path.read_text():
        assert proc.poll() is None, err_path.read_text()
        assert time.monotonic() < deadline, err_path.read_text()
        time.sleep(0.05)
    return proc, err_path


@pytest.mark.parametrize("how", ["eof", "sigterm", "sigint"])
def test_clean_shutdown(binary, how):
    proc, err_path = _start(binary)
    # Drive a real request first, so shutdown happens mid-session.
    proc.stdin.write((json.dumps(INITIALIZE) + "\n").encode())
    proc.stdin.flush()
    reply = json.loads(proc.stdout.readline())
    assert reply["id"] == 1 and "result" in reply
    if how == "eof":
        proc.stdin.close()
    else:
        proc.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGINT)
    code = proc.wait(timeout=15)
    stderr = err_path.read_text()
    assert code == 0, stderr
    assert "released server-created kernel objects" in stderr, stderr


def test_signal_before_the_first_message_stops_cleanly(binary):
    proc, err_path = _start(binary)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0, err_path.read_text()


def _send(proc: subprocess.Popen[bytes], message: dict | str) -> None:
    line = message if isinstance(message, str) else json.dumps(message)
    proc.stdin.write((line + "\n").encode())
    proc.stdin.flush()


def test_every_line_gets_an_answer(binary):
    """Lines the SDK alone answered with silence: not JSON, nested past the parser's limit,
    over server.max_request_bytes, and a request that reuses the id of one in progress."""
    proc, err_path = _start(binary)
    try:
        _send(proc, INITIALIZE)
        assert json.loads(proc.stdout.readline())["id"] == 1
        _send(proc, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        _send(proc, "this is not json")
        assert json.loads(proc.stdout.readline())["error"]["code"] == -32700
        _send(proc, "[" * 200_000 + "]" * 200_000)
        deep = json.loads(proc.stdout.readline())
        assert deep["error"]["code"] in (-32700, -32600), deep
        _send(proc, '{"jsonrpc": "2.0", "id": 3, "method": "ping", "params": {"x": ' + "[" * 300 + "]" * 300 + "}}")
        assert json.loads(proc.stdout.readline())["error"]["code"] == -32700
        # Two requests with one id, the first still running when the second comes.
        _send(proc, {"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                     "params": {"name": "trace", "arguments": {"gadget": "exec", "duration_ms": 1500}}})
        _send(proc, {"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                     "params": {"name": "list_tracepoints", "arguments": {}}})
        answers = []
        while len(answers) < 2:
            m = json.loads(proc.stdout.readline())
            if "id" in m and "method" not in m:
                answers.append(m)
        assert [a["id"] for a in answers] == [9, 9], answers
        texts = sorted(json.dumps(a["result"]) for a in answers)
        assert any("categories" in t for t in texts) and any("exec" in t for t in texts), texts
        _send(proc, {"jsonrpc": "2.0", "id": 10, "method": "ping"})
        assert json.loads(proc.stdout.readline()) == {"jsonrpc": "2.0", "id": 10, "result": {}}
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=15) == 0, err_path.read_text()
