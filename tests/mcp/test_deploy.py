"""deploy, undeploy and list_deployments against the real kernel, with the objects in
bpf/tests/ (sources there, builds in bpf/obj/tests/): benign programs load, attach, count
real activity and go away; every refused object is turned away with its code before the
kernel sees it; expiry, kill -9, pins and 500 deploy/undeploy cycles leave nothing behind;
the audit log has one line per call."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import anyio
import httpx2 as httpx
import pytest
from mcp import Client

from conftest import veth_namespace
from conftest import ROOT, WORKLOAD, _bpf_ids, require_root, start_http_server
from test_metrics import METRICS_CONFIG, observability_url, value

pytestmark = pytest.mark.anyio

OBJECTS = ROOT / "bpf" / "obj" / "tests"


def obj(name: str) -> bytes:
    return (OBJECTS / f"{name}.bpf.o").read_bytes()


def b64(name: str) -> str:
    return base64.b64encode(obj(name)).decode()


def config(workdir: pathlib.Path, bpffs: pathlib.Path, **extra: str) -> str:
    audit = extra.get("audit", str(workdir / "audit.log"))
    return (METRICS_CONFIG if extra.get("metrics") else "") + f"""
security:
  audit_log: "{audit}"
resources:
  cleanup_interval: "1h"                # expiries must not wait for the sweep
  max_cpu_time_ms: {extra.get("max_cpu_time_ms", "1000")}
ebpf:
  bpffs_dir: "{bpffs}"
tools:
  deploy:
    enabled: true
    allowed_types: ["tracepoint", "xdp", "tc", "uprobe"]
    allowed_dirs: ["{workdir / 'allowed'}"]
    allowed_attach_points: {extra.get("attach", '["tracepoint:syscalls:*", "xdp:emcp*", "tc:emcp*", "uprobe:*"]').replace("WORKDIR", str(workdir))}
    max_object_bytes: 262144
"""


class Deployer:
    """A server with the deploy tier on, its work directory, audit log and bpffs dir."""

    def __init__(self, binary: pathlib.Path, **extra: str) -> None:
        self.workdir = pathlib.Path(tempfile.mkdtemp(prefix="ebpf-mcp-deploy-"))
        (self.workdir / "allowed").mkdir()
        self.bpffs = pathlib.Path(f"/sys/fs/bpf/ebpf-mcp-test-{uuid.uuid4().hex[:8]}")
        self.audit = self.workdir / "audit.log"
        self.binary = binary
        self.extra = extra
        self.server = start_http_server(binary, config=config(self.workdir, self.bpffs, **extra))
        self.url = self.server.url

    def restart(self) -> None:
        self.server = start_http_server(self.binary, config=config(self.workdir, self.bpffs, **self.extra))
        self.url = self.server.url

    def audit_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.audit.read_text().splitlines()]

    def close(self) -> None:
        if self.server.process.poll() is None:
            assert self.server.stop() == 0, self.server.stderr()
        shutil.rmtree(self.bpffs, ignore_errors=True)
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def dep(binary):
    require_root()
    d = Deployer(binary)
    yield d
    d.close()


async def call(client: Client, tool: str, args: dict):
    return await client.call_tool(tool, args)


async def ok(client: Client, tool: str, args: dict) -> dict:
    r = await call(client, tool, args)
    assert not r.is_error, r.structured_content
    return r.structured_content


async def counter(client: Client, map_id: int) -> int:
    data = await ok(client, "map_dump", {"map_id": map_id})
    return sum(e["value"] for e in data["entries"])


@pytest.fixture
async def client(dep):
    """One MCP session: deployments belong to the session that made them."""
    async with Client(dep.url, mode="legacy") as c:
        yield c


# ------------------------------------------------------------------------------ benign


async def test_a_tracepoint_counter_counts_and_goes_away(dep, client):
    out = await ok(client, "deploy", {"object": b64("ok_tracepoint"), "ttl_seconds": 120})
    assert out["verdict"] == "deployed" and out["deployment_id"].startswith("dep-")
    (prog,) = out["programs"]
    assert prog["attached_to"] == "tracepoint:syscalls:sys_enter_getpid" and prog["id"] > 0
    (m,) = out["maps"]
    assert m["name"] == "getpid_calls" and m["id"] > 0
    assert out["object_sha256"] and out["expires_at"]
    assert prog["id"] in _bpf_ids()["prog"]
    subprocess.run([sys.executable, "-c", "import os\nfor _ in range(1000): os.getpid()"], check=True)
    assert await counter(client, m["id"]) >= 1000
    listed = await ok(client, "list_deployments", {})
    assert [d["deployment_id"] for d in listed["deployments"]] == [out["deployment_id"]]
    assert listed["deployments"][0]["expires_in_seconds"] > 100
    one = await ok(client, "list_deployments", {"deployment_id": out["deployment_id"]})
    assert one["deployments"] == listed["deployments"]
    gone = await ok(client, "undeploy", {"deployment_id": out["deployment_id"]})
    assert gone["programs"] == ["count_getpid"] and gone["maps"] == ["getpid_calls"]
    assert prog["id"] not in _bpf_ids()["prog"]
    again = await call(client, "undeploy", {"deployment_id": out["deployment_id"]})
    assert again.is_error and again.structured_content["code"] == "DEPLOYMENT_NOT_FOUND"
    assert again.structured_content["context"]["deployment_id"] == out["deployment_id"]
    missing = await call(client, "list_deployments", {"deployment_id": out["deployment_id"]})
    assert missing.is_error and missing.structured_content["code"] == "DEPLOYMENT_NOT_FOUND"


async def test_xdp_and_tc_count_packets_on_a_veth_pair(dep, client):
    with veth_namespace(232) as (ns, host_if, host_ip, _peer):
        xdp = await ok(client, "deploy", {"object": b64("ok_xdp"),
                                           "attach": [{"program": "count_packets", "interface": host_if}]})
        tc = await ok(client, "deploy", {"object": b64("ok_tc"),
                                          "attach": [{"program": "count_tc", "interface": host_if,
                                                      "direction": "ingress"}]})
        assert xdp["programs"][0]["attached_to"] == f"xdp:{host_if}"
        assert tc["programs"][0]["attached_to"] == f"tc:{host_if}:ingress"
        packets = 20
        subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c",
                        "import socket, time\n"
                        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                        f"for _ in range({packets}):\n"
                        f"    s.sendto(b'x', ('{host_ip}', 9)); time.sleep(0.01)"],
                       check=True, capture_output=True)
        # Each datagram crosses the host end of the pair (plus ARP): counted by both.
        assert await counter(client, xdp["maps"][0]["id"]) >= packets
        assert await counter(client, tc["maps"][0]["id"]) >= packets
        for d in (xdp, tc):
            await ok(client, "undeploy", {"deployment_id": d["deployment_id"]})


async def test_a_deleted_interface_is_reported_as_such(dep, client):
    """The interface goes while the deployment stays: list_deployments says the program no
    longer acts, and list_links names the interface as deleted (not "another namespace")."""
    with veth_namespace(233) as (_ns, host_if, _ip, _peer):
        xdp = await ok(client, "deploy", {"object": b64("ok_xdp"),
                                           "attach": [{"program": "count_packets", "interface": host_if}]})
        prog = xdp["programs"][0]["id"]
        listed = await ok(client, "list_deployments", {"deployment_id": xdp["deployment_id"]})
        assert "detached" not in listed["deployments"][0]["programs"][0]
        subprocess.run(["ip", "link", "del", host_if], check=True)
        listed = await ok(client, "list_deployments", {"deployment_id": xdp["deployment_id"]})
        assert "interface was deleted" in listed["deployments"][0]["programs"][0]["detached"], listed
        links = await ok(client, "list_links", {"prog_id": prog})
        (link,) = links["links"]
        assert "deleted" in link["target"] and "other network namespace" not in link["target"], link
        assert link["detached"] == "its interface was deleted"
        await ok(client, "undeploy", {"deployment_id": xdp["deployment_id"]})


async def test_a_uprobe_counter_counts_every_call(dep, client):
    calls = 777
    proc = subprocess.Popen([str(WORKLOAD), "calls", str(calls)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("ready")
    out = await ok(client, "deploy", {
        "object": b64("ok_uprobe"),
        "attach": [{"program": "count_calls", "target": f"{WORKLOAD}:ebpf_mcp_work", "pid": proc.pid}]})
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert proc.wait(timeout=10) == 0
    assert await counter(client, out["maps"][0]["id"]) == calls
    await ok(client, "undeploy", {"deployment_id": out["deployment_id"]})


async def test_a_path_inside_the_allowed_directory(dep, client):
    target = dep.workdir / "allowed" / "counter.o"
    target.write_bytes(obj("ok_tracepoint"))
    out = await ok(client, "deploy", {"path": str(target), "ttl_seconds": 30})
    await ok(client, "undeploy", {"deployment_id": out["deployment_id"]})


async def test_verify_only_returns_the_verifier_verdict(dep, client):
    before = _bpf_ids()
    good = await ok(client, "deploy", {"object": b64("ok_tracepoint"), "verify_only": True})
    assert good["verdict"] == "accepted" and "deployment_id" not in good
    assert good["programs"][0]["verified_insns"] > 0 and "attached_to" not in good["programs"][0]
    bad = await ok(client, "deploy", {"object": b64("bad_verifier"), "verify_only": True})
    assert bad["verdict"] == "rejected"
    assert "invalid mem access" in bad["verifier_log"] or "map_value_or_null" in bad["verifier_log"]
    assert len(bad["verifier_log"].splitlines()) <= 60
    assert _bpf_ids()["prog"] <= before["prog"], "verify_only unloads"
    loaded = await call(client, "deploy", {"object": b64("bad_verifier")})
    assert loaded.is_error and loaded.structured_content["code"] == "VERIFIER_REJECTED"
    assert "verify_only" in loaded.structured_content["message"]


# ------------------------------------------------------------------------------ refused


REFUSED = [
    ("bad_write_user", "BLOCKED_HELPER", "bpf_probe_write_user"),
    ("bad_override", "PROGRAM_TYPE_NOT_ALLOWED", "bpf_override_return"),
    ("bad_signal", "BLOCKED_HELPER", "bpf_send_signal"),
    ("bad_fmod_ret", "PROGRAM_TYPE_NOT_ALLOWED", "fmod_ret"),
    ("bad_lsm", "PROGRAM_TYPE_NOT_ALLOWED", "lsm"),
    ("bad_big", "TOO_MANY_INSTRUCTIONS", "4096"),
    ("bad_socket", "PROGRAM_TYPE_NOT_ALLOWED", "socket_filter"),
    ("bad_big_map", "MAPS_TOO_LARGE", "resources.max_memory_mb"),
    ("bad_no_programs", "NO_PROGRAMS", "no BPF program"),
    # Hostile: blocked helpers only in callbacks handed to bpf_loop, for_each, timers.
    ("bad_callback", "BLOCKED_HELPER", "bpf_send_signal"),
    # Hostile: kernel objects named by numbers the object encodes (the server's map fds).
    ("bad_raw_refs", "UNRESOLVED_REFERENCE", "file descriptor 3"),
    ("bad_kfunc", "KFUNC_NOT_ALLOWED", "bpf_rcu_read_lock"),
    ("bad_maps", "INVALID_MAP_NAME", "escape"),
    ("bad_parser", "INVALID_ELF", "pinning 5"),
]


@pytest.mark.parametrize("name,code,needle", REFUSED, ids=[r[0] for r in REFUSED])
async def test_refused_objects_never_reach_the_kernel(dep, client, name, code, needle):
    before = _bpf_ids()
    r = await call(client, "deploy", {"object": b64(name)})
    assert r.is_error, name
    err = r.structured_content
    assert err["code"] == code and needle in err["message"], err
    assert err["category"] == "validation"
    assert all(v["code"] for v in err["context"]["violations"])
    after = _bpf_ids()
    assert after["prog"] <= before["prog"] and after["map"] <= before["map"]


async def test_hostile_objects_are_refused_even_for_verify_only(dep, client):
    """Validation comes before the verifier: verify_only loads nothing the validator refuses."""
    before = _bpf_ids()
    for name in ["bad_callback", "bad_raw_refs", "bad_kfunc", "bad_maps", "bad_parser"]:
        r = await call(client, "deploy", {"object": b64(name), "verify_only": True})
        assert r.is_error and r.structured_content["category"] == "validation", (name, r.structured_content)
    after = _bpf_ids()
    assert after["prog"] <= before["prog"] and after["map"] <= before["map"]


async def test_callbacks_name_their_helpers_in_the_refusal_and_the_audit_log(dep, client):
    r = await call(client, "deploy", {"object": b64("bad_callback")})
    err = r.structured_content
    by_program = {v["program"]: v for v in err["context"]["violations"] if v["code"] == "BLOCKED_HELPER"}
    assert set(by_program) == {"via_loop", "via_for_each", "via_timer", "nested"}, err
    helpers = {p["name"]: p["helpers"] for p in err["context"]["programs"]}
    assert "send_signal" in helpers["via_loop"] and "loop" in helpers["via_loop"]
    assert "probe_write_user" in helpers["via_for_each"]
    assert "send_signal_thread" in helpers["via_timer"]
    assert "send_signal" in helpers["nested"]
    line = [a for a in dep.audit_lines() if a.get("tool") == "deploy"][-1]
    assert line["verdict"] == "refused" and "BLOCKED_HELPER" in line["violations"]
    assert "send_signal" in line["program_helpers"]["via_loop"], line


async def test_raw_map_fds_cannot_reach_the_servers_own_maps(dep, client):
    """The server holds other deployments' maps and trace sessions' configuration maps at
    small descriptor numbers; an object that names a descriptor instead of its own map is
    refused whichever number it picks, and the session keeps working."""
    victim = await ok(client, "deploy", {"object": b64("ok_tracepoint"), "ttl_seconds": 120})
    session = await ok(client, "trace_start", {"gadget": "exec", "duration_ms": 20000})
    try:
        before = _bpf_ids()
        r = await call(client, "deploy", {"object": b64("bad_raw_refs")})
        assert r.is_error and r.structured_content["code"] == "UNRESOLVED_REFERENCE"
        assert _bpf_ids()["prog"] <= before["prog"]
        child = subprocess.Popen(["/bin/true"])
        child.wait()
        events, cursor = [], None
        deadline = time.monotonic() + 10
        while not any(e.get("pid") == child.pid for e in events) and time.monotonic() < deadline:
            await anyio.sleep(0.2)
            seen = await ok(client, "trace_read", {"session_id": session["session_id"],
                                                   **({"cursor": cursor} if cursor is not None else {})})
            events += seen["events"]
            cursor = seen.get("next_cursor", cursor)
        assert any(e.get("pid") == child.pid and e.get("comm") == "true" for e in events), "the session is still served"
    finally:
        await ok(client, "trace_stop", {"session_id": session["session_id"]})
        await ok(client, "undeploy", {"deployment_id": victim["deployment_id"]})


async def test_every_violation_is_reported(dep, client):
    r = await call(client, "deploy", {"object": b64("bad_override")})
    codes = [v["code"] for v in r.structured_content["context"]["violations"]]
    assert codes == ["PROGRAM_TYPE_NOT_ALLOWED", "BLOCKED_HELPER"]
    helper = r.structured_content["context"]["violations"][1]
    assert helper["program"] == "fake_error" and helper["offset"] >= 0


async def test_bad_input_is_refused_with_its_code(dep, client):
    good = obj("ok_tracepoint")
    outside = pathlib.Path(tempfile.mkdtemp()) / "outside.o"
    outside.write_bytes(good)
    link = dep.workdir / "allowed" / "escape.o"
    link.unlink(missing_ok=True)
    link.symlink_to(outside)
    cases = [
        ({"object": base64.b64encode(good[: len(good) // 3]).decode()}, "INVALID_ELF"),
        ({"object": base64.b64encode(os.urandom(4096)).decode()}, "INVALID_ELF"),
        ({"object": "not base64 at all!"}, "INVALID_ELF"),
        ({"object": base64.b64encode(os.urandom(300_000)).decode()}, "OBJECT_TOO_LARGE"),
        ({"path": str(outside)}, "PATH_NOT_ALLOWED"),
        ({"path": str(link)}, "PATH_NOT_ALLOWED"),
        ({"path": "/root/no/such/object.o"}, "PATH_NOT_ALLOWED"),
        ({"path": "/etc/shadow"}, "PATH_NOT_ALLOWED"),
        ({"object": b64("ok_tracepoint"), "path": str(outside)}, "INVALID_ARGUMENTS"),
        ({"object": b64("ok_tracepoint"),
          "attach": [{"program": "count_getpid", "tracepoint": "sched:sched_switch"}]},
         "ATTACH_POINT_NOT_ALLOWED"),
        ({"object": b64("ok_xdp"), "attach": [{"program": "count_packets", "interface": "lo"}]},
         "ATTACH_POINT_NOT_ALLOWED"),
        # Names that would leave the allowed category, or name no tracepoint at all.
        ({"object": b64("ok_tracepoint"),
          "attach": [{"program": "count_getpid", "tracepoint": "syscalls:../sched/sched_switch"}]},
         "INVALID_ARGUMENTS"),
        ({"object": b64("ok_tracepoint"),
          "attach": [{"program": "count_getpid", "tracepoint": "syscalls:sys_enter_nothing_here"}]},
         "INVALID_ARGUMENTS"),
        ({"object": b64("ok_xdp"), "attach": [{"program": "count_packets", "interface": "../lo"}]},
         "INVALID_ARGUMENTS"),
        ({"object": b64("ok_xdp")}, "INVALID_ARGUMENTS"),
        ({"object": b64("ok_tracepoint"), "ttl_seconds": 10 ** 9}, "INVALID_ARGUMENTS"),
        ({"object": b64("ok_tracepoint"), "programs": ["nope"]}, "INVALID_ARGUMENTS"),
    ]
    for args, code in cases:
        r = await call(client, "deploy", args)
        assert r.is_error and r.structured_content["code"] == code, (list(args), r.structured_content)
    # A refused path reads the same whether it exists, is elsewhere, or leads out by a link.
    said = set()
    for path in [str(outside), str(link), "/root/no/such/object.o", "/etc/shadow"]:
        r = await call(client, "deploy", {"path": path})
        said.add(r.structured_content["message"].replace(path, "X"))
    assert len(said) == 1, said
    shutil.rmtree(outside.parent)


async def test_attach_targets_are_resolved_before_policy(binary):
    """Policy sees the real file and the real interface: `..`, a symbolic link out of an
    allowed directory and an interface's alternative name do not get past it, and a refused
    path reads the same whether or not it exists."""
    require_root()
    d = Deployer(binary, attach='["tracepoint:syscalls:*", "uprobe:WORKDIR/allowed/*:*", "xdp:emcpalt*"]')
    try:
        allowed = d.workdir / "allowed"
        elsewhere = d.workdir / "elsewhere"
        elsewhere.mkdir()
        shutil.copy(WORKLOAD, allowed / "workload")
        shutil.copy(WORKLOAD, elsewhere / "workload")
        (allowed / "link").symlink_to(elsewhere / "workload")
        async with Client(d.url, mode="legacy") as client:
            async def deploy_uprobe(path):
                return await call(client, "deploy", {"object": b64("ok_uprobe"), "attach": [
                    {"program": "count_calls", "target": f"{path}:ebpf_mcp_work"}]})
            before = _bpf_ids()
            dotdot = await deploy_uprobe(f"{allowed}/../elsewhere/workload")
            assert dotdot.structured_content["code"] == "ATTACH_POINT_NOT_ALLOWED", dotdot.structured_content
            link = await deploy_uprobe(allowed / "link")
            assert link.structured_content["code"] == "ATTACH_POINT_NOT_ALLOWED"
            assert "elsewhere" not in link.structured_content["message"], "where a link leads is not said"
            # A path whose text stays inside while its links lead out.
            (allowed / "up").symlink_to(d.workdir)
            trick = await deploy_uprobe(f"{allowed}/up/elsewhere/workload")
            assert trick.structured_content["code"] == "ATTACH_POINT_NOT_ALLOWED"
            # A FIFO inside the policy: refused at once, not a hang.
            os.mkfifo(allowed / "fifo")
            fifo = await deploy_uprobe(allowed / "fifo")
            assert fifo.structured_content["code"] == "ATTACH_POINT_NOT_ALLOWED"
            # Missing, present elsewhere, missing inside: one answer.
            answers = {}
            for path in ["/root/no-such-binary", "/usr/bin/true", f"{allowed}/nothing", f"{allowed}/fifo"]:
                r = await deploy_uprobe(path)
                assert r.structured_content["code"] == "ATTACH_POINT_NOT_ALLOWED", r.structured_content
                answers[path] = r.structured_content["message"].replace(path, "X")
            assert len(set(answers.values())) == 1, answers
            assert _bpf_ids()["prog"] <= before["prog"]
            ok_dep = await ok(client, "deploy", {"object": b64("ok_uprobe"), "ttl_seconds": 60, "attach": [
                {"program": "count_calls", "target": f"{allowed}/workload:ebpf_mcp_work"}]})
            assert ok_dep["programs"][0]["attached_to"] == f"uprobe:{allowed}/workload:ebpf_mcp_work"
            await ok(client, "undeploy", {"deployment_id": ok_dep["deployment_id"]})
            # An alternative name inside the policy for a device outside it.
            with veth_namespace(77) as (_ns, host, _addr, _peer):
                subprocess.run(["ip", "link", "property", "add", "dev", host, "altname", "emcpalt0"], check=True)
                alt = await call(client, "deploy", {"object": b64("ok_xdp"), "attach": [
                    {"program": "count_packets", "interface": "emcpalt0"}]})
                assert alt.structured_content["code"] == "ATTACH_POINT_NOT_ALLOWED", alt.structured_content
                assert f"xdp:{host}" in alt.structured_content["message"]
    finally:
        d.close()


# ------------------------------------------------------------------------------ lifetime


async def test_ttl_expiry_releases_at_the_deadline(dep, client):
    out = await ok(client, "deploy", {"object": b64("ok_tracepoint"), "ttl_seconds": 1})
    prog = out["programs"][0]["id"]
    # The sweep runs hourly here: only a release at the deadline passes. The bound is
    # generous for a loaded machine and still far below the sweep.
    with anyio.fail_after(30):
        while prog in _bpf_ids()["prog"]:
            await anyio.sleep(0.2)
    listed = await ok(client, "list_deployments", {})
    assert listed["deployments"] == []
    # The server's release is on the record, with the owner and the program's tag.
    expired = [r for r in dep.audit_lines() if r.get("event") == "deployment_expired"
               and r["deployment_id"] == out["deployment_id"]]
    assert len(expired) == 1, expired
    assert expired[0]["outcome"] == "ok" and expired[0]["identity"] == "server"
    assert expired[0]["program_tags"] == [out["programs"][0]["tag"]]


async def test_limits_refuse_what_would_exceed_them(binary):
    require_root()
    d = Deployer(binary)
    try:
        # per_owner.max_programs is 5: the sixth program of one client is refused.
        async with Client(d.url, mode="legacy") as client:
            ids = []
            for _ in range(5):
                r = await client.call_tool("deploy", {"object": b64("ok_tracepoint")})
                assert not r.is_error, r.structured_content
                ids.append(r.structured_content["deployment_id"])
            sixth = await client.call_tool("deploy", {"object": b64("ok_tracepoint")})
            assert sixth.is_error and sixth.structured_content["code"] == "RESOURCE_LIMIT"
            assert "resources.per_owner" in sixth.structured_content["message"]
            assert sixth.structured_content["context"]["programs_in_use"] == 5
            for i in ids:
                await client.call_tool("undeploy", {"deployment_id": i})
            again = await client.call_tool("deploy", {"object": b64("ok_tracepoint")})
            assert not again.is_error
    finally:
        d.close()


def bpf_stats_enabled() -> int:
    return int(pathlib.Path("/proc/sys/kernel/bpf_stats_enabled").read_text())


async def test_a_deployment_over_its_cpu_limit_is_released(binary):
    require_root()
    stats_before = bpf_stats_enabled()
    d = Deployer(binary, max_cpu_time_ms="2", metrics="on")
    try:
        async with Client(d.url, mode="legacy") as client:
            out = await ok(client, "deploy", {"object": b64("ok_tracepoint")})
            prog = out["programs"][0]["id"]
            # Idle, it is measured, listed with its cost, and kept.
            with anyio.fail_after(20):
                while True:
                    (row,) = (await ok(client, "list_deployments", {}))["deployments"]
                    if row.get("cpu", {}).get("ms_per_s") is not None:
                        break
                    await anyio.sleep(0.3)
            assert row["cpu"]["max_ms_per_s"] == 2 and row["cpu"]["ms_per_s"] < 2
            # The kernel counts its runs now (the sysctl does not show a BPF_ENABLE_STATS hold).
            subprocess.run([sys.executable, "-c", "import os\nfor _ in range(1000): os.getpid()"], check=True)
            listed = await ok(client, "list_programs", {"id": prog})
            assert listed["stats_source"] == "cumulative"
            assert listed["programs"][0]["stats"]["run_cnt"] >= 1000
            assert (await ok(client, "info", {"sections": ["kernel"]}))["kernel"]["bpf_stats_enabled"] is True
            # getpid in a loop runs the program for far more than 2 ms of CPU a second.
            busy = subprocess.Popen([sys.executable, "-c", "import os\nwhile True: os.getpid()"])
            try:
                with anyio.fail_after(30):
                    while prog in _bpf_ids()["prog"]:
                        await anyio.sleep(0.2)
            finally:
                busy.kill()
                busy.wait()
            records = [r for r in d.audit_lines() if r.get("event") == "deployment_cpu_exceeded"]
            assert len(records) == 1, records
            assert records[0]["deployment_id"] == out["deployment_id"] and records[0]["outcome"] == "ok"
            assert records[0]["cpu_ms_per_s"] > 2 and records[0]["max_cpu_time_ms"] == 2
            assert records[0]["program_tags"] == [out["programs"][0]["tag"]]
            scrape = httpx.get(f"{observability_url(d.server)}/metrics", timeout=10).text
            assert value(scrape, "ebpf_mcp_deployments_released_total", reason="cpu_limit") == 1
            gone = await call(client, "undeploy", {"deployment_id": out["deployment_id"]})
            assert gone.is_error and "max_cpu_time_ms" in gone.structured_content["message"]
            assert (await ok(client, "list_deployments", {}))["deployments"] == []
            # The statistics go off with the last deployment (unless the sysctl keeps them on).
            with anyio.fail_after(10):
                while (await ok(client, "list_programs", {"limit": 1}))["stats_source"] != (
                    "cumulative" if stats_before else "off"
                ):
                    await anyio.sleep(0.2)
    finally:
        d.close()


def rss_kib(pid: int) -> int:
    m = re.search(r"VmRSS:\s+(\d+) kB", pathlib.Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1))


async def test_500_cycles_leave_nothing_and_memory_stays_flat(dep):
    obj64 = b64("ok_tracepoint")
    async with Client(dep.url, mode="legacy") as client:
        async def cycle():
            r = await client.call_tool("deploy", {"object": obj64})
            assert not r.is_error, r.structured_content
            g = await client.call_tool("undeploy", {"deployment_id": r.structured_content["deployment_id"]})
            assert not g.is_error

        for _ in range(50):
            await cycle()
        warm = rss_kib(dep.server.process.pid)
        for _ in range(450):
            await cycle()
        end = rss_kib(dep.server.process.pid)
    # Flat: growth over 450 more cycles stays within allocator noise.
    assert end - warm < 8 * 1024, (warm, end)


def test_kill_9_leaves_nothing_attached_and_pins_are_cleaned_at_the_next_start(binary):
    require_root()
    baseline = _bpf_ids()
    d = Deployer(binary)
    try:
        async def both():
            async with Client(d.url, mode="legacy") as c:
                return (await ok(c, "deploy", {"object": b64("ok_tracepoint"), "pin": True}),
                        await ok(c, "deploy", {"object": b64("ok_tracepoint")}))

        pinned, plain = anyio.run(both)
        pin_path = pathlib.Path(pinned["maps"][0]["pinned_at"])
        assert pin_path.exists() and str(pin_path).startswith(str(d.bpffs))
        d.server.process.send_signal(signal.SIGKILL)
        d.server.process.wait(timeout=10)
        # Programs and links die with the process; the pinned map outlives it.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            now = _bpf_ids()
            if not (now["prog"] - baseline["prog"]) and not (now["link"] - baseline["link"]):
                break
            time.sleep(0.1)
        now = _bpf_ids()
        assert pinned["programs"][0]["id"] not in now["prog"]
        assert plain["programs"][0]["id"] not in now["prog"]
        assert not (now["link"] - baseline["link"])
        assert pinned["maps"][0]["id"] in now["map"] and pin_path.exists()
        d.restart()  # a new server cleans what the dead one pinned
        assert not pin_path.exists()
        deadline = time.monotonic() + 5
        while pinned["maps"][0]["id"] in _bpf_ids()["map"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pinned["maps"][0]["id"] not in _bpf_ids()["map"]
    finally:
        d.close()


# ------------------------------------------------------------------------------ audit, tiers


async def test_the_audit_log_has_one_line_per_call_without_object_bytes(binary):
    require_root()
    d = Deployer(binary)
    try:
        obj64 = b64("ok_tracepoint")
        async with Client(d.url, mode="legacy") as client:
            r = await client.call_tool("deploy", {"object": obj64})
            did = r.structured_content["deployment_id"]
            await client.call_tool("deploy", {"object": b64("bad_write_user")})
            await client.call_tool("info", {})
            await client.call_tool("undeploy", {"deployment_id": did})
        all_lines = d.audit_lines()
        # Calls that change state are on the record before they act: a `begin` line, then
        # the outcome under the same call id.
        begins = [line for line in all_lines if line.get("phase") == "begin"]
        assert [line["tool"] for line in begins] == ["deploy", "deploy", "undeploy"]
        for b in begins:
            ends = [e for e in all_lines if e.get("call_id") == b["call_id"] and e.get("phase") == "end"]
            assert len(ends) == 1 and all_lines.index(ends[0]) > all_lines.index(b), b
            assert b["identity"] == "anonymous" and "outcome" not in b
        assert begins[0]["parameters"]["object"]["redacted"] is True
        lines = [line for line in all_lines if line.get("phase") != "begin"]
        assert [line["tool"] for line in lines] == ["deploy", "deploy", "info", "undeploy"]
        ok_line, refused, info, gone = lines
        assert ok_line["outcome"] == "ok" and ok_line["deployment_id"] == did
        assert ok_line["verdict"] == "deployed" and len(ok_line["program_tags"]) == 1
        assert ok_line["parameters"]["object"]["bytes"] == len(obj("ok_tracepoint"))
        assert ok_line["parameters"]["object"]["sha256"] == r.structured_content["object_sha256"]
        assert refused["outcome"] == "error" and refused["error_code"] == "BLOCKED_HELPER"
        assert refused["verdict"] == "refused" and refused["violations"] == ["BLOCKED_HELPER"]
        assert info["tier"] == "read" and gone["parameters"] == {"deployment_id": did}
        for line in lines:
            assert line["transport"] == "http" and line["client"] and line["identity"] == "anonymous"
            assert isinstance(line["duration_ms"], int) and line["timestamp"].endswith("Z")
        assert obj64[:64] not in d.audit.read_text()
        # logrotate: move the file, SIGHUP, and the next line goes to a new file.
        d.audit.rename(d.audit.with_suffix(".1"))
        reopened = d.server.stderr().count("SIGHUP: audit log reopened")
        d.server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while d.server.stderr().count("SIGHUP: audit log reopened") == reopened:
            assert time.monotonic() < deadline, d.server.stderr()
            await anyio.sleep(0.05)
        async with Client(d.url, mode="legacy") as client:
            await client.call_tool("list_deployments", {})
        assert [line["tool"] for line in d.audit_lines()] == ["list_deployments"]
        # A deleted log is created again, and the record goes there.
        d.audit.unlink()
        async with Client(d.url, mode="legacy") as client:
            await client.call_tool("info", {})
        assert [line["tool"] for line in d.audit_lines()] == ["info"]
    finally:
        d.close()


async def test_deploy_fails_closed_when_the_audit_log_cannot_be_written(binary):
    require_root()
    d = Deployer(binary, audit="/proc/ebpf-mcp-no-such-dir/audit.log")
    try:
        before = _bpf_ids()
        async with Client(d.url, mode="legacy") as c:
            r = await call(c, "deploy", {"object": b64("ok_tracepoint")})
            info = await call(c, "info", {})
        assert r.is_error and r.structured_content["code"] == "AUDIT_UNAVAILABLE"
        assert "security.audit_log" in r.structured_content["message"]
        assert _bpf_ids()["prog"] <= before["prog"]
        assert not info.is_error, "read-tier calls go on (security.audit_required_for_reads: false)"
    finally:
        d.close()


async def test_the_deploy_tier_is_off_by_default_and_marked_destructive(binary, dep):
    require_root()
    default = start_http_server(binary)
    try:
        async with Client(default.url, mode="legacy") as client:
            names = {t.name for t in (await client.list_tools()).tools}
        assert not names & {"deploy", "undeploy", "list_deployments"}
    finally:
        assert default.stop() == 0
    async with Client(dep.url, mode="legacy") as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert tools["deploy"].annotations.destructive_hint is True
    assert tools["undeploy"].annotations.destructive_hint is True
    assert tools["list_deployments"].annotations.read_only_hint is True
