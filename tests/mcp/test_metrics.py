"""The observability listener: Prometheus metrics checked by `promtool check metrics` and
against the calls the test makes, /health and /ready."""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import tempfile
import time

import httpx2 as httpx
import pytest
from mcp import Client

from conftest import INITIALIZE as INIT
from conftest import ROOT, require_root, start_http_server

pytestmark = pytest.mark.anyio

HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


# The observability listener on a free loopback port; other sections go after it.
METRICS_CONFIG = 'observability:\n  metrics:\n    enabled: true\n    prometheus_endpoint: "127.0.0.1:0/metrics"\n'


def observability_url(server) -> str:
    deadline = time.monotonic() + 10
    while True:
        m = re.search(r"observability at (http://\S+): ", server.stderr())
        if m:
            return m.group(1)
        assert time.monotonic() < deadline, server.stderr()
        time.sleep(0.05)


def wait_for(check, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def value(text: str, name: str, **labels: str) -> float:
    """The sample `name{labels}` of an exposition (labels in any order); 0 when absent."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.match(r"([a-z_]+)(?:\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if got == labels:
            return float(m.group(3))
    return 0.0


async def test_metrics_count_what_the_test_did_and_pass_promtool(binary):
    require_root()
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool (Debian package prometheus) is needed; scripts/bootstrap installs it")
    server = start_http_server(binary, config=METRICS_CONFIG)
    try:
        base = observability_url(server)
        before = httpx.get(f"{base}/metrics", timeout=10).text
        async with Client(server.url, mode="legacy") as c:
            for _ in range(2):
                assert not (await c.call_tool("info", {})).is_error
            bad = await c.call_tool("map_dump", {"map_id": 4_000_000_000})
            assert bad.is_error
            traced = await c.call_tool("trace", {"gadget": "exec", "duration_ms": 1500, "comm": "true"})
            assert not traced.is_error
        # (the trace above sees execs of `true` the test makes meanwhile)
        text = httpx.get(f"{base}/metrics", timeout=10).text
        checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert value(text, "ebpf_mcp_tool_calls_total", tool="info", outcome="ok") - value(
            before, "ebpf_mcp_tool_calls_total", tool="info", outcome="ok") == 2
        assert value(text, "ebpf_mcp_tool_calls_total", tool="map_dump", outcome="MAP_NOT_FOUND") == 1
        assert value(text, "ebpf_mcp_tool_call_duration_seconds_count", tool="info") >= 2
        assert value(text, "ebpf_mcp_tool_calls_total", tool="trace", outcome="ok") == 1
        assert "ebpf_mcp_trace_events_total" in text
        assert value(text, "ebpf_mcp_build_info", version=re.search(r'version="([^"]+)"', text).group(1)) == 1
        assert value(text, "ebpf_mcp_live_objects", kind="programs") == 0  # the trace released its own
        assert "ebpf_mcp_http_requests_in_flight" in text
        om = httpx.get(f"{base}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}, timeout=10)
        assert om.headers["content-type"].startswith("application/openmetrics-text")
        assert om.text.rstrip().endswith("# EOF")
        health = httpx.get(f"{base}/health", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        ready = httpx.get(f"{base}/ready", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["capabilities"]["ok"] is True
    finally:
        assert server.stop() == 0


def test_refusals_are_counted_by_reason(binary):
    require_root()
    d = pathlib.Path(tempfile.mkdtemp(prefix="ebpf-mcp-metrics-"))
    (d / "tokens.yaml").write_text("tokens: []\n")
    (d / "tokens.yaml").chmod(0o600)
    server = start_http_server(binary, config=METRICS_CONFIG + f"""
security:
  access_control:
    tokens_file: "{d}/tokens.yaml"
""")
    try:
        base = observability_url(server)
        for auth in (None, "Bearer emcp_nope", "Basic x"):
            headers = dict(HEADERS)
            if auth:
                headers["Authorization"] = auth
            assert httpx.post(server.url, headers=headers, json=INIT, timeout=10).status_code == 401
        text = httpx.get(f"{base}/metrics", timeout=10).text
        assert value(text, "ebpf_mcp_auth_failures_total", reason="missing") == 1
        assert value(text, "ebpf_mcp_auth_failures_total", reason="invalid") == 1
        assert value(text, "ebpf_mcp_auth_failures_total", reason="malformed") == 1
    finally:
        assert server.stop() == 0


def test_ready_says_what_is_missing_for_an_unprivileged_server(binary):
    require_root()
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is needed")
    d = pathlib.Path(tempfile.mkdtemp(prefix="ebpf-mcp-metrics-"))
    d.chmod(0o777)  # the unprivileged server's audit log goes here
    server = start_http_server(
        binary,
        config=METRICS_CONFIG + f'security:\n  audit_log: "{d}/audit.log"\n',
        prefix=("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"),
    )
    try:
        base = observability_url(server)
        r = httpx.get(f"{base}/ready", timeout=10)
        assert r.status_code == 503
        problem = r.json()["checks"]["capabilities"]["problem"]
        assert "CAP_BPF" in problem
        assert httpx.get(f"{base}/health", timeout=10).status_code == 200
    finally:
        server.stop()


async def test_required_capabilities_decide_readiness_and_are_kept(binary):
    """security.access_control.required_capabilities: what /ready and info demand. A root
    server whose bounding set lacks CAP_NET_ADMIN is not ready when the configuration requires
    it, says so, and names the fix; one it does not require is ready; a required capability
    the sandbox would cut stays."""
    require_root()
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is needed")
    def start(required: str, prefix: tuple[str, ...] = ()):
        return start_http_server(
            binary,
            config=METRICS_CONFIG + f"security:\n  access_control:\n    required_capabilities: {required}\n",
            prefix=prefix,
        )

    no_net_admin = ("setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin")
    server = start('["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"]', no_net_admin)
    try:
        r = httpx.get(f"{observability_url(server)}/ready", timeout=10)
        assert r.status_code == 503, r.text
        problem = r.json()["checks"]["capabilities"]["problem"]
        assert "lacks CAP_NET_ADMIN" in problem and "setcap cap_net_admin+ep" in problem, problem
        assert "CAP_NET_ADMIN" in server.stderr(), "the start-up warning names it"
        # The periodic check logs it and sets the gauge.
        wait_for(lambda: "not ready" in server.stderr(), "the readiness check's log line")
        scrape = httpx.get(f"{observability_url(server)}/metrics", timeout=10).text
        assert "ebpf_mcp_ready 0" in scrape.splitlines(), scrape
        async with Client(server.url, mode="legacy") as c:
            info = (await c.call_tool("info", {})).structured_content
        missing = [p for p in info["problems"] if p["code"] == "MISSING_CAPABILITY"]
        assert missing and missing[0]["context"]["missing"] == ["CAP_NET_ADMIN"], info["problems"]
    finally:
        assert server.stop() == 0, server.stderr()
    server = start('["CAP_BPF", "CAP_PERFMON"]', no_net_admin)
    try:
        base = observability_url(server)
        wait_for(lambda: "ebpf_mcp_ready 1" in httpx.get(f"{base}/metrics", timeout=10).text, "ebpf_mcp_ready 1")
        assert httpx.get(f"{base}/ready", timeout=10).status_code == 200
        assert "not ready" not in server.stderr()
    finally:
        assert server.stop() == 0, server.stderr()
    # CAP_WAKE_ALARM is not among what the sandbox keeps; required, it stays.
    server = start('["CAP_BPF", "CAP_WAKE_ALARM"]')
    try:
        assert httpx.get(f"{observability_url(server)}/ready", timeout=10).status_code == 200
        status = pathlib.Path(f"/proc/{server.process.pid}/status").read_text()
        eff = int(re.search(r"CapEff:\s+([0-9a-f]+)", status).group(1), 16)
        assert eff & (1 << 35), "CAP_WAKE_ALARM (35) kept"
        assert not eff & (1 << 16), "CAP_SYS_MODULE (16) still cut"
    finally:
        assert server.stop() == 0, server.stderr()


def test_documented_alerts_pass_promtool_and_name_documented_metrics():
    """The alert rules docs/operations.md suggests load in Prometheus, and every metric they
    use is in the metrics table of docs/security.md."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool (Debian package prometheus) is needed; scripts/bootstrap installs it")
    doc = (ROOT / "docs" / "operations.md").read_text()
    rules = re.search(r"```yaml\n(groups:\n.*?)```", doc, re.S)
    assert rules, "no alert rules block in docs/operations.md"
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(rules.group(1))
        f.flush()
        checked = subprocess.run([promtool, "check", "rules", f.name], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    table = (ROOT / "docs" / "security.md").read_text()
    documented = set(re.findall(r"^\| `(ebpf_mcp_\w+)", table, re.M))
    used = set(re.findall(r"\bebpf_mcp_\w+", rules.group(1)))
    assert used and used <= documented, f"not in docs/security.md: {used - documented}"
