"""examples/clients: every configuration parses, its stdio entry starts a server the official
SDK can use (the same command, sudo left out: the tests already run as root), and its HTTP
entry points at /mcp with a bearer header."""

from __future__ import annotations

import json

import pytest
from mcp import Client, StdioServerParameters

from conftest import ROOT, require_root, server_env

pytestmark = pytest.mark.anyio

CLIENTS = ROOT / "examples" / "clients"
FILES = {"claude-desktop.json": "mcpServers", "vscode-mcp.json": "servers", "cursor-mcp.json": "mcpServers"}


@pytest.mark.parametrize("name", sorted(FILES))
async def test_each_client_config_works_as_written(name, binary):
    require_root()
    servers = json.loads((CLIENTS / name).read_text())[FILES[name]]
    stdio = servers["ebpf"]
    assert stdio["command"] == "sudo" and stdio["args"] == ["/usr/local/bin/ebpf-mcp", "serve"]
    params = StdioServerParameters(command=str(binary), args=stdio["args"][1:], env=server_env())
    async with Client(params) as c:
        assert "info" in {t.name for t in (await c.list_tools()).tools}
    if "ebpf-http" in servers:
        http = servers["ebpf-http"]
        assert http["url"].endswith("/mcp")
        assert http["headers"]["Authorization"].startswith("Bearer ${")


def test_claude_code_commands_name_both_transports():
    text = (CLIENTS / "claude-code.sh").read_text()
    assert "claude mcp add ebpf -- sudo /usr/local/bin/ebpf-mcp serve" in text
    assert "--transport http" in text and '--header "Authorization: Bearer' in text
