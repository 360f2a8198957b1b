"""trace against the real kernel: each gadget sees the exact activity the test causes, with
the right pid and fields; filters filter; counts are exact; cancellation, disconnection and
kill -9 leave nothing attached."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time

import anyio
import httpx2 as httpx
import pytest
from mcp import Client, StdioServerParameters

from conftest import INITIALIZE, UNLIMITED, WORKLOAD, _bpf_ids, require_root, server_env, start_http_server, trace_while, unique_marker

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def url(binary):
    require_root()
    server = start_http_server(binary, config=UNLIMITED)
    yield server.url
    assert server.stop() == 0, server.stderr()


async def test_exec_sees_the_binary_and_arguments(url):
    marker = unique_marker()
    children = {}

    def action():
        p = subprocess.run(["/bin/echo", marker, "second arg"], capture_output=True, check=True)
        assert p.stdout.decode().strip() == f"{marker} second arg"
        proc = subprocess.Popen(["/bin/sh", "-c", f"exec /bin/true {marker}"])
        children["sh"] = proc.pid
        proc.wait()
        with pytest.raises(FileNotFoundError):
            subprocess.run([f"/nonexistent/{marker}"])

    data = await trace_while(url, {"gadget": "exec", "duration_ms": 3000}, action)
    events = data["events"]
    echo = [e for e in events if marker in e["argv"] and e["argv"][0] == "/bin/echo"]
    assert len(echo) == 1, events
    (e,) = echo
    assert e["argv"] == ["/bin/echo", marker, "second arg"]
    assert e["filename"] == "/bin/echo" and e["ret"] == 0 and e["comm"] == "echo"
    assert e["ppid"] == os.getpid() and e["uid"] == 0
    true = [e for e in events if e["argv"] == ["/bin/true", marker]]
    assert len(true) == 1 and true[0]["pid"] == children["sh"], events
    failed = [e for e in events if e["filename"] == f"/nonexistent/{marker}"]
    assert len(failed) == 1 and failed[0]["ret"] == -2 and failed[0]["error"] == "ENOENT"
    assert data["events_dropped"] == 0 and data["stopped_by"] == "duration"
    assert data["events_total"] == data["events_returned"] == len(events)


async def test_exec_keeps_long_arguments_and_says_when_it_cut(url):
    """Arguments up to 255 bytes each arrive whole; one longer is cut there, more than 16
    are left out, and argv_truncated says so."""
    marker = unique_marker()
    long_arg = marker + "y" * 200  # under 255
    longer = marker + "z" * 300

    def action():
        subprocess.run(["/bin/echo", long_arg, ""], check=True, capture_output=True)
        subprocess.run(["/bin/echo", longer], check=True, capture_output=True)
        subprocess.run(["/bin/echo", marker, *map(str, range(20))], check=True, capture_output=True)

    data = await trace_while(url, {"gadget": "exec", "duration_ms": 2500, "comm": "echo"}, action)
    mine = [e for e in data["events"] if any(marker in a for a in e["argv"])]
    assert len(mine) == 3, data["events"]
    whole, cut, many = mine
    assert whole["argv"] == ["/bin/echo", long_arg, ""] and not whole["argv_truncated"]
    assert cut["argv"] == ["/bin/echo", longer[:255]] and cut["argv_truncated"]
    assert many["argv"] == ["/bin/echo", marker, *map(str, range(14))] and many["argv_truncated"]


async def test_exec_comm_matches_the_name_after_exec(url):
    """`comm` compares the program's name once the exec has happened, as the events report
    it: md5sum run 5 times by python (whose name before exec is python3) is seen 5 times."""
    marker = unique_marker()

    def action():
        for _ in range(5):
            subprocess.run(["md5sum", "/dev/null"], capture_output=True, check=True)
        subprocess.run(["/bin/echo", marker], capture_output=True, check=True)

    data = await trace_while(url, {"gadget": "exec", "duration_ms": 2500, "comm": "md5sum"}, action)
    events = data["events"]
    assert len(events) == 5, events
    assert all(e["comm"] == "md5sum" and e["argv"] == ["md5sum", "/dev/null"] for e in events), events
    assert all(e["ppid"] == os.getpid() for e in events), events


def cgroup2_mount() -> pathlib.Path:
    for line in pathlib.Path("/proc/self/mounts").read_text().splitlines():
        _, where, fstype, *_ = line.split()
        if fstype == "cgroup2":
            return pathlib.Path(where)
    raise AssertionError("no cgroup2 hierarchy is mounted")


async def test_cgroup_filter_sees_only_that_cgroup(url):
    """`cgroup` filters in the kernel by the task's cgroup v2 id: an exec from a shell the
    test moved into a new cgroup is seen, the same exec outside it is not."""
    marker = unique_marker()
    group = cgroup2_mount() / f"ebpf-mcp-test-{marker}"
    group.mkdir()
    cgroup_id = group.stat().st_ino
    try:
        def action():
            subprocess.run(["sh", "-c", f"echo $$ > {group}/cgroup.procs && exec /bin/echo {marker} in"],
                           check=True, capture_output=True)
            subprocess.run(["/bin/echo", marker, "out"], check=True, capture_output=True)

        data = await trace_while(url, {"gadget": "exec", "duration_ms": 2000, "cgroup": str(group)}, action)
    finally:
        group.rmdir()
    argvs = [e["argv"] for e in data["events"]]
    assert argvs == [["/bin/echo", marker, "in"]], argvs
    assert data["events"][0]["cgroup_id"] == cgroup_id


async def test_open_sees_a_unique_path(url):
    directory = pathlib.Path(tempfile.mkdtemp())
    existing = directory / f"{unique_marker()}.txt"
    existing.write_text("x")
    missing = directory / f"{unique_marker()}-missing"

    def action():
        subprocess.run(["cat", str(existing)], check=True, capture_output=True)
        subprocess.run(["cat", str(missing)], capture_output=True)
        subprocess.run(["sh", "-c", f"echo x > {directory / 'created.txt'}"], check=True)

    data = await trace_while(url, {"gadget": "open", "duration_ms": 3000, "comm": "cat"}, action)
    assert all(e["comm"] == "cat" for e in data["events"]), "comm filter"
    hit = [e for e in data["events"] if e["path"] == str(existing)]
    assert len(hit) == 1 and hit[0]["ret"] >= 3 and hit[0]["flags"].startswith("O_RDONLY")
    miss = [e for e in data["events"] if e["path"] == str(missing)]
    assert len(miss) == 1 and miss[0]["error"] == "ENOENT"
    # The shell's open was filtered out by comm.
    assert not [e for e in data["events"] if e["path"].endswith("created.txt")]


async def test_exit_reports_codes_and_signals(url):
    pids = {}

    def action():
        code = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(7)"])
        code.wait()
        pids["code"] = code.pid
        killed = subprocess.Popen(["sleep", "30"])
        time.sleep(0.2)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        pids["killed"] = killed.pid

    data = await trace_while(url, {"gadget": "exit", "duration_ms": 3000}, action)
    by_pid = {e["pid"]: e for e in data["events"]}
    assert by_pid[pids["code"]]["exit_code"] == 7 and by_pid[pids["code"]]["signal"] == ""
    killed = by_pid[pids["killed"]]
    assert killed["signal"] == "SIGKILL" and killed["exit_code"] == 0 and killed["comm"] == "sleep"
    assert killed["lifetime_ns"] >= 150_000_000


async def test_signal_names_sender_and_target(url):
    target = {}

    def action():
        child = subprocess.Popen(["sleep", "30"])
        target["pid"] = child.pid
        time.sleep(0.2)
        os.kill(child.pid, signal.SIGUSR1)
        child.wait()

    data = await trace_while(url, {"gadget": "signal", "duration_ms": 3000, "pid": os.getpid()}, action)
    sent = [e for e in data["events"] if e["target_pid"] == target["pid"]]
    assert len(sent) == 1, data["events"]
    (e,) = sent
    assert e["signal"] == "SIGUSR1" and e["pid"] == os.getpid() and e["target_comm"] == "sleep"
    assert e["result"] == "delivered"
    assert all(ev["pid"] == os.getpid() for ev in data["events"]), "pid filter"


async def test_syscalls_counts_exactly_in_the_kernel(url):
    n = 5000
    child = {}

    def action():
        proc = subprocess.Popen([sys.executable, "-c", f"import os, sys\nsys.stdin.read()\nfor _ in range({n}): os.getppid()"],
                                stdin=subprocess.PIPE)
        child["pid"] = proc.pid
        proc.communicate(b"")

    # The child is created after the trace starts, so filter by name, then by its pid.
    data = await trace_while(url, {"gadget": "syscalls", "duration_ms": 4000, "group_by": ["pid", "syscall"], "top": 500}, action)
    rows = {(r["key"]["pid"], r["key"]["syscall"]): r["count"] for r in data["counts"]}
    assert rows[(child["pid"], "getppid")] == n, sorted(rows.items())[:20]
    assert data["mode"] == "count" and data["events_dropped"] == 0
    assert data["events_total"] >= n


async def test_syscall_latency_shows_where_dsync_writes_wait(url):
    """Mode histogram: how long each syscall takes from entry to return. 200 O_DSYNC writes
    to a file on disk (the repository's filesystem) each wait for the device; the reads
    of /dev/zero next to them do not."""
    directory = pathlib.Path(tempfile.mkdtemp(dir=pathlib.Path(__file__).resolve().parents[2] / "target"))
    target = directory / "dsync.out"
    child = {}

    def action():
        proc = subprocess.Popen(["dd", "if=/dev/zero", f"of={target}", "bs=4k", "count=200",
                                 "oflag=dsync", "status=none"])
        child["pid"] = proc.pid
        assert proc.wait(timeout=60) == 0

    try:
        data = await trace_while(url, {"gadget": "syscalls", "mode": "histogram", "duration_ms": 4000,
                                       "comm": "dd", "group_by": ["pid", "syscall"]}, action)
    finally:
        target.unlink(missing_ok=True)
        directory.rmdir()
    assert data["mode"] == "histogram"
    assert data["hooks"] == ["raw_syscalls:sys_enter", "raw_syscalls:sys_exit"]
    rows = {(h["key"]["pid"], h["key"]["syscall"]): h for h in data["histograms"]}
    write, read = rows[(child["pid"], "write")], rows[(child["pid"], "read")]
    assert write["count"] == 200 and read["count"] >= 200, (write, read)
    # Medians: one preemption of a read must not decide it.
    assert write["p50_us"] > read["p50_us"], (write, read)
    assert sum(b["count"] for b in write["buckets"]) == 200


async def test_count_mode_groups_events(url):
    def action():
        for _ in range(5):
            subprocess.run(["/bin/true"], check=True)
        for _ in range(3):
            subprocess.run(["/bin/ls", "/"], check=True, capture_output=True)

    data = await trace_while(url, {"gadget": "exec", "duration_ms": 3000, "mode": "count", "group_by": ["comm", "ret"],
                                   "filter": f"ppid == {os.getpid()}"}, action)
    rows = {(r["key"]["comm"], r["key"]["ret"]): r["count"] for r in data["counts"]}
    assert rows[("true", 0)] == 5 and rows[("ls", 0)] == 3
    assert data["counts"][0]["count"] >= data["counts"][-1]["count"]


async def test_bad_arguments(url):
    async with Client(url, mode="legacy") as client:
        for args, needle in (
            ({"gadget": "nope"}, "exec, exit, open"),
            ({"gadget": "exec", "duration_ms": 10_000_000}, "tools.trace.max_duration"),
            ({"gadget": "exec", "comm": "x" * 20}, "15"),
            ({"gadget": "syscalls", "mode": "events"}, "mode `count`"),
            ({"gadget": "exec", "mode": "count", "group_by": ["nope"]}, "fields: time, pid"),
            ({"gadget": "exec", "cgroup": "/definitely/not/a/cgroup"}, "cgroup"),
        ):
            r = await client.call_tool("trace", args)
            assert r.is_error, args
            assert r.structured_content["code"] == "INVALID_ARGUMENTS", r.structured_content
            assert needle in r.structured_content["message"], r.structured_content["message"]


async def test_progress_arrives_every_second(url):
    progress = []

    async def on_progress(value, total, message):
        progress.append((value, total, message))

    async with Client(url, mode="legacy") as client:
        r = await client.call_tool("trace", {"gadget": "exec", "duration_ms": 3500}, progress_callback=on_progress)
    assert not r.is_error
    # First when the gadget is attached, then every second.
    assert progress[0][0] == 0 and progress[0][2].startswith("attached: tracing with `exec`"), progress
    assert len(progress) >= 3 and all(t == 3500 for _, t, _ in progress)
    assert all("events so far" in m for _, _, m in progress[1:]), progress


async def test_cancel_stops_at_once_and_detaches(url):
    before = _bpf_ids()
    async with Client(url, mode="legacy") as client:
        started = time.monotonic()
        with anyio.move_on_after(1.0):
            await client.call_tool("trace", {"gadget": "open", "duration_ms": 30000})
        # The session still works, and the trace is gone from the kernel.
        await client.call_tool("info", {})
    assert time.monotonic() - started < 10
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        leftover = {k: v - before[k] for k, v in _bpf_ids().items() if v - before[k]}
        if not leftover:
            break
        time.sleep(0.2)
    assert not leftover, f"attached after cancel: {leftover}"


def test_kill_9_mid_trace_leaves_nothing_attached(binary):
    """fd-owned links: a killed server's gadget disappears with its process."""
    require_root()
    before = _bpf_ids()
    proc = subprocess.Popen([str(binary), "call", "trace", json.dumps({"gadget": "exec", "duration_ms": 30000})],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=server_env())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (_bpf_ids()["link"] - before["link"]):
        time.sleep(0.05)
    assert _bpf_ids()["link"] - before["link"], "the trace never attached"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        leftover = {k: v - before[k] for k, v in _bpf_ids().items() if v - before[k]}
        if not leftover:
            break
        time.sleep(0.1)
    assert not leftover


def test_ctrl_c_on_the_command_line_prints_the_result_so_far(binary):
    require_root()
    proc = subprocess.Popen([str(binary), "call", "--log-level", "info", "trace",
                             json.dumps({"gadget": "exec", "duration_ms": 30000})],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=server_env())
    # Once the gadget is attached (its log line), an exec the test makes, then Ctrl-C at
    # once: the result holds it, the last read of the ring included.
    err = b""
    deadline = time.monotonic() + 30
    while b"tracing with" not in err:
        line = proc.stderr.readline()
        assert line and time.monotonic() < deadline, err
        err += line
    child = subprocess.Popen(["/bin/true"])
    child.wait()
    proc.send_signal(signal.SIGINT)
    out, rest = proc.communicate(timeout=15)
    assert proc.returncode == 0, err + rest
    data = json.loads(out)
    assert data["stopped_by"] == "cancelled"
    assert data["duration_ms"] < 10000
    assert any(e["pid"] == child.pid and e["comm"] == "true" for e in data["events"]), data["events"]


async def test_stdio_disconnect_mid_trace_detaches(binary):
    require_root()
    before = _bpf_ids()
    params = StdioServerParameters(command=str(binary), args=["serve"], env=server_env())
    async with Client(params, mode="legacy") as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.call_tool, "trace", {"gadget": "open", "duration_ms": 30000})
            await anyio.sleep(1.0)
            tg.cancel_scope.cancel()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        leftover = {k: v - before[k] for k, v in _bpf_ids().items() if v - before[k]}
        if not leftover:
            break
        time.sleep(0.2)
    assert not leftover


def _wait_attached(before: dict[str, set[int]], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not (_bpf_ids()["prog"] - before["prog"]):
        assert time.monotonic() < deadline, "the trace never attached"
        time.sleep(0.1)


def _wait_detached(before: dict[str, set[int]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        leftover = {k: v - before[k] for k, v in _bpf_ids().items() if v - before[k]}
        if not leftover:
            return
        assert time.monotonic() < deadline, f"still attached after the client left: {leftover}"
        time.sleep(0.2)


@pytest.mark.parametrize("era", ["2025-11-25", "2026-07-28"])
def test_http_client_gone_mid_trace_detaches(binary, era):
    """A client that closes its connection during a 30 s trace: the trace stops and detaches
    within seconds, in both eras (2026-07-28 writes nothing on the connection before the
    result, so only the connection's own close can tell)."""
    require_root()
    server = start_http_server(binary)
    try:
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        args = {"name": "trace", "arguments": {"gadget": "open", "duration_ms": 30000}}
        before = _bpf_ids()
        if era == "2025-11-25":
            r = httpx.post(server.url, headers=headers, json=INITIALIZE, timeout=10)
            headers |= {"Mcp-Session-Id": r.headers["mcp-session-id"], "MCP-Protocol-Version": era}
            httpx.post(server.url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, timeout=10)
            with httpx.Client(timeout=30) as c:
                with c.stream("POST", server.url, headers=headers,
                              json={"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": args}) as resp:
                    assert resp.status_code == 200
                    _wait_attached(before)
        else:
            meta = {"io.modelcontextprotocol/protocolVersion": era, "io.modelcontextprotocol/clientCapabilities": {}}
            headers |= {"MCP-Protocol-Version": era, "Mcp-Method": "tools/call", "Mcp-Name": "trace"}
            body = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {**args, "_meta": meta}}
            with httpx.Client(timeout=30) as c:
                # Nothing comes back before the result: the client gives up waiting.
                with pytest.raises(httpx.ReadTimeout):
                    c.post(server.url, headers=headers, json=body, timeout=httpx.Timeout(30, read=3))
        # The connection is closed now; the 30 s trace must not outlive it by much.
        _wait_detached(before, timeout=10)
        # And the call itself ended then (noticed by the connection watcher, or by hyper
        # when it happens to read the close first), not at the end of its 30 s.
        wait_for_line = time.monotonic() + 10
        while not (m := re.search(r'tool="trace".*elapsed_ms=(\d+)', server.stderr())):
            assert time.monotonic() < wait_for_line, server.stderr()
            time.sleep(0.1)
        assert int(m.group(1)) < 15000, m.group(0)
    finally:
        assert server.stop() == 0, server.stderr()


async def test_list_tracepoints(url):
    root = pathlib.Path("/sys/kernel/tracing/events")
    on_disk = sorted(f"{c.name}:{e.name}" for c in root.iterdir() if c.is_dir()
                     for e in c.iterdir() if (e / "format").is_file())
    async with Client(url, mode="legacy") as client:
        cats = (await client.call_tool("list_tracepoints", {})).structured_content
        opens = (await client.call_tool("list_tracepoints", {"pattern": "syscalls:sys_enter_open*"})).structured_content
        one = (await client.call_tool("list_tracepoints", {"pattern": "syscalls:sys_enter_openat", "detail": True})).structured_content
        many = await client.call_tool("list_tracepoints", {"pattern": "sched:*", "detail": True})
        paged = []
        cursor = None
        while True:
            page = (await client.call_tool("list_tracepoints", {"pattern": "*", "limit": 500, **({"cursor": cursor} if cursor else {})})).structured_content
            paged += page["tracepoints"]
            cursor = page.get("next_cursor")
            if not cursor:
                break
    assert cats["total"] == len(on_disk)
    assert sum(c["tracepoints"] for c in cats["categories"]) == len(on_disk)
    assert "syscalls:sys_enter_openat" in opens["tracepoints"] and all(t.startswith("syscalls:sys_enter_open") for t in opens["tracepoints"])
    fields = {f["name"]: f for f in one["format"]["fields"]}
    assert fields["filename"]["type"] == "const char *" and fields["filename"]["offset"] == 24
    assert many.is_error and "exactly one" in many.structured_content["message"]
    assert paged == on_disk, "pages walk every tracepoint once, in order"


async def test_any_tracepoint_with_strings_read_in_the_kernel(url):
    path = pathlib.Path(tempfile.mkdtemp()) / f"{unique_marker()}.txt"
    path.write_text("x")

    def action():
        subprocess.run(["cat", str(path)], check=True, capture_output=True)

    data = await trace_while(url, {"gadget": "tracepoint", "tracepoint": "syscalls:sys_enter_openat",
                                   "duration_ms": 2500, "comm": "cat"}, action)
    assert data["hooks"] == ["syscalls:sys_enter_openat"]
    hits = [e for e in data["events"] if e["filename"] == str(path)]
    assert len(hits) == 1, data["events"]
    assert hits[0]["comm"] == "cat" and hits[0]["__syscall_nr"] == 257


async def test_tracepoint_data_loc_strings_and_shadowed_names(url):
    child = {}

    def action():
        proc = subprocess.Popen(["/bin/sleep", "0.1"])
        child["pid"] = proc.pid
        proc.wait()

    data = await trace_while(url, {"gadget": "tracepoint", "tracepoint": "sched:sched_process_exec",
                                   "duration_ms": 2500}, action)
    hits = [e for e in data["events"] if e["pid"] == child["pid"]]
    assert len(hits) == 1, data["events"]
    assert hits[0]["filename"] == "/bin/sleep"
    # The record's own `pid` field does not overwrite the common one.
    assert hits[0]["tp_pid"] == child["pid"] and "old_pid" in hits[0]


async def call_ok(client, tool, args):
    r = await client.call_tool(tool, args)
    assert not r.is_error, r.structured_content
    return r.structured_content


async def test_fields_choose_what_events_carry(url):
    marker = unique_marker()

    def action():
        subprocess.run(["/bin/echo", marker], check=True, capture_output=True)

    data = await trace_while(url, {"gadget": "exec", "duration_ms": 2000, "fields": ["pid", "argv"]}, action)
    assert data["events"] and all(set(e) == {"pid", "argv"} for e in data["events"]), data["events"]
    assert any(e["argv"] == ["/bin/echo", marker] for e in data["events"])
    async with Client(url, mode="legacy") as client:
        for args, needle in [
            ({"fields": ["pid", "nope"]}, "`nope` is not a field of `exec` events; fields: time, pid"),
            ({"fields": []}, "at least one field"),
            ({"fields": ["pid"], "mode": "count"}, "applies to mode events"),
        ]:
            r = await client.call_tool("trace", {"gadget": "exec", "duration_ms": 200, **args})
            assert r.is_error and r.structured_content["code"] == "INVALID_ARGUMENTS", args
            assert needle in r.structured_content["message"], r.structured_content["message"]


async def test_filter_keeps_only_matching_events(url):
    """`filter` over event fields: only the failed opens under the test's directory, in
    events and count mode, however many other opens happen meanwhile."""
    directory = pathlib.Path(tempfile.mkdtemp())
    existing = directory / "here.txt"
    existing.write_text("x")

    def action():
        for i in range(3):
            subprocess.run(["cat", str(existing)], check=True, capture_output=True)
            subprocess.run(["cat", str(directory / f"missing-{i}")], capture_output=True)

    where = f"ret < 0 && path ~ \"{directory}/*\""
    data = await trace_while(url, {"gadget": "open", "duration_ms": 2500, "filter": where}, action)
    paths = sorted(e["path"] for e in data["events"])
    assert paths == [str(directory / f"missing-{i}") for i in range(3)], data["events"]
    assert all(e["error"] == "ENOENT" for e in data["events"])
    assert data["events_total"] == 3 and data["events_filtered"] > 0
    data = await trace_while(url, {"gadget": "open", "duration_ms": 2500, "mode": "count",
                                   "group_by": ["comm", "error"], "filter": where}, action)
    assert data["counts"] == [{"key": {"comm": "cat", "error": "ENOENT"}, "count": 3}], data
    async with Client(url, mode="legacy") as client:
        for args, needle in [
            ({"gadget": "open", "filter": "port == 1"}, "`port` is not a field of these events"),
            ({"gadget": "open", "filter": "ret < 0 && pth ~ \"/x*\""}, "did you mean `path`?"),
            ({"gadget": "open", "filter": "ret < \"x\""}, "`ret` takes a number"),
            ({"gadget": "syscalls", "filter": "pid == 1"}, "counts in the kernel"),
        ]:
            r = await client.call_tool("trace", {"duration_ms": 200, **args})
            assert r.is_error and r.structured_content["code"] == "INVALID_ARGUMENTS", args
            assert needle in r.structured_content["message"], r.structured_content["message"]


async def test_counts_whose_keys_the_kernel_knows_are_kept_in_the_kernel(url):
    """count mode grouped by fields the kernel knows (pid, comm, a signal, a tracepoint's
    integer field), with a filter wholly in the kernel, counts in a kernel table: no event
    crosses, the open gadget attaches no exit programs, and the counts equal those the
    server makes from every event of the same workload, traced at the same time."""
    # 10000 open records (~3 MB) fit the 4 MiB ring: the server-counted trace sees every one
    # however slowly this machine drains it.
    opens = 10000
    server_counted = {}

    def workload():
        server_counted.update(anyio.from_thread.run(
            trace_while, url, {"gadget": "open", "mode": "count", "duration_ms": 4000, "comm": "workload",
                               "group_by": ["pid", "path"], "top": 1000},
            lambda: subprocess.run([str(WORKLOAD), "opens", str(opens)], check=True, capture_output=True)))

    kernel = await trace_while(url, {"gadget": "open", "mode": "count", "duration_ms": 8000,
                                     "filter": "comm == \"workload\"", "group_by": ["pid", "comm"]}, workload)
    assert server_counted["counted_in"] == "server", server_counted
    assert kernel["counted_in"] == "kernel", kernel
    assert kernel["hooks"] == ["syscalls:sys_enter_openat", "syscalls:sys_enter_openat2"], kernel["hooks"]
    (row,) = kernel["counts"]
    pid = row["key"]["pid"]
    assert row["key"]["comm"] == "workload" and kernel["events_dropped"] == 0, kernel
    assert server_counted["events_dropped"] == 0, server_counted
    by_server = [c for c in server_counted["counts"] if c["key"]["pid"] == pid]
    assert {"key": {"pid": pid, "path": "/dev/null"}, "count": opens} in by_server, by_server
    assert row["count"] == sum(c["count"] for c in by_server) == kernel["events_total"], (row, by_server)

    child = subprocess.Popen(["sleep", "30"])
    try:
        def signals():
            for sig in [signal.SIGUSR1, signal.SIGUSR1, signal.SIGUSR2]:
                os.kill(child.pid, sig)
                time.sleep(0.05)

        me = os.getpid()
        for args, rows in [
            ({"gadget": "signal", "group_by": ["signal", "sig"]},
             [{"key": {"signal": "SIGUSR1", "sig": 10}, "count": 2}, {"key": {"signal": "SIGUSR2", "sig": 12}, "count": 1}]),
            ({"gadget": "tracepoint", "tracepoint": "signal:signal_generate", "group_by": ["sig"]},
             [{"key": {"sig": 10}, "count": 2}, {"key": {"sig": 12}, "count": 1}]),
        ]:
            data = await trace_while(url, {**args, "mode": "count", "duration_ms": 2000,
                                           "filter": f"pid == {me}"}, signals)
            assert data["counted_in"] == "kernel" and data["counts"] == rows, data
        # A key the kernel does not know is counted by the server, from the events.
        data = await trace_while(url, {"gadget": "signal", "mode": "count", "duration_ms": 2000, "pid": me,
                                       "group_by": ["target_pid"]}, signals)
        assert data["counted_in"] == "server" and data["counts"] == [{"key": {"target_pid": child.pid}, "count": 3}], data
    finally:
        child.kill()
        child.wait()


async def test_tracepoint_histogram_of_an_integer_field(url):
    """mode histogram of the tracepoint gadget buckets one integer field of the record in the
    kernel: the sizes a process passes to write(), exact in count and sum."""
    child = subprocess.Popen([sys.executable, "-c", "import os, sys\n"
                              "sys.stdin.readline()\n"
                              "fd = os.open('/dev/null', os.O_WRONLY)\n"
                              "for n in [4096] * 100 + [100] * 10: os.write(fd, b'x' * n)\n"],
                             stdin=subprocess.PIPE, text=True)

    def action():
        child.stdin.write("go\n")
        child.stdin.flush()
        child.wait()

    data = await trace_while(url, {"gadget": "tracepoint", "tracepoint": "syscalls:sys_enter_write", "mode": "histogram",
                                   "value": "count", "pid": child.pid, "duration_ms": 10000}, action)
    (row,) = data["values"]
    assert (row["key"], row["count"], row["sum"], row["p50"], row["p99"]) == ({}, 110, 100 * 4096 + 10 * 100, 8191, 8191), row
    assert [(b["low"], b["count"]) for b in row["buckets"] if b["count"]] == [(64, 10), (4096, 100)], row["buckets"]
    assert data["stopped_by"] == "process_exited" and data["events_total"] == 110, data
    async with Client(url, mode="legacy") as client:
        # Per process, the idle tasks (pid 0) are groups of their own, named.
        r = await client.call_tool("trace", {"gadget": "tracepoint", "tracepoint": "sched:sched_switch",
                                             "mode": "histogram", "value": "prev_state", "group_by": ["pid", "comm"],
                                             "duration_ms": 500, "top": 100})
        groups = [v["key"] for v in r.structured_content["values"]]
        assert all(set(g) == {"pid", "comm"} for g in groups), groups
        assert any(g["pid"] == 0 and g["comm"].startswith("swapper") for g in groups), groups
        for args, needle in [
            ({"mode": "histogram"}, "needs `value`: the integer field to bucket, one of __syscall_nr, fd, count"),
            ({"mode": "histogram", "value": "buf"}, "`buf` is not an integer field"),
            ({"value": "count"}, "`value` applies to mode histogram"),
        ]:
            r = await client.call_tool("trace", {"gadget": "tracepoint", "tracepoint": "syscalls:sys_enter_write",
                                                 "duration_ms": 200, **args})
            assert r.is_error and needle in r.structured_content["message"], (args, r.structured_content)


async def test_results_say_what_cut_them(url):
    """`cut` names why a result holds less than was seen, and the hint how to get more."""
    def action():
        for name in ["/bin/true", "/bin/echo", "/bin/ls", "/bin/true", "/bin/true"]:
            subprocess.run([name], check=True, capture_output=True)

    data = await trace_while(url, {"gadget": "exec", "duration_ms": 2500, "mode": "count", "group_by": ["comm"],
                                   "top": 1, "comm": "true", "filter": f"ppid == {os.getpid()}"}, action)
    assert data["counts"] == [{"key": {"comm": "true"}, "count": 3}] and "cut" not in data, data
    data = await trace_while(url, {"gadget": "exec", "duration_ms": 2500, "mode": "count", "group_by": ["comm"],
                                   "top": 1, "uid": 0}, action)
    assert data["truncated"] and data["cut"] == ["top"], data
    assert data["hint"].startswith("the 1 largest of ") and "raise `top`" in data["hint"], data["hint"]
    data = await trace_while(url, {"gadget": "exec", "duration_ms": 2500, "max_events": 2}, action)
    assert data["events_returned"] == 2 and data["stopped_by"] == "max_events"
    assert data["cut"] == ["max_events"] and "raise it" in data["hint"], data


async def test_background_session_reads_new_events_and_stops(url):
    marker = unique_marker()
    async with Client(url, mode="legacy") as client:
        started = await call_ok(client, "trace_start", {"gadget": "exec", "duration_ms": 60000})
        sid = started["session_id"]
        assert started["hooks"][0] == "syscalls:sys_enter_execve"
        info = await call_ok(client, "info", {"sections": ["server"]})
        assert sid in [s["session_id"] for s in info["server"]["trace_sessions"]]
        assert info["server"]["live_objects"]["trace_sessions"] >= 1
        subprocess.run(["/bin/echo", marker, "one"], check=True, capture_output=True)
        seen, cursor = [], None
        deadline = time.monotonic() + 10
        while not any(marker in e["argv"] for e in seen) and time.monotonic() < deadline:
            page = await call_ok(client, "trace_read", {"session_id": sid, **({"cursor": cursor} if cursor is not None else {})})
            assert page["state"] == "running"
            seen += page["events"]
            cursor = page.get("next_cursor", cursor)
            await anyio.sleep(0.2)
        assert any(e["argv"] == ["/bin/echo", marker, "one"] for e in seen)
        subprocess.run(["/bin/echo", marker, "two"], check=True, capture_output=True)
        newer = []
        deadline = time.monotonic() + 10
        while not any("two" in e["argv"] for e in newer) and time.monotonic() < deadline:
            await anyio.sleep(0.2)
            page = await call_ok(client, "trace_read", {"session_id": sid, "cursor": cursor})
            newer += [e for e in page["events"] if marker in e["argv"]]
            cursor = page.get("next_cursor", cursor)
        assert [e["argv"] for e in newer] == [["/bin/echo", marker, "two"]], "only what is new"
        final = await call_ok(client, "trace_stop", {"session_id": sid})
        assert final["state"] == "finished" and final["stopped_by"] == "cancelled"
        assert final["events_total"] >= 2
        gone = await client.call_tool("trace_read", {"session_id": sid})
        assert gone.is_error and gone.structured_content["code"] == "SESSION_NOT_FOUND"


async def test_background_session_counts(url):
    n = 3000
    async with Client(url, mode="legacy") as client:
        sid = (await call_ok(client, "trace_start", {"gadget": "syscalls", "duration_ms": 60000, "group_by": ["pid", "syscall"], "top": 1000}))["session_id"]
        proc = subprocess.run([sys.executable, "-c", f"import os\nfor _ in range({n}): os.getppid()\nprint(os.getpid())"],
                              check=True, capture_output=True, text=True)
        child = int(proc.stdout)
        final = await call_ok(client, "trace_stop", {"session_id": sid})
    rows = {(r["key"]["pid"], r["key"]["syscall"]): r["count"] for r in final["counts"]}
    assert rows[(child, "getppid")] == n


async def test_sessions_belong_to_the_client_that_started_them(url):
    async with Client(url, mode="legacy") as a, Client(url, mode="legacy") as b:
        sid = (await call_ok(a, "trace_start", {"gadget": "exit", "duration_ms": 60000}))["session_id"]
        other = await b.call_tool("trace_read", {"session_id": sid})
        assert other.is_error and other.structured_content["code"] == "SESSION_NOT_FOUND"
        stop = await b.call_tool("trace_stop", {"session_id": sid})
        assert stop.is_error
        await call_ok(a, "trace_stop", {"session_id": sid})


def test_session_limit_and_shutdown_release(binary):
    """Over tools.trace.max_sessions is refused; a server stopped with sessions running
    releases them (the leak check after the test proves it)."""
    require_root()
    server = start_http_server(binary, config="tools:\n  trace:\n    max_sessions: 1\n")

    async def scenario():
        async with Client(server.url, mode="legacy") as client:
            await call_ok(client, "trace_start", {"gadget": "open", "duration_ms": 60000})
            second = await client.call_tool("trace_start", {"gadget": "exec", "duration_ms": 60000})
            assert second.is_error and second.structured_content["code"] == "TOO_MANY_SESSIONS"
            assert "tools.trace.max_sessions" in second.structured_content["message"]

    try:
        anyio.run(scenario)
    finally:
        assert server.stop(signal.SIGTERM) == 0, server.stderr()
    assert "released=1" in server.stderr() or "released\u003d1" in server.stderr(), server.stderr()
