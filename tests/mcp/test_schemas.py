"""Schemas strict clients accept, a tools/list that fits an agent's context, and results that
stay within their size bound and say so when they are cut."""

from __future__ import annotations

import json
import subprocess

import pytest
from jsonschema import Draft202012Validator
from mcp import Client

from conftest import BIN, require_root, start_http_server

pytestmark = pytest.mark.anyio

STANDARD_FORMATS = {
    "date-time", "date", "time", "duration", "email", "idn-email", "hostname", "idn-hostname",
    "ipv4", "ipv6", "uri", "uri-reference", "iri", "iri-reference", "uuid", "uri-template",
    "json-pointer", "relative-json-pointer", "regex",
}
# tools/list for the default tiers (read, trace): what an agent reads before its first
# question. Output schemas are not in it (docs/tools.md and `tools --output json` have them).
TOOLS_LIST_BUDGET = 12 * 1024
DEFAULT_RESULT_CAP = 100 * 1024


def full_schemas() -> dict:
    """Every tool's complete output schema, as `ebpf-mcp tools --output json` publishes it."""
    out = subprocess.run([str(BIN), "tools", "--output", "json"], capture_output=True, text=True, check=True)
    return {t["name"]: t["outputSchema"] for t in json.loads(out.stdout)}


def lint(schema, path="#"):
    """Everything a strict client would trip on: non-standard formats, null unions, refs."""
    problems = []
    if isinstance(schema, dict):
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt not in STANDARD_FORMATS:
            problems.append(f"{path}/format={fmt}")
        types = schema.get("type")
        if isinstance(types, list) and "null" in types:
            problems.append(f"{path}/type={types}")
        for key in ("anyOf", "oneOf"):
            if any(isinstance(b, dict) and b.get("type") == "null" for b in schema.get(key, [])):
                problems.append(f"{path}/{key} has a null branch")
        if "$ref" in schema or "$defs" in schema:
            problems.append(f"{path}: reference")
        for key, child in schema.items():
            problems += lint(child, f"{path}/{key}")
    elif isinstance(schema, list):
        for i, child in enumerate(schema):
            problems += lint(child, f"{path}/{i}")
    return problems


@pytest.fixture
def server(binary):
    require_root()
    s = start_http_server(binary)
    yield s
    assert s.stop() == 0, s.stderr()


async def test_every_schema_is_clean_2020_12(server):
    async with Client(server.url, mode="legacy") as client:
        tools = (await client.list_tools()).tools
    assert tools
    published = full_schemas()
    for tool in tools:
        assert tool.output_schema is None, f"{tool.name}: output schemas stay out of tools/list"
        for name, schema in (("inputSchema", tool.input_schema), ("outputSchema", published[tool.name])):
            assert schema is not None, f"{tool.name} has no {name}"
            Draft202012Validator.check_schema(schema)
            assert schema["type"] == "object", f"{tool.name}.{name} root is not an object"
            assert lint(schema) == [], f"{tool.name}.{name}: {lint(schema)}"


async def test_tools_list_fits_the_token_budget(server):
    async with Client(server.url, mode="legacy") as client:
        listed = await client.list_tools()
    size = len(listed.model_dump_json(by_alias=True, exclude_none=True))
    print(f"tools/list: {size} bytes for {len(listed.tools)} tools")
    assert size < TOOLS_LIST_BUDGET


async def test_results_are_bounded_by_default(server):
    async with Client(server.url, mode="legacy") as client:
        result = await client.call_tool("info", {"sections": ["all"]})
    size = len(json.dumps(result.structured_content, separators=(",", ":")))
    assert size <= DEFAULT_RESULT_CAP
    assert "truncated" not in result.structured_content


async def test_an_oversized_result_is_cut_marked_and_still_valid(binary):
    """With a small cap, info is cut to fit, says what it cut, and still validates against
    its output schema (the SDK validates structured results; we check again here)."""
    require_root()
    cap = 4000
    server = start_http_server(binary, config=f"server:\n  max_result_bytes: {cap}\n")
    try:
        async with Client(server.url, mode="legacy") as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            result = await client.call_tool("info", {"sections": ["all"]})
    finally:
        assert server.stop() == 0
    assert not result.is_error
    data = result.structured_content
    assert len(json.dumps(data, separators=(",", ":"))) <= cap
    assert data["truncated"] is True
    assert "max_result_bytes" in data["hint"] and "kept" in data["hint"]
    Draft202012Validator(full_schemas()["info"]).validate(data)
    # Facts a caller needs most are structural and survive the cut.
    assert data["kernel"]["release"]


async def test_a_result_that_cannot_be_cut_is_a_clear_error(binary):
    require_root()
    server = start_http_server(binary, config="server:\n  max_result_bytes: 600\n")
    try:
        async with Client(server.url, mode="legacy") as client:
            result = await client.call_tool("info", {"sections": ["all"]})
    finally:
        assert server.stop() == 0
    assert result.is_error
    assert result.structured_content["code"] == "RESULT_TOO_LARGE"
    assert "raise the limit" in result.structured_content["message"]
