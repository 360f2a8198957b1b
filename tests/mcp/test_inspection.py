"""Inspection against the real kernel, cross-checked with bpftool: list_programs, list_maps,
list_links, map_dump, map_lookup and the ebpf:// resources, over MCP with the official SDK.
The maps come from bpf/fixtures.bpf.c, loaded and filled by examples/fixture.rs."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import pathlib
import shutil
import subprocess
import threading
import time
import uuid

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from conftest import BUILD, UNLIMITED, require_root, start_http_server

pytestmark = pytest.mark.anyio

FIXTURE = pathlib.Path(os.environ.get("EBPF_MCP_FIXTURE", BUILD / "examples" / "fixture"))
BIG = 2500


class Fixture:
    """The fixture loader: holds its programs and maps until its stdin closes."""

    def __init__(self, big: int = BIG):
        require_root()
        if not FIXTURE.exists():
            pytest.fail(f"{FIXTURE} missing: run `cargo build --examples` (scripts/test does)")
        self.proc = subprocess.Popen(
            [str(FIXTURE), "--big", str(big)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"fixture failed: {self.proc.stderr.read().decode()}")
        info = json.loads(line)
        self.pid: int = info["pid"]
        self.cpus: int = info["cpus"]
        self.maps: dict[str, int] = info["maps"]
        self.prog: int = info["programs"]["fixture_count_getppid"]

    def close(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0


@pytest.fixture(scope="module")
def fixture():
    f = Fixture()
    yield f
    f.close()


@pytest.fixture(scope="module")
def url(binary):
    require_root()
    server = start_http_server(binary, config=UNLIMITED)
    yield server.url
    assert server.stop() == 0, server.stderr()


async def call(url: str, tool: str, args: dict) -> dict:
    async with Client(url, mode="legacy") as client:
        result = await client.call_tool(tool, args)
    data = result.structured_content
    if result.is_error:
        raise ToolError(data)
    return data


class ToolError(Exception):
    def __init__(self, data: dict):
        super().__init__(data["message"])
        self.data = data


def bpftool(*args: str):
    out = subprocess.run(["bpftool", "-j", *args], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


async def all_pages(url: str, tool: str, field: str, args: dict) -> list[dict]:
    items, cursor = [], None
    while True:
        page = await call(url, tool, {**args, **({"cursor": cursor} if cursor else {})})
        items += page[field]
        cursor = page.get("next_cursor")
        if not cursor:
            return items


# ------------------------------------------------------------------------- listing


async def test_list_programs_matches_bpftool(url, fixture):
    ours = {p["id"]: p for p in await all_pages(url, "list_programs", "programs", {"limit": 50})}
    theirs = {p["id"]: p for p in bpftool("prog", "show")}
    assert fixture.prog in ours and fixture.prog in theirs
    common = ours.keys() & theirs.keys()
    # Programs may come and go on a live host between the two listings, but not many.
    assert len(common) >= max(1, len(theirs) - 3)
    for pid in common:
        o, t = ours[pid], theirs[pid]
        assert (o["type"], o["tag"], o["name"]) == (t["type"], t["tag"], t.get("name", "")), pid
        assert o["map_ids"] == t.get("map_ids", []), pid
        assert o["bytes_xlated"] == t["bytes_xlated"] and o["bytes_jited"] == t.get("bytes_jited", 0)
        assert o["memlock"] == t["bytes_memlock"]
    mine = ours[fixture.prog]
    assert {"pid": fixture.pid, "comm": "fixture"} in mine["holders"]
    assert [a["target"] for a in mine["attachments"]] == ["tracepoint sys_enter_getppid"]


async def test_list_programs_filters(url, fixture):
    by_pid = await call(url, "list_programs", {"pid": fixture.pid})
    assert [p["id"] for p in by_pid["programs"]] == [fixture.prog]
    by_name = await call(url, "list_programs", {"name": "count_getppid", "type": "tracepoint"})
    assert fixture.prog in [p["id"] for p in by_name["programs"]]
    none = await call(url, "list_programs", {"name": "count_getppid", "type": "xdp"})
    assert none["programs"] == [] and none["total"] == 0
    with pytest.raises(ToolError) as bad:
        await call(url, "list_programs", {"type": "nonsense"})
    assert bad.value.data["code"] == "INVALID_ARGUMENTS" and "tracepoint" in bad.value.data["message"]


async def test_listing_mistakes_get_their_codes(url, fixture):
    for tool, args, code, needle in [
        ("list_programs", {"limit": 0}, "INVALID_ARGUMENTS", "`limit` must be between 1"),
        ("list_maps", {"limit": 100000}, "INVALID_ARGUMENTS", "`limit` must be between 1"),
        ("list_links", {"cursor": "not-a-cursor"}, "INVALID_CURSOR", ""),
        ("list_programs", {"sample_ms": 0}, "INVALID_ARGUMENTS", "`sample_ms` must be between 1"),
        ("list_programs", {"id": 2**31 - 1, "detail": True}, "PROGRAM_NOT_FOUND", "list_programs"),
        ("list_links", {"id": 2**31 - 1}, "LINK_NOT_FOUND", "no link with id"),
    ]:
        with pytest.raises(ToolError) as e:
            await call(url, tool, args)
        assert e.value.data["code"] == code, (tool, args, e.value.data)
        assert needle in e.value.data["message"], (tool, args, e.value.data["message"])


async def test_list_maps_matches_bpftool(url, fixture):
    ours = {m["id"]: m for m in await all_pages(url, "list_maps", "maps", {"name": "fixture_"})}
    theirs = {m["id"]: m for m in bpftool("map", "show")}
    assert set(fixture.maps.values()) <= ours.keys()
    for mid in fixture.maps.values():
        o, t = ours[mid], theirs[mid]
        for ours_key, theirs_key in (("type", "type"), ("name", "name"), ("key_size", "bytes_key"),
                                     ("value_size", "bytes_value"), ("max_entries", "max_entries"),
                                     ("flags", "flags"), ("memlock", "bytes_memlock"), ("frozen", "frozen")):
            expected = t.get(theirs_key)
            if theirs_key == "frozen":
                expected = bool(expected)
            assert o[ours_key] == expected, (mid, ours_key, o[ours_key], expected)
        assert {"pid": fixture.pid, "comm": "fixture"} in o["holders"]
    flows = ours[fixture.maps["fixture_flows"]]
    assert (flows["key_type"], flows["value_type"]) == ("struct flow_key", "struct flow_stats")


async def test_list_maps_counts_entries_exactly(url, fixture):
    data = await call(url, "list_maps", {"id": fixture.maps["fixture_big"], "count": True})
    assert data["maps"][0]["entries"] == BIG


async def test_list_links_matches_bpftool(url, fixture):
    ours = await all_pages(url, "list_links", "links", {})
    theirs = {l["id"]: l for l in bpftool("link", "show")}
    for link in ours:
        if link["id"] in theirs:
            assert (link["type"], link["prog_id"]) == (theirs[link["id"]]["type"], theirs[link["id"]]["prog_id"])
    mine = [l for l in ours if l["prog_id"] == fixture.prog]
    assert len(mine) == 1
    assert mine[0]["type"] == "perf_event"
    assert mine[0]["target"] == "tracepoint sys_enter_getppid"
    assert {"pid": fixture.pid, "comm": "fixture"} in mine[0]["holders"]
    by_prog = await call(url, "list_links", {"prog_id": fixture.prog})
    assert [l["id"] for l in by_prog["links"]] == [mine[0]["id"]]


async def test_sample_ms_counts_runs_the_test_causes(url, fixture):
    runs = 3000
    opened = threading.Event()
    done = threading.Event()

    def trigger():
        # The window opens when its first counters are read: its first progress report.
        if opened.wait(timeout=30):
            for _ in range(runs):
                os.getppid()
            done.set()

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        opened.set()

    thread = threading.Thread(target=trigger)
    thread.start()
    async with Client(url, mode="legacy") as client:
        result = await client.call_tool("list_programs", {"id": fixture.prog, "sample_ms": 2000},
                                        progress_callback=on_progress)
    opened.set()
    thread.join()
    assert not result.is_error, result
    data = result.structured_content
    assert done.is_set()
    assert data["stats_source"] == "sampled"
    stats = data["programs"][0]["stats"]
    # Other processes call getppid too: at least our calls were counted.
    assert stats["run_cnt"] >= runs, stats
    assert stats["run_time_ns"] > 0 and stats["avg_ns"] == stats["run_time_ns"] // stats["run_cnt"]
    assert 0 < stats["cpu_percent"] < 100
    assert data["busiest"][0] == fixture.prog
    # The statistics are released afterwards (the sysctl is back to what it was).
    assert pathlib.Path("/proc/sys/kernel/bpf_stats_enabled").read_text().strip() == "0"


async def test_program_detail(url, fixture):
    data = await call(url, "list_programs", {"id": fixture.prog, "detail": True})
    prog = data["programs"][0]
    detail = prog["detail"]
    assert detail["instruction_count"] == prog["bytes_xlated"] // 8
    # The verifier turns the map_lookup_elem helper into a direct call of the map's lookup
    # function; the call is shown by its kernel symbol, the map by its id.
    assert any("call" in line and "lookup_elem" in line for line in detail["instructions"]), detail["instructions"]
    percpu = fixture.maps["fixture_percpu"]
    assert any(f"map[id:{percpu}]" in line for line in detail["instructions"]), detail["instructions"]
    assert detail["instructions"][-1].endswith("exit")
    assert [m["name"] for m in detail["maps"]] == ["fixture_percpu"]
    with pytest.raises(ToolError) as bad:
        await call(url, "list_programs", {"detail": True})
    assert "`detail` needs `id`" in bad.value.data["message"]


# ------------------------------------------------------------------------- map_dump


def normalize_bpftool(value):
    """bpftool prints bitfields as hex strings ("0x5"); ebpf-mcp prints numbers."""
    if isinstance(value, dict):
        return {k: normalize_bpftool(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize_bpftool(v) for v in value]
    if isinstance(value, str) and value.startswith("0x") and len(value) < 20:
        try:
            return int(value, 16)
        except ValueError:
            return value
    return value


@pytest.mark.parametrize("name", ["fixture_flows", "fixture_slots", "fixture_percpu", "fixture_by_comm", "fixture_lpm"])
async def test_map_dump_equals_bpftool(url, fixture, name):
    mid = fixture.maps[name]
    ours = await call(url, "map_dump", {"map_name": name})
    theirs = [e["formatted"] for e in bpftool("map", "dump", "id", str(mid))]
    expected = []
    for e in theirs:
        e = normalize_bpftool(e)
        if "values" in e:
            e["values"] = [{"cpu": v["cpu"], "value": v["value"]} for v in e["values"]]
        expected.append(e)
    got = [{k: v for k, v in e.items() if k != "sum"} for e in ours["entries"]]
    key = lambda e: json.dumps(e["key"], sort_keys=True)
    assert sorted(got, key=key) == sorted(expected, key=key)
    assert ours["total_entries"] == len(theirs) == ours["returned"]
    assert ours["map"]["id"] == mid and ours["truncated"] is False


async def test_per_cpu_values_and_sum(url, fixture):
    data = await call(url, "map_dump", {"map_name": "fixture_percpu", "filter": [{"field": "key", "op": "eq", "value": 1}]})
    (entry,) = data["entries"]
    assert [v["cpu"] for v in entry["values"]] == list(range(fixture.cpus))
    n = fixture.cpus
    assert entry["sum"] == {"packets": 10 * n * (n + 1) // 2, "bytes": 100 * n * (n + 1) // 2}


def big_bytes(i: int) -> int:
    return (i * 2654435761) % 1_000_000_007


async def test_sort_and_filter_on_the_server(url, fixture):
    top = await call(url, "map_dump", {"map_name": "fixture_big", "sort_by": "bytes", "max_entries": 5})
    want = sorted(range(BIG), key=big_bytes, reverse=True)[:5]
    assert [e["key"] for e in top["entries"]] == want
    assert top["total_entries"] == BIG and top["returned"] == 5 and top["truncated"] is True
    low = await call(url, "map_dump", {
        "map_name": "fixture_big",
        "filter": [{"field": "value.packets", "op": "lt", "value": 10}, {"field": "key", "op": "ge", "value": 3}],
        "sort_by": "key", "order": "asc",
    })
    assert [e["key"] for e in low["entries"]] == list(range(3, 10))
    assert low["matched"] == 7 and low["total_entries"] == BIG
    flows = await call(url, "map_dump", {"map_name": "fixture_flows", "filter": [
        {"field": "state", "op": "eq", "value": "FLOW_CLOSED"}, {"field": "ifname", "op": "prefix", "value": "l"}]})
    assert [e["value"]["packets"] for e in flows["entries"]] == [7]


async def test_pagination_returns_each_entry_exactly_once(url, fixture):
    for args in ({}, {"sort_by": "bytes"}):
        seen, cursor, pages = [], None, 0
        while True:
            page = await call(url, "map_dump", {"map_name": "fixture_big", "max_entries": 1000, **args,
                                                **({"cursor": cursor} if cursor else {})})
            pages += 1
            seen += [e["key"] for e in page["entries"]]
            assert page["total_entries"] == BIG
            cursor = page.get("next_cursor")
            if not cursor:
                break
        assert pages == 3
        assert sorted(seen) == list(range(BIG)), "each entry exactly once"
        if args:
            assert seen == sorted(range(BIG), key=lambda i: (-big_bytes(i), i))
    with pytest.raises(ToolError) as bad:
        await call(url, "map_dump", {"map_name": "fixture_flows", "cursor": cursor or "1:1000:abc"})
    assert bad.value.data["code"] == "INVALID_CURSOR"


async def test_map_lookup(url, fixture):
    flows_key = {"saddr": 0x0A000004, "daddr": 0x0A000001, "sport": 40002, "dport": 443, "proto": 6, "pad": [0, 0, 0]}
    hit = await call(url, "map_lookup", {"map_name": "fixture_flows", "key": flows_key})
    assert hit["found"] and hit["entry"]["value"]["state"] == "FLOW_CLOSED"
    assert hit["entry"]["value"]["ifname"] == "lo" and hit["entry"]["value"]["level"] == 7
    by_comm = await call(url, "map_lookup", {"map_id": fixture.maps["fixture_by_comm"], "key": "bash"})
    assert by_comm["entry"] == {"key": "bash", "value": 12}
    raw = await call(url, "map_lookup", {"map_name": "fixture_big", "key": "0x2a000000"})
    assert raw["entry"]["key"] == 42 and raw["entry"]["value"]["packets"] == 42
    miss = await call(url, "map_lookup", {"map_name": "fixture_big", "key": BIG + 1})
    assert miss == {"map": miss["map"], "found": False}
    with pytest.raises(ToolError) as bad:
        await call(url, "map_lookup", {"map_name": "fixture_flows", "key": {"saddr": 1}})
    assert bad.value.data["code"] == "INVALID_ARGUMENTS" and "daddr" in bad.value.data["message"]


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        ({}, "INVALID_ARGUMENTS", "exactly one of"),
        ({"map_name": "fixture_flows", "map_id": 1}, "INVALID_ARGUMENTS", "exactly one of"),
        ({"map_name": "no_such_map_x"}, "MAP_NOT_FOUND", "list_maps"),
        ({"map_id": 4_000_000_000}, "MAP_NOT_FOUND", "list_maps"),
        ({"pin_path": "/etc/passwd"}, "PIN_PATH_NOT_ON_BPFFS", "/sys/fs/bpf"),
        ({"pin_path": "/root/no/such/file"}, "PIN_PATH_NOT_ON_BPFFS", "/sys/fs/bpf"),
        ({"map_name": "fixture_events"}, "MAP_NOT_DUMPABLE", "trace"),
        ({"map_name": "fixture_big", "sort_by": "nope"}, "INVALID_ARGUMENTS", "packets, bytes"),
        ({"map_name": "fixture_big", "max_entries": 0}, "INVALID_ARGUMENTS", "at least 1"),
    ],
)
async def test_bad_selectors_are_clear_errors(url, fixture, args, code, needle):
    with pytest.raises(ToolError) as bad:
        await call(url, "map_dump", args)
    assert bad.value.data["code"] == code, bad.value.data
    assert needle in bad.value.data["message"], bad.value.data["message"]


async def test_ambiguous_names_list_the_ids(url, fixture):
    second = Fixture(big=10)
    try:
        with pytest.raises(ToolError) as bad:
            await call(url, "map_dump", {"map_name": "fixture_flows"})
        data = bad.value.data
        assert data["code"] == "AMBIGUOUS_MAP_NAME"
        assert sorted(data["context"]["ids"]) == sorted([fixture.maps["fixture_flows"], second.maps["fixture_flows"]])
        assert "map_id" in data["message"]
    finally:
        second.close()


async def test_pinned_maps(url, fixture):
    pin = pathlib.Path(f"/sys/fs/bpf/ebpf-mcp-test-{os.getpid()}")
    subprocess.run(["bpftool", "map", "pin", "id", str(fixture.maps["fixture_by_comm"]), str(pin)], check=True)
    try:
        data = await call(url, "map_dump", {"pin_path": str(pin)})
        assert sorted(e["key"] for e in data["entries"]) == ["bash", "sshd"]
    finally:
        pin.unlink()


# ------------------------------------------------------------------------- resources


async def test_resources_and_templates(url, fixture):
    async with Client(url, mode="legacy") as client:
        listed = {str(r.uri) for r in (await client.list_resources()).resources}
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        flows = json.loads((await client.read_resource(f"ebpf://maps/{fixture.maps['fixture_flows']}")).contents[0].text)
        ring = json.loads((await client.read_resource(f"ebpf://maps/{fixture.maps['fixture_events']}")).contents[0].text)
        prog = json.loads((await client.read_resource(f"ebpf://programs/{fixture.prog}")).contents[0].text)
        programs = json.loads((await client.read_resource("ebpf://programs")).contents[0].text)
        with pytest.raises(MCPError) as missing:
            await client.read_resource("ebpf://maps/4000000000")
    assert {"ebpf://system", "ebpf://programs", "ebpf://maps", "ebpf://links"} <= listed
    assert templates == {"ebpf://programs/{id}", "ebpf://maps/{id}"}
    assert flows["map"]["name"] == "fixture_flows" and flows["total_entries"] == 3 and len(flows["entries"]) == 3
    assert "trace" in ring["entries_unavailable"]
    assert prog["programs"][0]["detail"]["instructions"]
    assert fixture.prog in [p["id"] for p in programs["programs"]]
    assert missing.value.code == -32002


async def test_pages_end_early_at_an_exact_cursor_to_fit_the_size_limit(binary, fixture):
    """With a small server.max_result_bytes, pages carry fewer rows than asked, say why,
    and their cursors still walk every entry exactly once."""
    require_root()
    server = start_http_server(binary, config="server:\n  max_result_bytes: 20000\n")
    try:
        seen, cursor, pages = [], None, 0
        while True:
            page = await call(server.url, "map_dump", {"map_name": "fixture_big", "max_entries": 1000,
                                                       **({"cursor": cursor} if cursor else {})})
            pages += 1
            assert len(json.dumps(page, separators=(",", ":"))) <= 20000
            seen += [e["key"] for e in page["entries"]]
            cursor = page.get("next_cursor")
            if not cursor:
                break
            assert page["returned"] < 1000 and "max_result_bytes" in page["hint"]
        assert sorted(seen) == list(range(BIG)) and pages > 3
        maps = await all_pages(server.url, "list_maps", "maps", {"limit": 1000})
        assert {m["id"] for m in maps} >= set(fixture.maps.values())
        assert len(maps) == len({m["id"] for m in maps})
    finally:
        assert server.stop() == 0


async def test_maps_without_btf_show_hex(url):
    """A map created without BTF (by bpftool here) has no field names: keys and values are
    hex strings of their bytes, lookups take hex, and filters say why they cannot work."""
    pin = pathlib.Path(f"/sys/fs/bpf/ebpf-mcp-nobtf-{os.getpid()}")
    subprocess.run(["bpftool", "map", "create", str(pin), "type", "hash", "key", "4", "value", "8",
                    "entries", "4", "name", "nobtf_test"], check=True)
    try:
        subprocess.run(["bpftool", "map", "update", "pinned", str(pin), "key", "1", "0", "0", "0",
                        "value", "0x2a", "0", "0", "0", "0", "0", "0", "0"], check=True)
        data = await call(url, "map_dump", {"pin_path": str(pin)})
        assert data["map"]["key_type"] == "4 bytes" and data["map"]["value_type"] == "8 bytes"
        assert data["entries"] == [{"key": "0x01000000", "value": "0x2a00000000000000"}]
        hit = await call(url, "map_lookup", {"pin_path": str(pin), "key": "0x01000000"})
        assert hit["found"] and hit["entry"]["value"] == "0x2a00000000000000"
        with pytest.raises(ToolError) as bad:
            await call(url, "map_lookup", {"pin_path": str(pin), "key": 1})
        assert "hex" in bad.value.data["message"]
        with pytest.raises(ToolError) as bad:
            await call(url, "map_dump", {"pin_path": str(pin), "sort_by": "value"})
        assert "no BTF" in bad.value.data["message"]
    finally:
        pin.unlink()


def test_the_command_line_streams_a_map_then_its_summary(binary, fixture):
    """`call map_dump --output jsonl` writes each entry as it is decoded, then one summary
    line with the totals and the cursor for the next page (the default page is 1000)."""
    args = json.dumps({"map_id": fixture.maps["fixture_big"]})
    out = subprocess.run([str(binary), "call", "map_dump", args, "--output", "jsonl"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    *rows, last = lines
    assert len(rows) == 1000 and all("key" in r and "value" in r for r in rows)
    assert len({json.dumps(r["key"]) for r in rows}) == 1000
    summary = last["summary"]
    assert summary["total_entries"] == BIG and summary["returned"] == 1000, summary
    assert summary["truncated"] and summary["next_cursor"] and "entries" not in summary
    assert "more rows remain" in out.stderr


# ------------------------------------------------------------------------------ processes


def _child_of(pid: int) -> int:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        children = pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.02)
    raise AssertionError(f"{pid} started no child")


async def test_process_info_names_a_process_and_its_parents(url):
    """A sleep started by a shell started by this test: name, command line, executable, the
    chain of parents, ids and start time, as /proc has them."""
    shell = subprocess.Popen(["sh", "-c", "sleep 30; true"])
    try:
        sleeper = _child_of(shell.pid)
        before = time.time()
        info = await call(url, "process_info", {"pid": sleeper})
        assert (info["pid"], info["comm"], info["ppid"]) == (sleeper, "sleep", shell.pid)
        assert info["cmdline"] == ["sleep", "30"] and "cmdline_truncated" not in info
        assert info["exe"] == os.path.realpath(shutil.which("sleep"))
        assert info["state"] == "S" and info["threads"] == 1
        assert (info["uid"], info["euid"], info["gid"]) == (0, 0, 0)
        started = datetime.datetime.fromisoformat(info["started_at"]).timestamp()
        assert before - 10 <= started <= before + 1, info["started_at"]
        assert info["ancestors"][0] == {"pid": shell.pid, "comm": "sh", "cmdline": "sh -c sleep 30; true"}
        assert info["ancestors"][1]["pid"] == os.getpid()
        paths = [line.split(":", 2)[2] for line in pathlib.Path(f"/proc/{sleeper}/cgroup").read_text().splitlines()]
        assert info["cgroup"] in paths and "container" not in info
        one = await call(url, "process_info", {"pid": sleeper, "ancestors": 1})
        assert [a["pid"] for a in one["ancestors"]] == [shell.pid]
    finally:
        shell.kill()
        shell.wait()
    with pytest.raises(ToolError) as e:
        await call(url, "process_info", {"pid": shell.pid})
    assert e.value.data["code"] == "PROCESS_NOT_FOUND" and "exited" in e.value.data["message"]


async def test_process_info_names_the_container_of_a_docker_cgroup(url):
    """A process moved into a cgroup laid out as docker's cgroupfs driver makes one (v1
    memory hierarchy here): its container id is read from the path."""
    container_id = uuid.uuid4().hex * 2
    group = pathlib.Path("/sys/fs/cgroup/memory/docker") / container_id
    group.mkdir(parents=True)
    proc = subprocess.Popen(["sleep", "30"])
    try:
        (group / "cgroup.procs").write_text(str(proc.pid))
        info = await call(url, "process_info", {"pid": proc.pid, "ancestors": 0})
        assert info["container"] == {"id": container_id, "runtime": "docker"}, info
        assert info["ancestors"] == []
    finally:
        proc.kill()
        proc.wait()
        group.rmdir()
        with contextlib.suppress(OSError):
            group.parent.rmdir()
