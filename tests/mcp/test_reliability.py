"""Faults a server must survive without lying: a full disk under its audit log, failures
and panics after a gadget or a deployment attached, a traced process that exits, a
configuration with absurd durations, and a memory cgroup the size of the DaemonSet's
request. Each case once broke the server or left it saying something untrue."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import tempfile
import time
import uuid

import anyio
import httpx2 as httpx
import pytest
from mcp import Client

from conftest import IN_CI, ROOT, WORKLOAD, _bpf_ids, require_root, start_http_server
from test_metrics import METRICS_CONFIG, observability_url, value

pytestmark = pytest.mark.anyio

OBJECTS = ROOT / "bpf" / "obj" / "tests"


def b64(name: str) -> str:
    import base64

    return base64.b64encode((OBJECTS / f"{name}.bpf.o").read_bytes()).decode()


@contextlib.contextmanager
def small_disk(size_kib: int = 512):
    """A tmpfs of `size_kib`, for a disk that fills up."""
    mount = pathlib.Path(tempfile.mkdtemp(prefix="ebpf-mcp-disk-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(mount, ignore_errors=True)


def fill(disk: pathlib.Path, leave: int) -> pathlib.Path:
    """Fills `disk` but for about `leave` bytes."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    filler = disk / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def ready(server) -> tuple[int, dict]:
    r = httpx.get(observability_url(server) + "/ready", timeout=10)
    return r.status_code, r.json()


async def call(url: str, tool: str, args: dict) -> dict:
    async with Client(url, mode="legacy") as client:
        r = await client.call_tool(tool, args)
        return {"error": r.is_error, **(r.structured_content or {})}


def audit_is_whole(path: pathlib.Path) -> list[dict]:
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "the log ends on a line boundary"
    return [json.loads(line) for line in text.splitlines()]


async def test_a_full_disk_refuses_acts_before_they_happen_and_says_so(binary):
    """With the audit log's disk full: state-changing calls are refused before they act
    (nothing loaded, nothing released), the log is never left with half a line, /ready is
    503 and the failures are counted; freeing space brings it all back."""
    require_root()
    with small_disk() as disk:
        audit = disk / "audit.log"
        config = METRICS_CONFIG + f"""
security:
  audit_log: "{audit}"
tools:
  deploy:
    enabled: true
    allowed_types: ["tracepoint"]
"""
        server = start_http_server(binary, config=config)
        try:
            # One session: anonymous deployments belong to the session that made them.
            async with Client(server.url, mode="legacy") as client:
                async def use(tool, args):
                    r = await client.call_tool(tool, args)
                    return {"error": r.is_error, **(r.structured_content or {})}

                kept = await use("deploy", {"object": b64("ok_tracepoint"), "ttl_seconds": 300})
                assert not kept["error"], kept
                kept_prog = kept["programs"][0]["id"]
                assert ready(server)[0] == 200
                filler = fill(disk, 200)
                before = _bpf_ids()
                for tool, args in [
                    ("deploy", {"object": b64("ok_tracepoint")}),
                    ("undeploy", {"deployment_id": kept["deployment_id"]}),
                    ("trace_start", {"gadget": "exec", "duration_ms": 5000}),
                ]:
                    r = await use(tool, args)
                    assert r["error"] and r["code"] == "AUDIT_UNAVAILABLE", (tool, r)
                    assert "operations.md" in r["message"]
                after = _bpf_ids()
                assert after["prog"] <= before["prog"], "nothing was loaded"
                assert kept_prog in after["prog"], "the refused undeploy released nothing"
                audit_is_whole(audit)
                code, body = ready(server)
                assert code == 503 and not body["checks"]["audit_log"]["ok"], body
                metrics = httpx.get(observability_url(server) + "/metrics", timeout=10).text
                assert value(metrics, "ebpf_mcp_audit_write_failures_total") >= 3
                assert value(metrics, "ebpf_mcp_ready") == 0
                # Room again: the server recovers by itself.
                filler.unlink()
                assert ready(server)[0] == 200
                gone = await use("undeploy", {"deployment_id": kept["deployment_id"]})
                assert not gone["error"], gone
            lines = audit_is_whole(audit)
            assert lines[-1]["tool"] == "undeploy" and lines[-1]["outcome"] == "ok"
        finally:
            assert server.stop() == 0, server.stderr()


async def test_a_torn_write_never_leaves_half_a_line(binary):
    """Records go on while the last page of the log has room; the first that does not fit
    fails part-way, and the file is cut back to where it ended: the next record starts on
    a line of its own."""
    require_root()
    with small_disk() as disk:
        audit = disk / "audit.log"
        server = start_http_server(binary, config=f'security:\n  audit_log: "{audit}"\n')
        try:
            await call(server.url, "info", {})
            filler = fill(disk, 0)
            sizes = []
            for _ in range(200):
                await call(server.url, "list_tracepoints", {"pattern": "sched:*", "limit": 3})
                sizes.append(audit.stat().st_size)
                if len(sizes) > 1 and sizes[-1] == sizes[-2]:
                    break
            assert len(sizes) > 1 and sizes[-1] == sizes[-2], "a write failed part-way at last"
            audit_is_whole(audit)
            filler.unlink()
            await call(server.url, "info", {})
            lines = audit_is_whole(audit)
            assert lines[-1]["tool"] == "info"
        finally:
            assert server.stop() == 0, server.stderr()


async def test_refusals_before_a_tool_are_on_the_record(binary):
    """401 and calls to tools of a disabled tier reach the audit log too (refusals of one
    kind at most once a second, the rest counted)."""
    require_root()
    from test_access import TokenServer, post
    from conftest import INITIALIZE

    ts = TokenServer(binary)
    try:
        for _ in range(20):
            assert post(ts.url, INITIALIZE, "emcp_wrong").status_code == 401
        time.sleep(1.1)
        assert post(ts.url, INITIALIZE, None).status_code == 401
        from test_access import client

        async with client(ts.url, ts.tracer) as c:
            with pytest.raises(Exception):
                await c.call_tool("no_such_tool", {})
        lines = ts.audit_lines()
        refused = [l for l in lines if l.get("event") == "http_refused"]
        assert refused and refused[0]["reason"] == "unauthorized_invalid" and refused[0]["status"] == 401
        assert len(refused) <= 4, refused
        assert any(l.get("suppressed", 0) >= 1 for l in refused) or len(refused) >= 2
        assert any(l.get("tool") == "no_such_tool" and l["error_code"] == "UNKNOWN_TOOL" for l in lines)
        assert "emcp_wrong" not in ts.audit.read_text()
    finally:
        ts.close()


@pytest.mark.parametrize("fault", ["trace.after_attach", "session.after_attach", "deploy.after_attach",
                                   "trace.after_attach:panic", "session.after_attach:panic",
                                   "deploy.after_attach:panic"])
async def test_a_failure_after_attach_leaves_nothing(binary, fault):
    """A failure (or a panic) right after a gadget or a deployment attached: the call says
    so, and every program, map and link is gone; no session stays counted as running."""
    require_root()
    config = """
tools:
  trace:
    max_sessions: 1
  deploy:
    enabled: true
    allowed_types: ["tracepoint"]
"""
    server = start_http_server(binary, config=config, env={"EBPF_MCP_FAULTS": fault})
    try:
        baseline = _bpf_ids()
        tool, args = {
            "trace": ("trace", {"gadget": "exec", "duration_ms": 2000}),
            "session": ("trace_start", {"gadget": "exec", "duration_ms": 20000}),
            "deploy": ("deploy", {"object": b64("ok_tracepoint")}),
        }[fault.split(".")[0]]
        r = await call(server.url, tool, args)
        assert r["error"], r
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            now = _bpf_ids()
            if all(now[k] <= baseline[k] for k in now):
                break
            await anyio.sleep(0.1)
        now = _bpf_ids()
        assert all(now[k] <= baseline[k] for k in now), (baseline, now)
        info = await call(server.url, "info", {"sections": ["server"]})
        assert not info["server"].get("trace_sessions"), info["server"].get("trace_sessions")
        if tool == "trace_start":
            # The failed session holds no place: the single one allowed can start.
            again = await call(server.url, "trace_start", {"gadget": "exec", "duration_ms": 1000})
            assert again.get("code") != "TOO_MANY_SESSIONS", again
        assert server.process.poll() is None, "the server is still up"
    finally:
        assert server.stop() == 0, server.stderr()


async def test_a_pid_scoped_trace_ends_when_its_process_exits(binary):
    require_root()
    server = start_http_server(binary)
    try:
        sleeper = subprocess.Popen(["sleep", "30"])
        killed = {}

        async def on_progress(value, total, message) -> None:
            # Attached: the process goes, and the trace must end within a few seconds.
            if "at" not in killed:
                killed["at"] = time.monotonic()
                sleeper.kill()

        async with Client(server.url, mode="legacy") as client:
            result = await client.call_tool("trace", {"gadget": "signal", "pid": sleeper.pid, "duration_ms": 20000},
                                            progress_callback=on_progress)
        sleeper.wait()
        r = {"error": result.is_error, **(result.structured_content or {})}
        assert not r["error"], r
        assert r["stopped_by"] == "process_exited", r
        assert time.monotonic() - killed["at"] < 5, r
        gone = await call(server.url, "trace", {"gadget": "exec", "pid": sleeper.pid, "duration_ms": 500})
        assert gone["error"] and gone["code"] == "PROCESS_NOT_FOUND", gone
    finally:
        assert server.stop() == 0, server.stderr()


@pytest.mark.parametrize(("yaml", "key"), [
    ('server:\n  request_timeout: "0s"\n', "server.request_timeout"),
    ('tools:\n  trace:\n    session_max_duration: "100000000h"\n', "tools.trace.session_max_duration"),
    ('tools:\n  deploy:\n    max_ttl: "100000000h"\n', "tools.deploy.max_ttl"),
    ('tools:\n  deploy:\n    default_ttl: "2h"\n    max_ttl: "1h"\n', "tools.deploy.default_ttl"),
    ('resources:\n  cleanup_interval: "0s"\n', "resources.cleanup_interval"),
    ('tools:\n  deploy:\n    allowed_attach_points: ["xdp:["]\n', "tools.deploy.allowed_attach_points"),
])
def test_absurd_configuration_is_refused_with_its_key_and_line(binary, yaml, key):
    d = pathlib.Path(tempfile.mkdtemp())
    cfg = d / "c.yaml"
    cfg.write_text(yaml)
    r = subprocess.run([str(binary), "config", "check", str(cfg)], capture_output=True, text=True)
    shutil.rmtree(d)
    assert r.returncode != 0, r.stdout
    assert key in r.stderr and "line" in r.stderr, r.stderr


def memory_cgroup(limit: int):
    """A memory cgroup of `limit` bytes (v2 where the memory controller is there, else the
    v1 `memory` hierarchy); yields (the path to write a pid to, a reader of its peak)."""
    v2 = pathlib.Path("/sys/fs/cgroup/unified")
    if not v2.is_dir():
        v2 = pathlib.Path("/sys/fs/cgroup")
    name = f"ebpf-mcp-test-{uuid.uuid4().hex[:8]}"
    if "memory" in (v2 / "cgroup.controllers").read_text(errors="replace").split() if (v2 / "cgroup.controllers").exists() else False:
        cg = v2 / name
        cg.mkdir()
        (cg / "memory.max").write_text(str(limit))
        return cg, lambda: int((cg / "memory.peak").read_text()) if (cg / "memory.peak").exists() else 0, \
            lambda: int(dict(l.split() for l in (cg / "memory.events").read_text().splitlines()).get("oom_kill", 0))
    v1 = pathlib.Path("/sys/fs/cgroup/memory")
    if not v1.is_dir():
        if IN_CI:
            pytest.fail("no memory cgroup controller (v1 or v2) is mounted")
        pytest.skip("no memory cgroup controller is mounted")
    cg = v1 / name
    cg.mkdir()
    (cg / "memory.limit_in_bytes").write_text(str(limit))
    return cg, lambda: int((cg / "memory.max_usage_in_bytes").read_text()), \
        lambda: int(dict(l.split() for l in (cg / "memory.oom_control").read_text().splitlines()).get("oom_kill", 0))


async def test_the_server_lives_in_64_mib_through_a_storm_and_sessions(binary):
    """The DaemonSet's limit: 64 MiB of memory (cgroup), one trace at the maximum event
    count under an open() storm, then 24 background sessions under the same storm."""
    require_root()
    cg, peak, ooms = memory_cgroup(64 * 1024 * 1024)
    server = None
    try:
        server = start_http_server(
            binary,
            config="server:\n  rate_limit:\n    requests_per_second: 0\n",
            prefix=("sh", "-c", f'echo $$ > {cg}/cgroup.procs && exec "$@"', "sh"),
        )
        storm = subprocess.Popen([str(WORKLOAD), "opens", "2000000000"], stdout=subprocess.DEVNULL)
        try:
            r = await call(server.url, "trace", {"gadget": "open", "max_events": 10000, "duration_ms": 4000})
            assert not r["error"], r
            started = 0
            while started < 24:
                rs = []
                async with anyio.create_task_group() as tg:
                    async def one():
                        rs.append(await call(server.url, "trace_start", {"gadget": "open", "duration_ms": 1500}))
                    for _ in range(4):
                        tg.start_soon(one)
                assert all(not x["error"] for x in rs), rs
                started += 4
                await anyio.sleep(2.5)
                # The next batch starts when this one has finished (a slow build may lag).
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    sessions = (await call(server.url, "info", {"sections": ["server"]}))["server"]["trace_sessions"]
                    if all(x["state"] == "finished" for x in sessions):
                        break
                    await anyio.sleep(0.2)
        finally:
            storm.kill()
            storm.wait()
        assert server.process.poll() is None, f"the server died (oom kills: {ooms()}): {server.stderr()[-2000:]}"
        info = await call(server.url, "info", {})
        assert not info["error"]
        assert ooms() == 0
        print(f"memory cgroup peak: {peak() / 2**20:.1f} MiB")
    finally:
        if server is not None:
            server.stop()
        with contextlib.suppress(OSError):
            cg.rmdir()
