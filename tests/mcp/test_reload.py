"""Hot reload: a change to the configuration or tokens file (or SIGHUP) takes effect without a
restart and without dropping clients; a broken file leaves the running configuration in
effect, says where it is wrong, and is counted."""

from __future__ import annotations

import pathlib
import re
import signal
import tempfile
import time

import anyio
import httpx2 as httpx
import mcp_types
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.subscriptions import ToolsListChanged
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared._httpx_utils import create_mcp_http_client

from conftest import INITIALIZE as INIT
from conftest import require_root, server_env, start_http_server
from test_access import new_token
from test_metrics import METRICS_CONFIG, observability_url, value, wait_for

pytestmark = pytest.mark.anyio

HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def config_text(d: pathlib.Path, trace: bool, extra: str = "") -> str:
    return METRICS_CONFIG + f"""
security:
  audit_log: "{d}/audit.log"
  access_control:
    tokens_file: "{d}/tokens.yaml"
tools:
  trace:
    enabled: {"true" if trace else "false"}
{extra}"""


async def test_config_and_tokens_reload_live_and_bad_files_change_nothing(binary):
    require_root()
    d = pathlib.Path(tempfile.mkdtemp(prefix="ebpf-mcp-reload-"))
    secret, line = new_token(binary, "ops", "read,trace")
    other, other_line = new_token(binary, "other", "read")
    tokens = d / "tokens.yaml"
    tokens.write_text(f"tokens:\n{line}\n{other_line}\n")
    tokens.chmod(0o600)
    server = start_http_server(binary, config=config_text(d, trace=True))
    # start_http_server wrote the config into its own work directory.
    cfg = next(pathlib.Path(p) for p in server.process.args if str(p).endswith("config.yaml"))
    base = observability_url(server)
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {secret}"})
    try:
        async with Client(streamable_http_client(server.url, http_client=http), mode="legacy") as c:
            assert "trace" in {t.name for t in (await c.list_tools()).tools}
            # 1. A change to the file applies without SIGHUP, and the session goes on.
            cfg.write_text(config_text(d, trace=False))

            async def trace_listed() -> bool:
                return "trace" in {t.name for t in (await c.list_tools()).tools}

            deadline = time.monotonic() + 15
            while await trace_listed():
                assert time.monotonic() < deadline, server.stderr()
                time.sleep(0.2)
            # A disabled tier's tools do not exist for clients.
            with pytest.raises(MCPError, match="unknown tool"):
                await c.call_tool("trace", {"gadget": "exec", "duration_ms": 100})
            assert not (await c.call_tool("info", {})).is_error
            metrics = httpx.get(f"{base}/metrics", timeout=10).text
            assert value(metrics, "ebpf_mcp_config_reloads_total", outcome="ok") >= 1

            # 2. A broken file: logged with its line, counted, nothing changes.
            cfg.write_text("tools:\n  trace:\n    enabled: maybe\n")
            wait_for(lambda: "configuration not reloaded" in server.stderr(), "the reload error")
            assert re.search(r"configuration not reloaded.*line 3", server.stderr()), server.stderr()
            metrics = httpx.get(f"{base}/metrics", timeout=10).text
            assert value(metrics, "ebpf_mcp_config_reloads_total", outcome="failed") >= 1
            assert not await trace_listed()
            assert not (await c.call_tool("list_links", {})).is_error

            # 3. Keys fixed at start keep their value and the log says to restart.
            cfg.write_text(config_text(d, trace=True, extra="server:\n  bind_address: \"127.0.0.1:9999\"\n"))
            wait_for(lambda: "apply only at start" in server.stderr(), "the restart warning")
            assert "server.bind_address" in server.stderr()
            deadline = time.monotonic() + 15
            while not await trace_listed():
                assert time.monotonic() < deadline
                time.sleep(0.2)

        # 4. A token removed from its file stops working without SIGHUP.
        assert httpx.post(server.url, headers={**HEADERS, "Authorization": f"Bearer {other}"}, json=INIT, timeout=10).status_code == 200
        tokens.write_text(f"tokens:\n{line}\n")
        wait_for(
            lambda: httpx.post(server.url, headers={**HEADERS, "Authorization": f"Bearer {other}"}, json=INIT, timeout=10).status_code == 401,
            "the removed token to be refused",
        )
        assert httpx.post(server.url, headers={**HEADERS, "Authorization": f"Bearer {secret}"}, json=INIT, timeout=10).status_code == 200

        # 5. SIGHUP reloads too, and always says so (the file watcher may have seen the
        # change first: then the configuration is unchanged).
        cfg.write_text(config_text(d, trace=False))
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: re.search(r'configuration (reloaded|unchanged).*trigger="?SIGHUP', server.stderr()),
                 "a SIGHUP reload")
        again = create_mcp_http_client(headers={"Authorization": f"Bearer {secret}"})
        async with Client(streamable_http_client(server.url, http_client=again), mode="legacy") as c:
            assert "trace" not in {t.name for t in (await c.list_tools()).tools}
    finally:
        assert server.stop() == 0


def tiers_config(trace: bool, max_events: int = 1000) -> str:
    return f"""
tools:
  trace:
    enabled: {"true" if trace else "false"}
    max_events: {max_events}
"""


@pytest.mark.parametrize("transport", ["stdio", "http"])
@pytest.mark.parametrize("mode", ["legacy", "auto"], ids=["2025-11-25", "2026-07-28"])
async def test_clients_hear_when_a_reload_changes_their_tools(binary, transport, mode):
    """2025-11-25 sessions get notifications/tools/list_changed; 2026-07-28 clients get it on
    a subscriptions/listen stream. A reload that leaves the tools as they were says nothing."""
    require_root()
    heard: list[object] = []
    arrived = anyio.Event()

    async def on_message(message) -> None:
        if isinstance(message, mcp_types.ToolListChangedNotification):
            heard.append(message)
            arrived.set()

    server = None
    if transport == "stdio":
        d = pathlib.Path(tempfile.mkdtemp(prefix="ebpf-mcp-reload-"))
        cfg = d / "config.yaml"
        cfg.write_text(tiers_config(trace=True))
        target = StdioServerParameters(command=str(binary), args=["--config", str(cfg), "serve"], env=server_env())
    else:
        server = start_http_server(binary, config=tiers_config(trace=True))
        cfg = next(pathlib.Path(p) for p in server.process.args if str(p).endswith("config.yaml"))
        target = server.url

    async def names(client: Client) -> set[str]:
        return {t.name for t in (await client.list_tools()).tools}

    try:
        async with Client(target, mode=mode, message_handler=on_message) as client:
            assert client.server_capabilities.tools.list_changed is True
            assert "trace" in await names(client)
            if mode == "legacy":
                if server is not None:
                    # A change that leaves every tool where it was: reloaded, not announced.
                    cfg.write_text(tiers_config(trace=True, max_events=500))
                    wait_for(lambda: "configuration reloaded" in server.stderr(), "the unrelated reload")
                cfg.write_text(tiers_config(trace=False))
                with anyio.fail_after(20):
                    await arrived.wait()
                # Notifications keep their order on the stream: one from the unrelated reload
                # would have come first.
                assert len(heard) == 1
            else:
                async with client.listen(tools_list_changed=True) as subscription:
                    assert subscription.honored.tools_list_changed is True
                    cfg.write_text(tiers_config(trace=False))
                    with anyio.fail_after(20):
                        event = await subscription.__anext__()
                    assert isinstance(event, ToolsListChanged)
            assert "trace" not in await names(client)
    finally:
        if server is not None:
            assert server.stop() == 0, server.stderr()
