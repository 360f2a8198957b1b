"""The official MCP conformance suite (@modelcontextprotocol/conformance) against
`ebpf-mcp serve --http`, for every protocol-level scenario of both spec versions. Scenarios
that need fixture tools (test_*) are out of scope for the product binary; so are the checks of
server-stateless that the suite reports untestable for want of its diagnostic test_* tools, or
skips because the server does not advertise the capability they test (every other check of
that scenario must pass)."""

from __future__ import annotations

import glob
import json
import os
import pathlib
import subprocess
import tempfile

import pytest

from conftest import IN_CI, ROOT, require_root, start_http_server

NODE_DIR = ROOT / "tests" / "conformance" / "node_modules" / ".bin"
SCENARIOS = {
    "2025-11-25": [
        "server-initialize",
        "server-session-lifecycle",
        "ping",
        "logging-set-level",
        "tools-list",
        "resources-list",
        "prompts-list",
        "server-sse-multiple-streams",
        "dns-rebinding-protection",
    ],
    "2026-07-28": [
        "server-stateless",
        "tools-list",
        "resources-list",
        "prompts-list",
        "server-sse-multiple-streams",
        "dns-rebinding-protection",
        "caching",
        "http-header-validation",
        "sep-2164-resource-not-found",
    ],
}
CASES = [(version, scenario) for version, names in SCENARIOS.items() for scenario in names]


@pytest.fixture(scope="module")
def server(binary):
    require_root()
    if not (NODE_DIR / "conformance").exists():
        message = "conformance suite not installed: run scripts/bootstrap"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    s = start_http_server(binary)
    yield s
    assert s.stop() == 0, s.stderr()


@pytest.mark.parametrize(("version", "scenario"), CASES, ids=[f"{v}-{s}" for v, s in CASES])
def test_conformance_scenario(server, version, scenario):
    out_dir = tempfile.mkdtemp(prefix="conformance-")
    env = dict(os.environ, PATH=f"{NODE_DIR}:{os.environ.get('PATH', '')}", NO_COLOR="1")
    proc = subprocess.run(
        [
            str(NODE_DIR / "conformance"),
            "server",
            "--url",
            server.url,
            "--scenario",
            scenario,
            "--spec-version",
            version,
            "--output-dir",
            out_dir,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    report = proc.stdout + proc.stderr
    assert "not applicable" not in report, report
    files = glob.glob(f"{out_dir}/*/checks.json")
    assert len(files) == 1, report
    checks = json.loads(pathlib.Path(files[0]).read_text())
    assert checks, report
    bad = [
        c
        for c in checks
        if c["status"] not in ("SUCCESS", "INFO")
        and not needs_fixture_tool(c)
        and not skipped_for_an_unadvertised_capability(c)
    ]
    assert not bad, json.dumps(bad, indent=2)
    assert any(c["status"] == "SUCCESS" for c in checks), report
    # The suite exits non-zero for any failed check, untestable ones included.
    untestable = [c for c in checks if needs_fixture_tool(c)]
    assert proc.returncode == (1 if untestable else 0), report


def needs_fixture_tool(check: dict) -> bool:
    """A check the suite itself marks untestable because the server lacks one of its
    diagnostic tools (test_*): those belong to the suite's fixture servers, not a product."""
    details = check.get("details") or {}
    message = check.get("errorMessage") or ""
    if check["id"] in TRIGGERED_BY_FIXTURE_TOOLS:
        return check["status"] == "WARNING"
    return details.get("untestable") is True and "diagnostic tool 'test_" in message


# Checks that call a fixture tool to cause what they watch for, and report a mere WARNING
# when it does not happen. tools/list_changed on a listen stream is caused by a real reload
# in test_reload.py instead.
TRIGGERED_BY_FIXTURE_TOOLS = {
    "sep-2575-server-sends-tools-list-changed-on-subscription",  # calls test_trigger_tool_change
}


def skipped_for_an_unadvertised_capability(check: dict) -> bool:
    """The suite skips what a server does not claim (subscriptions/listen, listChanged): the
    server advertises exactly what it implements, so those checks do not apply."""
    note = (check.get("details") or {}).get("note") or ""
    return check["status"] == "SKIPPED" and "capability" in note
