"""The server over stdio and Streamable HTTP, in both protocol eras (2025-11-25 with the
initialize handshake, 2026-07-28 stateless with server/discover), driven by the official
Python MCP SDK."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
from collections.abc import AsyncIterator

import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError

from conftest import HttpServer, require_root, server_env, start_http_server

pytestmark = pytest.mark.anyio

# SDK connect modes: "legacy" sends initialize; "auto" probes server/discover and adopts the
# newest version both sides support.
ERAS = {"legacy": "2025-11-25", "auto": "2026-07-28"}
TRANSPORTS = ["stdio", "http"]


@contextlib.asynccontextmanager
async def connect(binary: pathlib.Path, transport: str, mode: str, **kwargs) -> AsyncIterator[Client]:
    """A connected SDK client for `transport` in era `mode`."""
    require_root()
    if transport == "stdio":
        params = StdioServerParameters(command=str(binary), args=["serve"], env=server_env())
        async with Client(params, mode=mode, **kwargs) as client:
            yield client
        return
    server: HttpServer = start_http_server(binary)
    try:
        async with Client(server.url, mode=mode, **kwargs) as client:
            yield client
    finally:
        code = server.stop()
        assert code == 0, server.stderr()


@pytest.fixture(params=[(t, m) for t in TRANSPORTS for m in ERAS], ids=lambda p: f"{p[0]}-{p[1]}")
def session_kind(request) -> tuple[str, str]:
    return request.param


async def test_handshake_negotiates_the_era(binary, session_kind):
    transport, mode = session_kind
    async with connect(binary, transport, mode) as client:
        assert client.protocol_version == ERAS[mode]
        caps = client.server_capabilities
        assert caps.tools is not None
        assert caps.resources is not None
        assert caps.prompts is not None
        assert caps.logging is not None
        if client.server_info is not None:
            assert client.server_info.name == "ebpf-mcp"


async def test_tools_list_describes_info(binary, session_kind):
    transport, mode = session_kind
    async with connect(binary, transport, mode) as client:
        first = (await client.list_tools()).tools
        again = (await client.list_tools(cache_mode="refresh")).tools
        assert [t.name for t in first] == [t.name for t in again], "order must be deterministic"
        info = next(t for t in first if t.name == "info")
        assert info.title
        assert len(info.description) > 100 and "first" in info.description
        assert info.input_schema["type"] == "object"
        # Output schemas are published in docs/tools.md, not in tools/list (its size is
        # the agent's context).
        assert info.output_schema is None
        a = info.annotations
        # destructive/idempotent mean something only when readOnlyHint is false (spec), so
        # read-only tools leave them out to keep tools/list short.
        assert (a.read_only_hint, a.destructive_hint, a.idempotent_hint, a.open_world_hint) == (
            True,
            None,
            None,
            False,
        )


async def test_info_reports_this_kernel(binary, session_kind):
    transport, mode = session_kind
    async with connect(binary, transport, mode) as client:
        result = await client.call_tool("info", {"sections": ["all"]})
    assert not result.is_error
    data = result.structured_content
    # The same JSON as text, for clients that only read content.
    assert json.loads(result.content[0].text) == data
    uname = os.uname()
    assert data["kernel"]["release"] == uname.release
    assert data["kernel"]["arch"] == uname.machine
    assert data["features"]["attach"]["tracepoint"]["status"] == "available"
    assert data["server"]["name"] == "ebpf-mcp"
    assert data["problems"] == [] or all("code" in p for p in data["problems"])


async def test_info_is_a_summary_unless_sections_are_asked(binary, session_kind):
    """Plain `info` is a summary of a few hundred bytes that agrees with the details, which
    come by section."""
    transport, mode = session_kind
    async with connect(binary, transport, mode) as client:
        plain = (await client.call_tool("info", {})).structured_content
        full = (await client.call_tool("info", {"sections": ["all"]})).structured_content
        server = (await client.call_tool("info", {"sections": ["server"]})).structured_content
        bad = await client.call_tool("info", {"sections": ["kernal"]})
    assert len(json.dumps(plain, separators=(",", ":"))) <= 4096, plain
    assert set(plain) == {"summary", "problems", "hint"}, set(plain)
    assert "`sections`" in plain["hint"] and "ebpf://gadgets" in plain["hint"]
    s = plain["summary"]
    assert s["kernel"] == f"{os.uname().release} {os.uname().machine}"
    assert s["lockdown"] == full["kernel"]["lockdown"]["mode"] and s["btf"] == full["kernel"]["btf"]["vmlinux"]
    for kind in ["attach", "program_types", "map_types", "helpers"]:
        probes = full["features"][kind]
        down = sorted(k for k, v in probes.items() if v["status"] != "available")
        assert s[kind].get("unavailable", []) == down and s[kind]["available"] == len(probes) - len(down), kind
    assert s["gadgets"] == [g["name"] for g in full["gadgets"] if g["supported"]]
    assert s.get("gadgets_unsupported", []) == [{"name": g["name"], "reason": g["reason"]}
                                                for g in full["gadgets"] if not g["supported"]]
    assert s["tiers"] == [t["tier"] for t in full["server"]["tiers"] if t["enabled"]]
    assert "hint" not in full and set(server) == {"summary", "server", "problems", "hint"}
    assert '"kernel", "features", "gadgets"' in server["hint"]
    assert bad.is_error and "kernal" in bad.structured_content["message"], bad.structured_content


async def test_invalid_arguments_are_tool_errors(binary, session_kind):
    transport, mode = session_kind
    async with connect(binary, transport, mode) as client:
        wrong_type = await client.call_tool("info", {"refresh": "yes"})
        unknown = await client.call_tool("info", {"bogus": 1})
    for result, needle in ((wrong_type, "refresh"), (unknown, "bogus")):
        assert result.is_error
        err = result.structured_content
        assert err["category"] == "validation"
        assert err["code"] == "INVALID_ARGUMENTS"
        assert err["recoverable"] is True
        assert needle in err["message"]
        assert "inputSchema" in err["message"]
        assert err["timestamp"].endswith("Z")
        assert isinstance(err["context"], dict)
        assert json.loads(result.content[0].text) == err


async def test_unknown_tool_is_a_protocol_error(binary, session_kind):
    transport, mode = session_kind
    async with connect(binary, transport, mode) as client:
        with pytest.raises(MCPError) as excinfo:
            await client.call_tool("no_such_tool", {})
    assert excinfo.value.code == -32602
    assert "no_such_tool" in excinfo.value.message


async def test_system_resource_mirrors_info(binary, session_kind):
    transport, mode = session_kind
    async with connect(binary, transport, mode) as client:
        listed = (await client.list_resources()).resources
        assert [str(r.uri) for r in listed] == ["ebpf://system", "ebpf://gadgets", "ebpf://programs", "ebpf://maps",
                                               "ebpf://links"]
        assert all(r.mime_type == "application/json" for r in listed)
        read = await client.read_resource("ebpf://system")
        gadgets = json.loads((await client.read_resource("ebpf://gadgets")).contents[0].text)
        with pytest.raises(MCPError) as missing:
            await client.read_resource("ebpf://nothing-here")
    content = read.contents[0]
    assert content.mime_type == "application/json"
    system = json.loads(content.text)
    assert system["kernel"]["release"] == os.uname().release
    # The gadget part alone, the same as info's.
    assert set(gadgets) == {"gadgets", "gadget_common_fields"}
    assert gadgets["gadgets"] == system["gadgets"] and len(content.text) > len(json.dumps(gadgets))
    # 2026-07-28 reports not-found as invalid params; earlier eras as -32002.
    assert missing.value.code in (-32002, -32602)


async def test_prompts_render(binary, session_kind):
    transport, mode = session_kind
    async with connect(binary, transport, mode) as client:
        prompts = {p.name: p for p in (await client.list_prompts()).prompts}
        assert {"ebpf_host_report", "plan_observation", "diagnose_high_cpu", "who_is_opening_files",
                "network_connections_audit", "slow_disk", "unexpected_process_launches"} <= set(prompts)
        got = await client.get_prompt("plan_observation", {"question": "who opens /etc/shadow"})
        cpu = await client.get_prompt("diagnose_high_cpu", {"seconds": "5", "pid": "1"})
        with pytest.raises(MCPError) as missing_arg:
            await client.get_prompt("plan_observation", {})
        with pytest.raises(MCPError) as bad_number:
            await client.get_prompt("slow_disk", {"seconds": "a while"})
    assert "who opens /etc/shadow" in got.messages[0].content.text
    assert '"gadget": "profile", "duration_ms": 5000, "frequency_hz": 99, "pid": 1' in cpu.messages[0].content.text
    assert missing_arg.value.code == -32602
    assert bad_number.value.code == -32602 and "whole number" in str(bad_number.value)


@pytest.mark.parametrize("mode", list(ERAS))
async def test_progress_and_log_notifications(binary, mode):
    """A client that asks for progress and logs gets them, before the result: through
    logging/setLevel in the 2025-11-25 era, through per-request _meta in 2026-07-28."""
    progress: list[tuple[float, float | None, str | None]] = []
    logs: list[str] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    async def on_log(params) -> None:
        logs.append(str(params.data))

    extra = {"log_level": "debug"} if mode != "legacy" else {}
    async with connect(binary, "stdio", mode, logging_callback=on_log, **extra) as client:
        if mode == "legacy":
            await client.set_logging_level("debug")
        result = await client.call_tool("info", {"refresh": True}, progress_callback=on_progress)
    assert not result.is_error
    assert [p[0] for p in progress] == [0.0, 1.0, 2.0]
    assert progress[-1][1] == 2.0
    assert any("probing kernel eBPF features" in m for m in logs), logs


async def test_no_log_messages_without_a_level(binary):
    logs: list[str] = []

    async def on_log(params) -> None:
        logs.append(str(params.data))

    for mode in ERAS:
        async with connect(binary, "stdio", mode, logging_callback=on_log) as client:
            await client.call_tool("info", {"refresh": True})
    assert logs == []


async def test_request_timeout_is_a_clear_tool_error(binary):
    """A call that outlives server.request_timeout fails with REQUEST_TIMEOUT naming the
    limit (re-probing takes far longer than 1 ms)."""
    require_root()
    server = start_http_server(binary, config='server:\n  request_timeout: "1ms"\n')
    try:
        async with Client(server.url, mode="legacy") as client:
            result = await client.call_tool("info", {"refresh": True})
    finally:
        assert server.stop() == 0, server.stderr()
    assert result.is_error
    err = result.structured_content
    assert err["code"] == "REQUEST_TIMEOUT"
    assert err["category"] == "resource"
    assert "server.request_timeout" in err["message"]
    assert err["context"]["timeout_ms"] == 1
