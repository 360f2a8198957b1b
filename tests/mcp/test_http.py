"""HTTP specifics: loopback only without authentication, DNS-rebinding defence on Host
and Origin, and a clean stop on SIGTERM and SIGINT."""

from __future__ import annotations

import json
import signal
import subprocess

import httpx2 as httpx
import pytest

from conftest import INITIALIZE as INIT
from conftest import require_root, server_env, start_http_server

HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.mark.parametrize("addr", ["0.0.0.0:0", "[::]:0", "192.0.2.1:8080"])
def test_non_loopback_bind_is_refused(binary, addr):
    proc = subprocess.run(
        [str(binary), "serve", "--http", addr], capture_output=True, text=True, timeout=30, env=server_env()
    )
    assert proc.returncode == 2
    assert "without authentication" in proc.stderr
    assert "tokens_file" in proc.stderr and "127.0.0.1" in proc.stderr  # says what to do instead


def test_bad_http_address_is_a_usage_error(binary):
    proc = subprocess.run(
        [str(binary), "serve", "--http", "localhost"], capture_output=True, text=True, timeout=30, env=server_env()
    )
    assert proc.returncode == 2
    assert "IP:PORT" in proc.stderr


def test_host_and_origin_are_checked(http_server):
    port = http_server.url.split(":")[2].split("/")[0]
    ok = httpx.post(http_server.url, headers=HEADERS, content=json.dumps(INIT), timeout=10)
    assert ok.status_code == 200, ok.text
    rebound = httpx.post(
        http_server.url, headers={**HEADERS, "Host": f"evil.example:{port}"}, content=json.dumps(INIT), timeout=10
    )
    assert rebound.status_code == 403
    cross_site = httpx.post(
        http_server.url, headers={**HEADERS, "Origin": "http://evil.example"}, content=json.dumps(INIT), timeout=10
    )
    assert cross_site.status_code == 403
    same_host = httpx.post(
        http_server.url,
        headers={**HEADERS, "Origin": f"http://localhost:{port}"},
        content=json.dumps(INIT),
        timeout=10,
    )
    assert same_host.status_code == 200


def test_configured_hosts_replace_the_defaults(binary):
    require_root()
    server = start_http_server(binary, config='server:\n  allowed_hosts: ["mcp.internal"]\n')
    try:
        port = server.url.split(":")[2].split("/")[0]
        default_host = httpx.post(server.url, headers=HEADERS, content=json.dumps(INIT), timeout=10)
        assert default_host.status_code == 403
        configured = httpx.post(
            server.url, headers={**HEADERS, "Host": f"mcp.internal:{port}"}, content=json.dumps(INIT), timeout=10
        )
        assert configured.status_code == 200
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_http_server_stops_cleanly(binary, sig):
    require_root()
    server = start_http_server(binary)
    assert httpx.post(server.url, headers=HEADERS, content=json.dumps(INIT), timeout=10).status_code == 200
    assert server.stop(sig) == 0, server.stderr()
    assert "released server-created kernel objects" in server.stderr()


def test_oversized_bodies_are_refused(http_server):
    body = json.dumps({**INIT, "params": {**INIT["params"], "padding": "x" * (5 * 1024 * 1024)}})
    response = httpx.post(http_server.url, headers=HEADERS, content=body, timeout=30)
    assert response.status_code == 413
