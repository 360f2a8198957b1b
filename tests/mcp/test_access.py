"""Identity and access control, against the real server: bearer tokens on HTTP (401 for a
missing, wrong or expired token, 403 for a tool outside the token's tiers, tools/list showing
only what a token may call), sessions bound to their identity, token reload on SIGHUP, secrets
never logged, non-loopback binds only with tokens, and local users' tiers on stdio."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import stat
import subprocess
import tempfile
import time

import httpx2 as httpx
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from conftest import INITIALIZE as INIT
from conftest import require_root, server_env, start_http_server

pytestmark = pytest.mark.anyio

HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
READ_TOOLS = {"info", "list_programs", "list_maps", "list_links", "map_dump", "map_lookup", "list_tracepoints", "list_functions", "process_info"}
TRACE_TOOLS = {"trace", "trace_start", "trace_read", "trace_stop"}
DEPLOY_TOOLS = {"deploy", "undeploy", "list_deployments"}


def new_token(binary, name: str, tiers: str, *extra: str) -> tuple[str, str]:
    """`ebpf-mcp token new`: the secret and the tokens-file entry it prints."""
    out = subprocess.run(
        [str(binary), "token", "new", "--id", name, "--tiers", tiers, *extra],
        capture_output=True, text=True, check=True, env=server_env(),
    ).stdout
    secret = next(l.split("Bearer ", 1)[1] for l in out.splitlines() if "Bearer " in l)
    entry = next(l for l in out.splitlines() if l.strip().startswith("- {id:"))
    return secret.strip(), entry


class TokenServer:
    """An HTTP server with a tokens file: `reader` (read), `tracer` (read, trace, deploy),
    `old` (expired)."""

    def __init__(self, binary, extra_config: str = "", bind: str | None = None):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="ebpf-mcp-access-"))
        self.binary = binary
        self.reader, reader_line = new_token(binary, "reader", "read")
        self.tracer, tracer_line = new_token(binary, "tracer", "read,trace,deploy")
        self.old, old_line = new_token(binary, "old", "read", "--expires-in", "1s")
        self.tokens = self.dir / "tokens.yaml"
        self.tokens.write_text(f"tokens:\n{reader_line}\n{tracer_line}\n{old_line}\n")
        self.audit = self.dir / "audit.log"
        config = f"""
security:
  audit_log: "{self.audit}"
  access_control:
    tokens_file: "{self.tokens}"
tools:
  deploy:
    enabled: true
server:
  max_request_bytes: 65536
{extra_config}"""
        args = ("--log-level", "trace")
        self.server = start_http_server(binary, *args, config=config)
        self.url = self.server.url

    def close(self) -> None:
        code = self.server.stop()
        assert code == 0, self.server.stderr()

    def audit_lines(self) -> list[dict]:
        return [json.loads(l) for l in self.audit.read_text().splitlines()]


@pytest.fixture
def tokens(binary):
    require_root()
    server = TokenServer(binary)
    yield server
    server.close()


def client(url: str, secret: str | None) -> Client:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    return Client(streamable_http_client(url, http_client=create_mcp_http_client(headers=headers)), mode="legacy")


def post(url: str, body: dict, secret: str | None = None, session: str | None = None) -> httpx.Response:
    headers = dict(HEADERS)
    if secret is not None:
        headers["Authorization"] = f"Bearer {secret}"
    if session is not None:
        headers["Mcp-Session-Id"] = session
        headers["Mcp-Protocol-Version"] = "2025-11-25"
    return httpx.post(url, headers=headers, json=body, timeout=30)


def open_session(url: str, secret: str | None) -> str:
    r = post(url, INIT, secret)
    assert r.status_code == 200, r.text
    sid = r.headers["mcp-session-id"]
    note = post(url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, secret, sid)
    assert note.status_code in (200, 202), note.text
    return sid


def test_requests_without_a_valid_token_get_401(tokens):
    import time

    time.sleep(1.2)  # the `old` token's second runs out
    for secret, reason in [(None, "missing"), ("emcp_not-a-token", "invalid"), (tokens.old, "expired")]:
        r = post(tokens.url, INIT, secret)
        assert r.status_code == 401, (reason, r.status_code, r.text)
        challenge = r.headers["www-authenticate"]
        assert challenge.startswith("Bearer realm=\"ebpf-mcp\"")
        assert r.json()["reason"] == reason
        if secret is not None:
            assert 'error="invalid_token"' in challenge
    # Not a bearer header at all.
    r = httpx.post(tokens.url, headers={**HEADERS, "Authorization": f"Basic {tokens.reader}"}, json=INIT, timeout=30)
    assert r.status_code == 401 and r.json()["reason"] == "malformed"
    # GET and DELETE are gated too.
    assert httpx.get(tokens.url, headers=HEADERS, timeout=30).status_code == 401


async def test_a_read_token_sees_and_calls_only_read_tools(tokens):
    async with client(tokens.url, tokens.reader) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        assert names == READ_TOOLS
        info = await c.call_tool("info", {})
        assert not info.is_error
    async with client(tokens.url, tokens.tracer) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        assert names == READ_TOOLS | TRACE_TOOLS | DEPLOY_TOOLS


def test_a_call_outside_the_tokens_tiers_is_403_and_audited(tokens):
    sid = open_session(tokens.url, tokens.reader)
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "trace", "arguments": {"gadget": "exec", "duration_ms": 100}}}
    r = post(tokens.url, call, tokens.reader, sid)
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["id"] == 7
    assert body["error"]["data"]["code"] == "TIER_NOT_PERMITTED"
    assert "trace tier" in body["error"]["message"]
    refused = [l for l in tokens.audit_lines() if l["tool"] == "trace"]
    assert len(refused) == 1
    assert refused[0]["identity"] == "token:reader"
    assert refused[0]["outcome"] == "error" and refused[0]["error_code"] == "TIER_NOT_PERMITTED"
    # A read call in the same session works and is attributed to the token.
    ok = post(tokens.url, {"jsonrpc": "2.0", "id": 8, "method": "tools/call",
                           "params": {"name": "list_links", "arguments": {}}}, tokens.reader, sid)
    assert ok.status_code == 200, ok.text
    assert any(l["tool"] == "list_links" and l["identity"] == "token:reader" for l in tokens.audit_lines())


def test_a_session_is_usable_only_by_the_token_that_opened_it(tokens):
    sid = open_session(tokens.url, tokens.tracer)
    call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "info", "arguments": {}}}
    r = post(tokens.url, call, tokens.reader, sid)
    assert r.status_code == 403
    assert r.json()["error"]["data"]["code"] == "SESSION_NOT_YOURS"
    assert post(tokens.url, call, tokens.tracer, sid).status_code == 200


def test_bodies_over_the_limit_get_413(tokens):
    big = {**INIT, "params": {**INIT["params"], "padding": "x" * 70_000}}
    r = post(tokens.url, big, tokens.reader)
    assert r.status_code == 413
    assert "max_request_bytes" in r.json()["message"]


async def test_tokens_reload_on_sighup_without_dropping_the_server(tokens):
    # A new token appended by the command line starts working after SIGHUP...
    added = subprocess.run(
        [str(tokens.binary), "token", "new", "--id", "later", "--tiers", "read", "--append", str(tokens.tokens)],
        capture_output=True, text=True, check=True, env=server_env(),
    )
    later = added.stdout.strip()
    assert stat.S_IMODE(os.stat(tokens.tokens).st_mode) == 0o600
    assert post(tokens.url, INIT, later).status_code == 401
    # ...and a removed one stops.
    lines = [l for l in tokens.tokens.read_text().splitlines() if "id: tracer" not in l]
    tokens.tokens.write_text("\n".join(lines) + "\n")
    tokens.server.process.send_signal(signal.SIGHUP)
    import time

    deadline = time.monotonic() + 10
    while post(tokens.url, INIT, later).status_code != 200:
        assert time.monotonic() < deadline, tokens.server.stderr()
        time.sleep(0.1)
    assert post(tokens.url, INIT, tokens.tracer).status_code == 401
    async with client(tokens.url, tokens.reader) as c:
        assert not (await c.call_tool("info", {})).is_error
    # A broken file leaves the tokens in effect as they were.
    tokens.tokens.write_text("tokens: [broken\n")
    tokens.server.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "tokens file not reloaded" not in tokens.server.stderr():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert post(tokens.url, INIT, later).status_code == 200


def test_secrets_never_reach_the_logs(tokens):
    open_session(tokens.url, tokens.tracer)
    post(tokens.url, INIT, "emcp_wrong-secret-value")
    post(tokens.url, INIT, tokens.reader)
    logs = tokens.server.stderr() + tokens.audit.read_text()
    for secret in (tokens.reader, tokens.tracer, "emcp_wrong-secret-value"):
        assert secret not in logs
    assert "authentication" in logs  # the refusal itself is logged, with its reason


def test_non_loopback_binds_are_allowed_with_tokens(binary):
    require_root()
    d = pathlib.Path(tempfile.mkdtemp(prefix="ebpf-mcp-access-"))
    secret, line = new_token(binary, "remote", "read")
    (d / "tokens.yaml").write_text(f"tokens:\n{line}\n")
    server = start_http_server(
        binary,
        config=f'security:\n  audit_log: "{d}/audit.log"\n  access_control:\n    tokens_file: "{d}/tokens.yaml"\n',
        addr="0.0.0.0:0",
    )
    try:
        assert server.url.startswith("http://0.0.0.0:")
        url = server.url.replace("0.0.0.0", "127.0.0.1")
        assert post(url, INIT).status_code == 401
        assert post(url, INIT, secret).status_code == 200
    finally:
        assert server.stop(timeout=20) == 0


def test_a_broken_tokens_file_stops_the_start_with_the_line(binary):
    d = pathlib.Path(tempfile.mkdtemp(prefix="ebpf-mcp-access-"))
    (d / "tokens.yaml").write_text('tokens:\n  - {id: a, sha256: "nothex", tiers: [read]}\n')
    (d / "config.yaml").write_text(f'security:\n  access_control:\n    tokens_file: "{d}/tokens.yaml"\n')
    proc = subprocess.run(
        [str(binary), "--config", str(d / "config.yaml"), "serve", "--http", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=30, env=server_env(),
    )
    assert proc.returncode == 2
    assert "64 hex digits" in proc.stderr and "tokens.yaml" in proc.stderr
    # A file others may write would let them grant themselves tiers.
    secret, line = new_token(binary, "x", "read")
    (d / "tokens.yaml").write_text(f"tokens:\n{line}\n")
    os.chmod(d / "tokens.yaml", 0o664)
    proc = subprocess.run(
        [str(binary), "--config", str(d / "config.yaml"), "serve", "--http", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=30, env=server_env(),
    )
    assert proc.returncode == 2
    assert "writable by group or others" in proc.stderr and "chmod 600" in proc.stderr


def _stdio(binary, config: str) -> StdioServerParameters:
    d = pathlib.Path(tempfile.mkdtemp(prefix="ebpf-mcp-access-"))
    (d / "config.yaml").write_text(config + f'\n  audit_log: "{d}/audit.log"\n')
    return StdioServerParameters(command=str(binary), args=["--config", str(d / "config.yaml"), "serve"], env=server_env())


async def test_local_users_get_the_tiers_their_mapping_gives(binary):
    require_root()
    config = "security:\n  access_control:\n    user_tiers: {root: [read]}"
    async with Client(_stdio(binary, config)) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        assert names == READ_TOOLS
        r = await c.call_tool("trace", {"gadget": "exec", "duration_ms": 100})
        assert r.is_error
        assert r.structured_content["code"] == "TIER_NOT_PERMITTED"
        assert "uid:0(root)" in r.structured_content["message"]


def test_a_local_user_not_permitted_cannot_start_stdio(binary):
    d = pathlib.Path(tempfile.mkdtemp(prefix="ebpf-mcp-access-"))
    (d / "config.yaml").write_text('security:\n  access_control:\n    permitted_users: ["65534"]\n')
    proc = subprocess.run(
        [str(binary), "--config", str(d / "config.yaml"), "serve"],
        input="", capture_output=True, text=True, timeout=30, env=server_env(),
    )
    assert proc.returncode == 2
    assert "not permitted" in proc.stderr and "permitted_users" in proc.stderr
    call = subprocess.run(
        [str(binary), "--config", str(d / "config.yaml"), "call", "info"],
        capture_output=True, text=True, timeout=30, env=server_env(),
    )
    assert call.returncode == 1
    assert json.loads(call.stdout)["code"] == "USER_NOT_PERMITTED"


def make_ca_and_cert(d: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost it signed."""
    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    ssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
        "-subj", "/CN=ebpf-mcp test CA", "-keyout", "ca.key", "-out", "ca.pem")
    ssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "ext.cnf", "-out", "server.pem")
    return d / "ca.pem", d / "server.pem", d / "server.key"


async def test_the_sdk_works_end_to_end_over_tls_with_a_token(binary):
    import ssl as pyssl

    require_root()
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test CA")
    d = pathlib.Path(tempfile.mkdtemp(prefix="ebpf-mcp-tls-"))
    ca, cert, key = make_ca_and_cert(d)
    server = TokenServer(
        binary, extra_config=f'  tls:\n    enabled: true\n    cert_file: "{cert}"\n    key_file: "{key}"\n'
    )
    try:
        assert server.url.startswith("https://127.0.0.1:")
        trusted = pyssl.create_default_context(cafile=str(ca))
        http = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {server.tracer}"}, verify=trusted,
            timeout=httpx.Timeout(30, read=300),
        )
        async with Client(streamable_http_client(server.url, http_client=http), mode="legacy") as c:
            names = {t.name for t in (await c.list_tools()).tools}
            assert "trace" in names
            info = await c.call_tool("info", {"sections": ["all"]})
            assert not info.is_error and info.structured_content["kernel"]["release"] == os.uname().release
        # Without the CA the certificate is not trusted; plain HTTP gets no answer.
        with pytest.raises(httpx.ConnectError):
            httpx.post(server.url, headers=HEADERS, json=INIT, timeout=10)
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError)):
            httpx.post(server.url.replace("https://", "http://"), headers=HEADERS, json=INIT, timeout=10)
        # The token is still required under TLS.
        r = httpx.post(server.url, headers=HEADERS, json=INIT, timeout=10, verify=trusted)
        assert r.status_code == 401
    finally:
        server.close()


def test_an_identity_over_its_rate_gets_429_with_retry_after(binary):
    require_root()
    server = start_http_server(binary, config="server:\n  rate_limit:\n    requests_per_second: 1\n    burst: 3\n")
    try:
        # One connection, so that the five requests fall within the second one token takes
        # to come back.
        with httpx.Client(timeout=30) as http:
            started = time.monotonic()
            answers = [http.post(server.url, headers=HEADERS, json=INIT) for _ in range(5)]
            took = time.monotonic() - started
        codes = [a.status_code for a in answers]
        assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429], (codes, took)
        r = answers[4]
        assert int(r.headers["retry-after"]) >= 1
        assert "server.rate_limit" in r.json()["message"] and "anonymous" in r.json()["message"]
    finally:
        assert server.stop() == 0


def test_requests_and_sessions_over_their_caps_get_503(binary):
    require_root()
    server = start_http_server(
        binary, config="server:\n  max_concurrent_requests: 1\n  max_sessions: 2\n  rate_limit:\n    requests_per_second: 0\n"
    )
    try:
        first = open_session(server.url, None)
        second = open_session(server.url, None)
        third = post(server.url, INIT)
        assert third.status_code == 503 and third.json()["limit"] == "server.max_sessions"
        assert third.headers["retry-after"] == "1"
        # Closing a session makes room.
        closed = httpx.delete(server.url, headers={**HEADERS, "Mcp-Session-Id": second}, timeout=30)
        assert closed.status_code in (200, 202, 204)
        second = open_session(server.url, None)
        # One long call in flight (its response streams until the trace ends): the next
        # request does not queue, it is told to retry.
        long_call = {"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                     "params": {"name": "trace", "arguments": {"gadget": "exec", "duration_ms": 2000}}}
        headers = {**HEADERS, "Mcp-Session-Id": first, "Mcp-Protocol-Version": "2025-11-25"}
        with httpx.stream("POST", server.url, headers=headers, json=long_call, timeout=30) as streaming:
            assert streaming.status_code == 200
            r = post(server.url, {"jsonrpc": "2.0", "id": 10, "method": "tools/call",
                                  "params": {"name": "info", "arguments": {}}}, None, second)
            assert r.status_code == 503 and r.json()["limit"] == "server.max_concurrent_requests"
            assert "exec" in streaming.read().decode()  # the long call itself completes
        after = post(server.url, {"jsonrpc": "2.0", "id": 11, "method": "tools/call",
                                  "params": {"name": "list_links", "arguments": {}}}, None, second)
        assert after.status_code == 200
    finally:
        assert server.stop() == 0


async def test_json_logs_carry_request_identity_tool_and_duration(binary):
    require_root()
    d = pathlib.Path(tempfile.mkdtemp(prefix="ebpf-mcp-access-"))
    secret, line = new_token(binary, "logger", "read")
    (d / "tokens.yaml").write_text(f"tokens:\n{line}\n")
    (d / "tokens.yaml").chmod(0o600)
    server = start_http_server(
        binary, "--log-format", "json",
        config=f'security:\n  audit_log: "{d}/audit.log"\n  access_control:\n    tokens_file: "{d}/tokens.yaml"\n',
    )
    try:
        async with client(server.url, secret) as c:
            assert not (await c.call_tool("list_links", {})).is_error
    finally:
        assert server.stop() == 0
    records = [json.loads(l) for l in server.stderr().splitlines() if l.startswith("{")]
    calls = [r for r in records if r.get("fields", {}).get("message") == "tool call"]
    assert len(calls) == 1, records
    f = calls[0]["fields"]
    assert f["identity"] == "token:logger" and f["tool"] == "list_links" and f["outcome"] == "ok"
    assert f["request_id"] and "elapsed_ms" in f and f["transport"] == "http"
    assert secret not in server.stderr()


def test_names_that_match_no_user_or_group_are_reported_at_start(binary):
    require_root()
    server = start_http_server(
        binary, config='security:\n  access_control:\n    permitted_users: ["no-such-user-x"]\n'
                       '    group_tiers: {no-such-group-y: [read]}\n',
    )
    try:
        log = server.stderr()
        assert "match no one" in log
        assert "user `no-such-user-x`" in log and "group `no-such-group-y`" in log
    finally:
        assert server.stop() == 0
