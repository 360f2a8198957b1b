"""The process sandbox: the running server shows NoNewPrivs, a seccomp filter and its cut
capabilities in /proc; in a sandboxed process writes outside the allowed directories,
execution, TCP connects and mounts fail, while the allowed directory stays writable. (The
rest of the suite runs every tool with the sandbox on, its default.)"""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import socket
import subprocess
import tempfile
import time

import pytest
from mcp import Client

from conftest import BUILD, require_root, start_http_server

pytestmark = pytest.mark.anyio

PROBE = BUILD / "examples" / "sandbox_probe"
# The capabilities the server keeps (security/sandbox.rs `needed`).
KEPT = {"CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_NET_ADMIN": 12, "CAP_SYS_PTRACE": 19,
        "CAP_SYS_ADMIN": 21, "CAP_SYSLOG": 34, "CAP_PERFMON": 38, "CAP_BPF": 39}
KEPT_MASK = sum(1 << bit for bit in KEPT.values())


def status_of(pid: int) -> dict[str, str]:
    lines = pathlib.Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(l.split(":", 1) for l in lines if ":" in l)


async def test_the_running_server_is_confined(binary):
    require_root()
    server = start_http_server(binary)
    try:
        st = status_of(server.process.pid)
        assert st["NoNewPrivs"].strip() == "1"
        assert st["Seccomp"].strip() == "2"  # filter mode
        assert int(st["CapEff"], 16) == KEPT_MASK
        assert int(st["CapBnd"], 16) == KEPT_MASK
        assert int(st["CapAmb"], 16) == 0
        # Every thread, not only the first: the runtime started after the sandbox.
        for task in pathlib.Path(f"/proc/{server.process.pid}/task").iterdir():
            tst = status_of(int(task.name))
            assert tst["Seccomp"].strip() == "2" and int(tst["CapEff"], 16) == KEPT_MASK, task.name
        async with Client(server.url, mode="legacy") as c:
            info = (await c.call_tool("info", {"sections": ["all"]})).structured_content
        sandbox = info["server"]["sandbox"]
        assert sandbox["enabled"] and sandbox["no_new_privs"] and sandbox["bounding_set_reduced"]
        # Landlock is opt-in: its domain could not read other processes' /proc entries.
        assert sandbox["landlock"].startswith("off")
        assert sandbox["seccomp"].startswith("allow-list of")
        assert set(sandbox["capabilities"]) == set(KEPT)
        assert "problems" not in sandbox
        # The probes ran inside the sandbox and still found every attach kind that works here.
        assert info["features"]["attach"]["cgroup"]["status"] == "available"
        assert info["features"]["attach"]["xdp"]["status"] == "available"
    finally:
        assert server.stop() == 0


async def test_landlock_when_asked_confines_the_server_and_says_what_it_costs(binary):
    require_root()
    d = pathlib.Path(tempfile.mkdtemp(prefix="ebpf-mcp-sandbox-"))
    server = start_http_server(
        binary, config=f'security:\n  enable_landlock: true\n  audit_log: "{d}/audit.log"\n'
    )
    try:
        async with Client(server.url, mode="legacy") as c:
            info = (await c.call_tool("info", {"sections": ["all"]})).structured_content
            assert info["server"]["sandbox"]["landlock"] == "enforced"
            # Tools keep working (their audit lines are written in the allowed directory).
            assert not (await c.call_tool("list_programs", {})).is_error
        assert (d / "audit.log").read_text().count("\n") == 2
    finally:
        assert server.stop() == 0


def test_a_server_with_the_sandbox_off_says_so(binary):
    require_root()
    server = start_http_server(binary, config="security:\n  enable_sandboxing: false\n")
    try:
        st = status_of(server.process.pid)
        assert st["Seccomp"].strip() == "0"
        assert "enable_sandboxing is false" in server.stderr()
    finally:
        assert server.stop() == 0


def test_forbidden_writes_exec_connect_and_mount_fail_in_the_sandbox():
    require_root()
    assert PROBE.exists(), "build the examples first (scripts/test does)"
    d = pathlib.Path(tempfile.mkdtemp(prefix="ebpf-mcp-sandbox-"))
    audit_dir = d / "audit"
    denied = d / "elsewhere"
    audit_dir.mkdir()
    denied.mkdir()
    (d / "config.yaml").write_text(
        f'security:\n  enable_landlock: true\n  audit_log: "{audit_dir}/audit.log"\n'
    )
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        out = subprocess.run(
            [str(PROBE), str(d / "config.yaml"), str(audit_dir), str(denied), str(port)],
            capture_output=True, text=True, timeout=60,
        )
    finally:
        listener.close()
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["allowed_write"] == "ok"
    assert (audit_dir / "allowed").exists()
    assert r["denied_write"] == "EACCES" and not (denied / "denied").exists()
    assert r["exec"] in ("EACCES", "EPERM")
    assert r["connect"] == "EACCES"
    assert r["mount"] == "EPERM"
    assert r["no_new_privs"] == "1" and r["seccomp"] == "2"
    assert int(r["cap_eff"], 16) == KEPT_MASK
    # The refused mount is in the kernel's log, with the process and the syscall number.
    # kauditd prints it asynchronously.
    deadline = time.monotonic() + 5
    while not re.search(r'type=1326 .*comm="sandbox_probe".* syscall=165 ',
                        log := subprocess.run(["dmesg"], capture_output=True, text=True).stdout):
        assert time.monotonic() < deadline, "mount refusal not logged"
        time.sleep(0.1)


async def test_a_non_root_user_with_ambient_capabilities_serves_every_tier(binary):
    """What a service unit with User= and AmbientCapabilities= gives the server."""
    require_root()
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is needed")
    d = pathlib.Path(tempfile.mkdtemp(prefix="ebpf-mcp-sandbox-"))
    d.chmod(0o777)  # the audit log's directory, writable by the service user
    caps = ",".join(f"+{name[4:].lower()}" for name in KEPT)
    server = start_http_server(
        binary,
        config=f'security:\n  audit_log: "{d}/audit/audit.log"\n',
        prefix=("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                f"--inh-caps={caps}", f"--ambient-caps={caps}"),
    )
    try:
        st = status_of(server.process.pid)
        assert st["Uid"].split()[0] == "65534"
        assert int(st["CapEff"], 16) == KEPT_MASK and int(st["CapAmb"], 16) == 0
        async with Client(server.url, mode="legacy") as c:
            info = (await c.call_tool("info", {"sections": ["all"]})).structured_content
            assert info["kernel"]["capabilities"]["bpf"] is True
            assert info["server"]["sandbox"]["bounding_set_reduced"] is False  # no CAP_SETPCAP
            assert any("bounding set" in p for p in info["server"]["sandbox"]["problems"])
            programs = await c.call_tool("list_programs", {})
            assert not programs.is_error
            traced = await c.call_tool("trace", {"gadget": "exec", "duration_ms": 300})
            assert not traced.is_error, traced.structured_content
        assert (d / "audit" / "audit.log").stat().st_uid == 65534
    finally:
        assert server.stop(timeout=20) == 0, server.stderr()
