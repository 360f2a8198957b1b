"""The network, memory, disk, scheduler, CPU and user-space gadgets against the real kernel:
each test starts the exact activity (a TCP connection on loopback or in a network namespace
it creates, an OOM kill in a memory cgroup it creates, direct writes, sleeps, a busy loop, N
calls of a function) and checks the matching result with the right pid and fields."""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import anyio
import pytest
from mcp import Client

from conftest import veth_namespace
from conftest import ROOT, UNLIMITED, WORKLOAD, require_root, start_http_server, trace_while

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def url(binary):
    require_root()
    if not WORKLOAD.exists():
        pytest.fail(f"{WORKLOAD} missing: run `cargo build --examples` (scripts/test does)")
    server = start_http_server(binary, config=UNLIMITED)
    yield server.url
    assert server.stop() == 0, server.stderr()


def listener(host: str = "127.0.0.1", family: int = socket.AF_INET) -> socket.socket:
    s = socket.socket(family, socket.SOCK_STREAM)
    s.bind((host, 0))
    s.listen(8)
    return s


def closed_port() -> int:
    """A loopback port nothing listens on (bound, never listened, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ------------------------------------------------------------------------------ TCP


async def test_tcp_connect_reports_the_connecting_process_and_failures(url):
    srv = listener()
    port = srv.getsockname()[1]
    refused = closed_port()
    seen = {}

    def action():
        c = socket.create_connection(("127.0.0.1", port))
        seen["sport"] = c.getsockname()[1]
        a, _ = srv.accept()
        c.close()
        a.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", refused))

    data = await trace_while(url, {"gadget": "tcp_connect", "duration_ms": 2500, "pid": os.getpid()}, action)
    srv.close()
    events = data["events"]
    assert all(e["pid"] == os.getpid() for e in events), "pid filter"
    ok = [e for e in events if e["dport"] == port]
    assert len(ok) == 1, events
    (e,) = ok
    assert e["result"] == "connected" and e["sport"] == seen["sport"]
    assert e["saddr"] == e["daddr"] == "127.0.0.1" and e["family"] == "ipv4"
    assert e["comm"] and e["uid"] == 0 and e["latency_ns"] > 0
    bad = [e for e in events if e["dport"] == refused]
    assert len(bad) == 1 and bad[0]["result"] == "ECONNREFUSED", events


async def test_tcp_accept_reports_the_accepting_process_over_ipv6(url):
    srv = listener("::1", socket.AF_INET6)
    port = srv.getsockname()[1]
    seen = {}

    def action():
        child = subprocess.run(
            [sys.executable, "-c",
             f"import socket; c = socket.create_connection(('::1', {port})); print(c.getsockname()[1])"],
            capture_output=True, text=True, check=True)
        a, peer = srv.accept()
        seen["fd"] = a.fileno()
        seen["client_port"] = int(child.stdout)
        a.close()

    data = await trace_while(url, {"gadget": "tcp_accept", "duration_ms": 2500, "pid": os.getpid()}, action)
    srv.close()
    hits = [e for e in data["events"] if e["sport"] == port]
    assert len(hits) == 1, data["events"]
    (e,) = hits
    assert e["pid"] == os.getpid() and e["family"] == "ipv6"
    assert e["saddr"] == "::1" and e["daddr"] == "::1"
    assert e["dport"] == seen["client_port"] and e["fd"] == seen["fd"]


async def test_tcp_state_follows_a_connection_through_its_life(url):
    srv = listener()
    port = srv.getsockname()[1]
    seen = {}

    def action():
        c = socket.create_connection(("127.0.0.1", port))
        seen["client"] = c.getsockname()[1]
        a, _ = srv.accept()
        time.sleep(0.05)
        c.close()
        time.sleep(0.05)
        a.close()

    data = await trace_while(url, {"gadget": "tcp_state", "duration_ms": 2500}, action)
    srv.close()
    client = [
        (e["oldstate"], e["newstate"])
        for e in data["events"]
        if e["sport"] == seen["client"] and e["dport"] == port
    ]
    assert client[:3] == [("SYN_SENT", "ESTABLISHED"), ("ESTABLISHED", "FIN_WAIT1"), ("FIN_WAIT1", "FIN_WAIT2")], client
    server_side = [
        (e["oldstate"], e["newstate"], e["duration_ns"])
        for e in data["events"]
        if e["sport"] == port and e["dport"] == seen["client"]
    ]
    assert ("ESTABLISHED", "CLOSE_WAIT") in [s[:2] for s in server_side], server_side
    # It spent the 50 ms sleep established before the client closed.
    established = [d for old, new, d in server_side if old == "ESTABLISHED"]
    assert established and established[0] >= 40_000_000


async def test_tcp_retransmit_sees_segments_the_peer_drops(url):
    """The peer stops answering (its address is removed, so it drops what arrives); our
    unacknowledged data is retransmitted by the kernel's timer."""
    if subprocess.run(["which", "ip"], capture_output=True).returncode != 0:
        pytest.fail("iproute2 (ip) is missing; scripts/bootstrap installs it")
    with veth_namespace(231) as (ns, _if, _host, peer):
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c",
             f"import socket,time\ns=socket.socket(); s.bind(('{peer}', 7777)); s.listen(1)\n"
             "print('up', flush=True)\nc,_=s.accept(); time.sleep(30)"],
            stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout.readline().strip() == "up"
            conn = socket.create_connection((peer, 7777), timeout=5)
            local_port = conn.getsockname()[1]

            def action():
                subprocess.run(["ip", "-n", ns, "addr", "del", f"{peer}/24", "dev", "peer0"], check=True)
                conn.send(b"x" * 1000)
                time.sleep(1.5)

            data = await trace_while(url, {"gadget": "tcp_retransmit", "duration_ms": 2500}, action)
            conn.close()
        finally:
            server.kill()
            server.wait()
    ours = [e for e in data["events"] if e["sport"] == local_port and e["dport"] == 7777]
    assert len(ours) >= 2, data["events"]
    assert all(e["daddr"] == peer and e["state"] == "ESTABLISHED" for e in ours)


# ------------------------------------------------------------------------------ OOM


@contextlib.contextmanager
def memory_cgroup(limit_bytes: int):
    """A memory-limited cgroup (v2 when the memory controller is there, else v1); yields
    the file to write a pid into to move it in."""
    name = f"emcp-oom-{uuid.uuid4().hex[:8]}"
    v2 = pathlib.Path("/sys/fs/cgroup")
    if "memory" in (v2 / "cgroup.controllers").read_text() if (v2 / "cgroup.controllers").exists() else False:
        path = v2 / name
        path.mkdir()
        (path / "memory.max").write_text(str(limit_bytes))
        with contextlib.suppress(OSError):
            (path / "memory.swap.max").write_text("0")
    else:
        v1 = pathlib.Path("/sys/fs/cgroup/memory")
        if not (v1 / "memory.limit_in_bytes").exists():
            pytest.fail("no memory cgroup controller (v1 or v2) to cause an OOM kill in")
        path = v1 / name
        path.mkdir()
        (path / "memory.limit_in_bytes").write_text(str(limit_bytes))
        with contextlib.suppress(OSError):
            (path / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))
    try:
        yield path / "cgroup.procs"
    finally:
        for _ in range(50):
            try:
                path.rmdir()
                break
            except OSError:
                time.sleep(0.1)


async def test_oom_kill_names_the_victim(url):
    hog = ("import sys\nsys.stdin.readline()\nb = []\n"
           "while True: b.append(b'x' * (1 << 20))")
    with memory_cgroup(48 << 20) as procs:
        child = subprocess.Popen([sys.executable, "-c", hog], stdin=subprocess.PIPE)
        procs.write_text(str(child.pid))

        def action():
            child.stdin.write(b"go\n")
            child.stdin.flush()
            child.wait(timeout=20)

        data = await trace_while(url, {"gadget": "oom_kill", "duration_ms": 4000}, action)
    assert child.returncode == -9, "the hog should have been OOM-killed"
    victims = [e for e in data["events"] if e["victim_pid"] == child.pid]
    assert len(victims) == 1, data["events"]
    (v,) = victims
    assert v["victim_comm"].startswith("python")
    assert v["anon_rss_kb"] > 10_000 and v["total_vm_kb"] >= v["anon_rss_kb"]
    assert v["victim_uid"] == 0


# ------------------------------------------------------------------------------ latency


def block_device_of(path: pathlib.Path) -> str:
    """The whole-disk name the block layer reports for I/O to `path`'s filesystem."""
    dev = os.stat(path).st_dev
    sysfs = pathlib.Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    if not sysfs.exists():
        pytest.fail(f"{path} is not on a block device ({os.major(dev)}:{os.minor(dev)}); biolatency needs one")
    real = sysfs.resolve()
    if (real / "partition").exists():
        real = real.parent
    return real.name


async def test_biolatency_histograms_direct_writes_per_device(url):
    directory = pathlib.Path(tempfile.mkdtemp(dir=ROOT / "target"))
    target = directory / "bio.dat"
    device = block_device_of(directory)
    writes = 64

    def action():
        fd = os.open(target, os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o600)
        buf = mmap.mmap(-1, 4096)
        buf.write(b"y" * 4096)
        try:
            for i in range(writes):
                os.pwrite(fd, buf, i * 4096)
                os.fsync(fd)
        finally:
            os.close(fd)

    data = await trace_while(url, {"gadget": "biolatency", "duration_ms": 3000, "group_by": ["device", "op"]}, action)
    target.unlink()
    directory.rmdir()
    assert data["mode"] == "histogram"
    rows = {(h["key"]["device"], h["key"]["op"]): h for h in data["histograms"]}
    assert (device, "write") in rows, rows.keys()
    h = rows[(device, "write")]
    assert h["count"] >= writes
    assert sum(b["count"] for b in h["buckets"]) == h["count"]
    assert h["avg_us"] > 0 and h["p50_us"] <= h["p99_us"]
    assert all(b["low_us"] <= b["high_us"] for b in h["buckets"])
    assert data["events_total"] == sum(r["count"] for r in data["histograms"])


async def test_runqlat_measures_the_wakeups_of_a_sleeper(url):
    sleeps = 200
    children = {}

    def action():
        p = subprocess.run([str(WORKLOAD), "sleeps", str(sleeps), "1000"], capture_output=True, check=True)
        children["pid"] = json.loads(p.stdout)["pid"]

    data = await trace_while(url, {"gadget": "runqlat", "duration_ms": 3000, "comm": "workload",
                                   "group_by": ["pid", "comm"]}, action)
    rows = [h for h in data["histograms"] if h["key"].get("pid") == children["pid"]]
    assert len(rows) == 1, data["histograms"]
    (h,) = rows
    assert h["key"]["comm"] == "workload"
    # Nearly every sleep ends with a wakeup and a wait in the run queue (a timer that fires
    # before the sleeper has left its CPU needs no wait).
    assert sleeps * 9 // 10 <= h["count"] <= sleeps + 50
    assert all(r["key"]["comm"] == "workload" for r in data["histograms"]), "comm filter"


# ------------------------------------------------------------------------------ CPU, uprobes


async def test_profile_finds_the_busy_function(url):
    children = {}

    def action():
        p = subprocess.run([str(WORKLOAD), "spin", "2000"], capture_output=True, check=True)
        children["pid"] = json.loads(p.stdout)["pid"]

    data = await trace_while(url, {"gadget": "profile", "duration_ms": 3000, "frequency_hz": 99}, action)
    # System-wide: the spin is on top unless something else on the host was as busy.
    spin = next(f for f in data["functions"] if f["function"] == "ebpf_mcp_spin")
    assert spin["samples"] >= 100 and spin["samples"] >= data["functions"][0]["samples"] / 2, data["functions"][:5]
    workload = [c for c in data["counts"] if c["key"]["comm"] == "workload"]
    # ~2 s at 99 Hz on one CPU: about 200 samples.
    assert len(workload) == 1 and 100 <= workload[0]["count"] <= 260, data["counts"]
    stacks = [s for s in data["stacks"] if s["pid"] == children["pid"]]
    assert stacks and stacks[0]["frames"][0] == "ebpf_mcp_spin"
    line = next(f for f in data["folded"] if f.startswith("workload;"))
    assert ";ebpf_mcp_spin " in line and int(line.rsplit(" ", 1)[1]) > 50
    assert data["events_total"] == sum(c["count"] for c in data["counts"])


async def test_profile_names_stripped_code_by_file_address_and_build_id(url):
    """Frames of a stripped binary are `file+0xADDR` with ADDR the address in its ELF (what
    addr2line takes: here inside the function the unstripped binary names), and the file is
    listed with its build id."""
    stripped = pathlib.Path(tempfile.mkdtemp()) / "wl-stripped"
    shutil.copy(WORKLOAD, stripped)
    subprocess.run(["strip", str(stripped)], check=True)
    build_id = re.search(r"Build ID: (\w+)", subprocess.run(["readelf", "-n", str(stripped)], capture_output=True,
                                                            text=True, check=True).stdout).group(1)
    symbols = subprocess.run(["nm", "-S", str(WORKLOAD)], capture_output=True, text=True, check=True).stdout
    start, size = next((int(f[0], 16), int(f[1], 16)) for f in map(str.split, symbols.splitlines())
                       if len(f) == 4 and f[3] == "ebpf_mcp_spin")

    def action():
        subprocess.run([str(stripped), "spin", "1500"], capture_output=True, check=True)

    data = await trace_while(url, {"gadget": "profile", "duration_ms": 2500, "frequency_hz": 99,
                                   "comm": "wl-stripped"}, action)
    leaf = data["functions"][0]["function"]
    assert leaf.startswith("wl-stripped+0x") and start <= int(leaf.split("+")[1], 16) < start + size, (leaf, start, size)
    # A sample may also land in the dynamic loader or libc while the process starts or exits:
    # those files are listed too, each with its own build id.
    assert {"module": "wl-stripped", "path": str(stripped), "build_id": build_id} in data["modules"], data["modules"]
    for module in data["modules"]:
        note = subprocess.run(["readelf", "-n", module["path"]], capture_output=True, text=True, check=True).stdout
        assert module["build_id"] == re.search(r"Build ID: (\w+)", note).group(1), module
        assert module["module"] == pathlib.Path(module["path"]).name, module


def start_caller(calls: int) -> subprocess.Popen:
    proc = subprocess.Popen([str(WORKLOAD), "calls", str(calls)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("ready")
    return proc


@pytest.mark.parametrize("mode", ["count", "histogram"])
async def test_uprobe_counts_every_call(url, mode):
    calls = 1234
    proc = start_caller(calls)

    def action():
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.wait(timeout=10) == 0

    args = {"gadget": "uprobe", "target": f"{WORKLOAD}:ebpf_mcp_work", "pid": proc.pid,
            "duration_ms": 2500, "mode": mode}
    data = await trace_while(url, args, action)
    assert data["events_total"] == calls
    if mode == "count":
        assert data["counts"] == [{"key": {"pid": proc.pid, "comm": "workload"}, "count": calls}]
    else:
        (h,) = data["histograms"]
        assert h["count"] == calls and h["avg_us"] > 0
        assert len(data["hooks"]) == 2 and data["hooks"][1].startswith("uretprobe:")


async def test_uprobe_counts_calls_whose_arguments_pass_a_filter(url):
    """count mode with `filter` on the arguments: each call is sent and counted by the
    server, exactly."""
    proc = start_caller(1000)

    def action():
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.wait(timeout=10) == 0

    data = await trace_while(url, {"gadget": "uprobe", "target": f"{WORKLOAD}:ebpf_mcp_work", "pid": proc.pid,
                                   "duration_ms": 2500, "filter": "arg0 < 10 || arg0 >= 995", "group_by": ["pid"]},
                             action)
    assert data["mode"] == "count" and data["counted_in"] == "server", data
    assert data["counts"] == [{"key": {"pid": proc.pid}, "count": 15}], data
    assert data["events_filtered"] == 985


async def test_uprobe_events_carry_the_arguments(url):
    """Mode events: one event per call with its argument registers; ebpf_mcp_work(i) is
    called with i = 0..N-1, and a filter on arg0 keeps the calls asked for."""
    proc = start_caller(50)

    def action():
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.wait(timeout=10) == 0

    data = await trace_while(url, {"gadget": "uprobe", "mode": "events", "target": f"{WORKLOAD}:ebpf_mcp_work",
                                   "pid": proc.pid, "duration_ms": 4000, "filter": "arg0 >= 40",
                                   "fields": ["pid", "arg0"]}, action)
    assert data["events"] == [{"pid": proc.pid, "arg0": i} for i in range(40, 50)], data["events"]
    assert data["events_filtered"] == 40 and data["stopped_by"] == "process_exited"


def work(i: int) -> int:
    """What examples/workload.rs's ebpf_mcp_work(i) returns."""
    v = (i * 2654435761) % 2**64
    return ((v << 7) | (v >> 57)) % 2**64


async def test_uprobe_return_events_carry_the_result_and_the_duration(url):
    proc = start_caller(20)

    def action():
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.wait(timeout=10) == 0

    data = await trace_while(url, {"gadget": "uprobe", "mode": "events", "return": True,
                                   "target": f"{WORKLOAD}:ebpf_mcp_work", "pid": proc.pid, "duration_ms": 4000,
                                   "fields": ["arg0", "ret", "duration_ns"]}, action)
    assert [e["arg0"] for e in data["events"]] == list(range(20)), data["events"]
    assert all(e["ret"] == work(e["arg0"]) and e["duration_ns"] > 0 for e in data["events"]), data["events"]
    assert data["hooks"][1].startswith("uretprobe:")


async def test_list_links_names_a_uprobe_by_file_and_offset(url):
    """While a uprobe session runs, list_links shows its link as `uprobe FILE+0xOFFSET`,
    the file the probe is in and the symbol's offset in it."""
    proc = start_caller(1)
    try:
        async with Client(url, mode="legacy") as client:
            started = (await client.call_tool("trace_start", {"gadget": "uprobe", "pid": proc.pid,
                                                              "target": f"{WORKLOAD}:ebpf_mcp_work"})).structured_content
            try:
                links = (await client.call_tool("list_links", {"type": "perf_event"})).structured_content
            finally:
                await client.call_tool("trace_stop", {"session_id": started["session_id"]})
    finally:
        proc.stdin.write("go\n")
        proc.stdin.flush()
        proc.wait(timeout=10)
    nm = subprocess.run(["nm", str(WORKLOAD)], capture_output=True, text=True, check=True).stdout
    (addr,) = [line.split()[0] for line in nm.splitlines() if line.endswith(" ebpf_mcp_work")]
    mine = [lk for lk in links["links"] if str(WORKLOAD.resolve()) in lk["target"]]
    assert mine, links["links"]
    assert mine[0]["target"].startswith("uprobe ") and mine[0]["attach_type"] == "uprobe", mine
    assert mine[0]["offset"] > 0 and mine[0]["target"].endswith(f"+{mine[0]['offset']:#x}"), mine
    # The offset is the symbol's, in the file (its address minus the segment's).
    assert abs(mine[0]["offset"] - int(addr, 16)) < 0x100000, (mine, addr)


async def test_uprobe_on_a_library_by_name(url):
    """A bare library name resolves through the loader's cache (libc's getpid wrapper)."""

    def action():
        subprocess.run(["/bin/true"], check=True)

    data = await trace_while(url, {"gadget": "uprobe", "target": "libc.so.6:exit", "duration_ms": 1500,
                                   "comm": "true"}, action)
    assert data["events_total"] >= 1 and data["counts"][0]["key"]["comm"] == "true"


# A process in a mount namespace of its own, with a copy of libz at a path only it sees:
# tmpfs on /mnt inside the namespace. It loads the host's libz and the copy, says "ready",
# calls the copy's zlibVersion N times when told to, and exits.
LIBZ_CALLER = r"""
set -e
mount -t tmpfs none /mnt
cp "$(readlink -f /lib/x86_64-linux-gnu/libz.so.1)" /mnt/libz.so.1
exec python3 -c '
import ctypes, sys
ctypes.CDLL("/lib/x86_64-linux-gnu/libz.so.1")  # the host copy: `libz` then names two files
z = ctypes.CDLL("/mnt/libz.so.1")
print("ready", flush=True)
n = int(sys.stdin.readline())
for _ in range(n):
    z.zlibVersion()
'
"""


@contextlib.contextmanager
def libz_in_own_namespace():
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", LIBZ_CALLER],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        proc.kill()
        proc.wait()


async def test_uprobe_with_pid_finds_the_library_the_process_maps(url):
    """With `pid`, the target is the file that process maps, as it sees it: /mnt/libz.so.1
    exists only in its mount namespace, yet every call is counted and the hook names it.
    `libz` alone names both that copy and the host's libz (it loads that too): the answer
    lists both."""
    assert not pathlib.Path("/mnt/libz.so.1").exists()
    calls = 777
    with libz_in_own_namespace() as proc:
        async with Client(url, mode="legacy") as client:
            r = await client.call_tool("trace", {"gadget": "uprobe", "target": "libz:zlibVersion",
                                                 "pid": proc.pid, "duration_ms": 300})
        assert r.is_error and r.structured_content["code"] == "INVALID_ARGUMENTS"
        message = r.structured_content["message"]
        assert "`libz` matches 2 files" in message and "/mnt/libz.so.1" in message, message

        def action():
            proc.stdin.write(f"{calls}\n")
            proc.stdin.flush()
            assert proc.wait(timeout=20) == 0

        data = await trace_while(url, {"gadget": "uprobe", "target": "/mnt/libz.so.1:zlibVersion",
                                       "pid": proc.pid, "duration_ms": 4000}, action)
    assert data["hooks"] == ["uprobe:/mnt/libz.so.1:zlibVersion"], data["hooks"]
    assert data["events_total"] == calls, data
    assert data["counts"] == [{"key": {"pid": proc.pid, "comm": "python3"}, "count": calls}]
    assert data["stopped_by"] == "process_exited" and "warnings" not in data


async def test_uprobe_targets_name_what_the_process_maps(url):
    with libz_in_own_namespace() as proc:
        async with Client(url, mode="legacy") as client:
            async def trace(**args):
                return await client.call_tool("trace", {"gadget": "uprobe", "duration_ms": 300, **args})

            r = await trace(target="libnosuch:f", pid=proc.pid)
            assert r.is_error and r.structured_content["code"] == "INVALID_ARGUMENTS"
            message = r.structured_content["message"]
            assert "maps no file named `libnosuch`" in message and "it maps " in message, message
            assert "libz.so.1" in message or " more;" in message, message
            # A path the process does not map: attached, and said to be unable to fire.
            r = await trace(target=f"{WORKLOAD}:ebpf_mcp_work", pid=proc.pid)
            assert not r.is_error, r
            (warning,) = r.structured_content["warnings"]
            assert f"does not map {WORKLOAD}" in warning
        # A pid that does not exist.
        gone = subprocess.Popen(["true"])
        gone.wait()
        async with Client(url, mode="legacy") as client:
            r = await client.call_tool("trace", {"gadget": "uprobe", "target": "libc:malloc",
                                                 "pid": gone.pid, "duration_ms": 300})
        assert r.is_error and r.structured_content["code"] == "PROCESS_NOT_FOUND", r.structured_content


async def test_gadget_option_errors_say_how_to_fix_them(url):
    async with Client(url, mode="legacy") as client:
        for args, needle, code in [
            ({"gadget": "uprobe"}, "binary:symbol", "INVALID_ARGUMENTS"),
            ({"gadget": "uprobe", "target": f"{WORKLOAD}:no_such_symbol"}, "nm", "TARGET_NOT_FOUND"),
            ({"gadget": "uprobe", "target": "/no/such/binary:f"}, "nm", "TARGET_NOT_FOUND"),
            ({"gadget": "exec", "target": "x:y"}, "uprobe and kfunc gadgets only", "INVALID_ARGUMENTS"),
            ({"gadget": "profile", "frequency_hz": 100000}, "between 1 and 1000", "INVALID_ARGUMENTS"),
            ({"gadget": "biolatency", "mode": "events"}, "mode `histogram`", "INVALID_ARGUMENTS"),
            ({"gadget": "runqlat", "group_by": ["device"]}, "fields: pid, comm", "INVALID_ARGUMENTS"),
        ]:
            r = await client.call_tool("trace", {**args, "duration_ms": 500})
            assert r.is_error, args
            assert r.structured_content["code"] == code, (args, r.structured_content)
            assert needle in r.structured_content["message"], (args, r.structured_content["message"])


async def test_uprobe_errors_do_not_tell_which_paths_exist(url):
    """A missing file, a directory, a file that is not ELF and a missing symbol get the same
    answer: the trace tier cannot probe the host's file system through uprobe targets."""
    async with Client(url, mode="legacy") as client:
        messages = set()
        for target in ["/root/no-such-file:f", "/root:f", "/etc/hostname:f", f"{WORKLOAD}:no_such_symbol"]:
            r = await client.call_tool("trace", {"gadget": "uprobe", "target": target, "duration_ms": 300})
            assert r.is_error and r.structured_content["code"] == "TARGET_NOT_FOUND", (target, r.structured_content)
            messages.add(r.structured_content["message"])
        assert len(messages) == 1, messages


# ------------------------------------------------------------------------------ limits


def test_load_shedding_counts_what_it_does_not_decode(binary):
    """Over resources.max_events_per_second the server still takes every event from the
    kernel and counts it (exact total) but decodes no more: the shed ones are reported."""
    require_root()
    server = start_http_server(binary, config="resources:\n  max_events_per_second: 200\n")
    opens = 5000
    try:
        async def go():
            def action():
                subprocess.run([str(WORKLOAD), "opens", str(opens)], capture_output=True, check=True)

            return await trace_while(server.url, {"gadget": "open", "duration_ms": 2500, "mode": "count",
                                                  "comm": "workload", "group_by": ["comm", "path"]}, action)

        data = anyio.run(go)
    finally:
        assert server.stop() == 0, server.stderr()
    dev_null = [c for c in data["counts"] if c["key"]["path"] == "/dev/null"]
    decoded = sum(c["count"] for c in data["counts"])
    assert data["events_total"] >= opens
    assert data["events_shed"] > 0 and decoded <= 400
    assert decoded + data["events_shed"] == data["events_total"]
    assert dev_null and "max_events_per_second" in data["hint"] and "shed" in data["cut"]


def test_concurrent_traces_are_limited(binary):
    require_root()
    server = start_http_server(binary, config="tools:\n  trace:\n    max_concurrent: 1\n")
    try:
        async def go():
            async with Client(server.url, mode="legacy") as a, Client(server.url, mode="legacy") as b:
                attached = anyio.Event()

                async def on_progress(value, total, message) -> None:
                    attached.set()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(lambda: a.call_tool("trace", {"gadget": "exec", "duration_ms": 2500},
                                                      progress_callback=on_progress))
                    with anyio.fail_after(30):
                        await attached.wait()  # the first holds its slot
                    second = await b.call_tool("trace", {"gadget": "exec", "duration_ms": 500})
                    assert second.is_error and second.structured_content["code"] == "TOO_MANY_TRACES"
                    assert "max_concurrent" in second.structured_content["message"]
                third = await b.call_tool("trace", {"gadget": "exec", "duration_ms": 300})
                assert not third.is_error, "the slot is free again once the first ended"

        anyio.run(go)
    finally:
        assert server.stop() == 0, server.stderr()


async def test_a_session_shows_a_histogram_so_far(url):
    async with Client(url, mode="legacy") as client:
        started = await client.call_tool("trace_start", {"gadget": "runqlat", "comm": "workload"})
        assert not started.is_error, started
        sid = started.structured_content["session_id"]
        try:
            subprocess.run([str(WORKLOAD), "sleeps", "100", "1000"], check=True, capture_output=True)
            # The session refreshes its copy of the kernel's tables every second.
            deadline = time.monotonic() + 15
            while True:
                read = (await client.call_tool("trace_read", {"session_id": sid})).structured_content
                if (read["histograms"] and read["histograms"][0]["count"] >= 90) or time.monotonic() > deadline:
                    break
                await anyio.sleep(0.5)
        finally:
            stopped = (await client.call_tool("trace_stop", {"session_id": sid})).structured_content
        assert read["state"] == "running" and read["histograms"][0]["count"] >= 90
        assert stopped["histograms"][0]["count"] >= read["histograms"][0]["count"]
        assert stopped["events_total"] == stopped["histograms"][0]["count"]


async def test_info_reports_which_gadgets_this_kernel_supports(url):
    async with Client(url, mode="legacy") as client:
        info = (await client.call_tool("info", {"sections": ["gadgets"]})).structured_content
    gadgets = {g["name"]: g for g in info["gadgets"]}
    assert set(gadgets) >= {"exec", "exit", "open", "tcp_connect", "tcp_accept", "tcp_state",
                            "tcp_retransmit", "signal", "oom_kill", "syscalls", "biolatency",
                            "runqlat", "profile", "uprobe", "tracepoint"}
    # Everything the tests above ran is supported here; kernel functions cannot be traced on
    # a kernel without kprobes whose lockdown refuses fentry (test_kfunc.py).
    assert all(g["supported"] for n, g in gadgets.items() if n != "kfunc"), [
        g for g in gadgets.values() if not g["supported"]]
    conn = gadgets["tcp_connect"]
    assert "sock:inet_sock_set_state" in conn["hooks"]
    assert {"name": "latency_ns", "type": "u64", "unit": "ns"}.items() <= next(
        f for f in conn["fields"] if f["name"] == "latency_ns").items()
    assert gadgets["runqlat"]["modes"] == ["histogram"]
    assert gadgets["syscalls"]["modes"] == ["count", "histogram"]
    assert info["gadget_common_fields"][0]["name"] == "time"


async def test_every_gadget_info_supports_loads_and_attaches(url):
    """`supported` comes from loading each gadget's programs: every gadget info lists as
    supported attaches when traced, and `features.gadgets` names each one's load."""
    async with Client(url, mode="legacy") as client:
        info = (await client.call_tool("info", {"sections": ["gadgets", "features"]})).structured_content
        loads = info["features"]["gadgets"]
        extra = {"uprobe": {"target": f"{WORKLOAD}:ebpf_mcp_work"},
                 "tracepoint": {"tracepoint": "syscalls:sys_enter_getpid"},
                 "kfunc": {"target": "do_nanosleep"}}
        supported = [g["name"] for g in info["gadgets"] if g["supported"]]
        assert len(supported) >= 15
        for name in supported:
            if name != "kfunc":  # checked once per way it hooks: kfunc (fentry), kfunc (kprobe)
                assert loads[name]["status"] == "available", (name, loads[name])
            r = await client.call_tool("trace", {"gadget": name, "duration_ms": 200, **extra.get(name, {})})
            assert not r.is_error, (name, r.structured_content)
