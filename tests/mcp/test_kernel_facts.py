"""`info` tells the truth about this kernel: every fact is checked against an independent
source (/proc, /sys, and bpftool's own feature probe)."""

from __future__ import annotations

import gzip
import json
import os
import pathlib
import subprocess

import pytest
from mcp import Client, StdioServerParameters

from conftest import require_root, server_env

pytestmark = pytest.mark.anyio


@pytest.fixture
async def info(binary) -> dict:
    require_root()
    params = StdioServerParameters(command=str(binary), args=["serve"], env=server_env())
    async with Client(params, mode="legacy") as client:
        first = (await client.call_tool("info", {"sections": ["all"]})).structured_content
        cached = (await client.call_tool("info", {"sections": ["all"]})).structured_content
        refreshed = (await client.call_tool("info", {"refresh": True, "sections": ["all"]})).structured_content
    assert cached["features"] == first["features"], "probes are cached between calls"
    assert refreshed["features"]["attach"] == first["features"]["attach"], "probes are stable"
    return first


def read(path: str) -> str:
    return pathlib.Path(path).read_text().strip()


def bpftool_features() -> dict:
    out = subprocess.run(
        ["bpftool", "-j", "feature", "probe", "kernel"], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out)


def kernel_config() -> dict[str, str]:
    try:
        text = gzip.decompress(pathlib.Path("/proc/config.gz").read_bytes()).decode()
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


async def test_kernel_identity_and_sysctls(info):
    k = info["kernel"]
    uname = os.uname()
    assert (k["release"], k["version"], k["arch"]) == (uname.release, uname.version, uname.machine)
    assert k["jit"]["bpf_jit_enable"] == int(read("/proc/sys/net/core/bpf_jit_enable"))
    assert k["unprivileged_bpf_disabled"]["value"] == int(read("/proc/sys/kernel/unprivileged_bpf_disabled"))
    assert k["bpf_stats_enabled"] == (read("/proc/sys/kernel/bpf_stats_enabled") != "0")
    assert k["btf"]["vmlinux"] == pathlib.Path("/sys/kernel/btf/vmlinux").exists()


async def test_mounts_and_lockdown(info):
    mounts = {}
    for line in pathlib.Path("/proc/self/mounts").read_text().splitlines():
        _, path, fstype, *_ = line.split()
        mounts.setdefault(fstype, path)
    k = info["kernel"]
    # The server mounts what is missing at start (ebpf.auto_mount, on by default).
    for key, fstype in (("tracefs", "tracefs"), ("bpffs", "bpf"), ("securityfs", "securityfs")):
        assert k["mounts"][key]["mounted"], k["mounts"]
        assert fstype in mounts, f"{fstype} should be mounted now"
    lockdown = pathlib.Path(mounts["securityfs"]) / "lockdown"
    if lockdown.exists():
        active = next(w[1:-1] for w in lockdown.read_text().split() if w.startswith("["))
        assert k["lockdown"]["mode"] == active
    else:
        assert k["lockdown"]["mode"] == "none"


async def test_program_and_map_types_agree_with_bpftool(info):
    theirs = bpftool_features()
    ours = info["features"]
    rename = {"ext": "extension"}
    compared = 0
    for key, available in theirs["program_types"].items():
        name = key.removeprefix("have_").removesuffix("_prog_type")
        name = rename.get(name, name)
        if name in ours["program_types"]:
            assert (ours["program_types"][name]["status"] == "available") == available, name
            compared += 1
    for key, available in theirs["map_types"].items():
        name = key.removeprefix("have_").removesuffix("_map_type")
        if name in ours["map_types"]:
            assert (ours["map_types"][name]["status"] == "available") == available, name
            compared += 1
    assert compared > 50


async def test_attach_kinds_are_probed_truthfully(info):
    attach = info["features"]["attach"]
    theirs = bpftool_features()["program_types"]
    config = kernel_config()
    # kprobes need a kernel built with them: no kprobe PMU means no kprobes.
    has_kprobe_pmu = pathlib.Path("/sys/bus/event_source/devices/kprobe").exists()
    assert (attach["kprobe"]["status"] == "available") == has_kprobe_pmu
    if config.get("CONFIG_KPROBES") is None and config:
        assert "CONFIG_KPROBES" in attach["kprobe"]["reason"]
    # fentry/fexit are tracing programs, lsm are lsm programs: unavailable when the kernel
    # refuses the program type itself, and then with the kernel's answer as the reason.
    for kind, prog_type in (("fentry", "have_tracing_prog_type"), ("fexit", "have_tracing_prog_type"),
                            ("lsm", "have_lsm_prog_type")):
        if not theirs[prog_type]:
            assert attach[kind]["status"] == "unavailable", attach[kind]
            assert "EPERM" in attach[kind]["reason"] or "not support" in attach[kind]["reason"], attach[kind]
    if info["kernel"]["lockdown"]["mode"] == "integrity" and not theirs["have_tracing_prog_type"]:
        assert "lockdown is 'integrity'" in attach["fentry"]["reason"]
    # What every kernel of this kind allows, probed by attaching for real.
    for kind in ("tracepoint", "raw_tp", "uprobe", "perf_event", "xdp", "tc", "cgroup"):
        assert attach[kind]["status"] == "available", (kind, attach[kind])
    # tp_btf needs vmlinux BTF (and no trampoline, so lockdown does not stop it).
    if info["kernel"]["btf"]["vmlinux"]:
        assert attach["tp_btf"]["status"] == "available", attach["tp_btf"]


def _info(binary, args: dict) -> dict:
    out = subprocess.run([str(binary), "call", "info", json.dumps(args)], capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout)


def test_probes_are_kept_for_the_boot_and_only_a_private_file_of_ours_is_trusted(binary):
    """A second process of the same binary in the same boot reads the probes the first made
    (so cold `info` costs no probing); a file with another key, or one others can write,
    is probed over; `refresh` probes again."""
    require_root()
    cache = pathlib.Path("/run/ebpf-mcp/probes.json")
    first = _info(binary, {"refresh": True, "sections": ["features"]})["features"]
    assert cache.stat().st_mode & 0o777 == 0o600 and cache.stat().st_uid == os.geteuid()
    assert cache.parent.stat().st_mode & 0o777 == 0o700
    again = _info(binary, {"sections": ["features"]})["features"]
    assert again["probed_at"] == first["probed_at"], "the boot's probes are reused"
    assert again["gadgets"] == first["gadgets"]
    saved = json.loads(cache.read_text())
    try:
        for tamper in ("key", "mode"):
            forged = json.loads(json.dumps(saved))
            forged["features"]["probed_at"] = "1999-01-01T00:00:00Z"
            if tamper == "key":
                forged["key"] += " (another binary)"
            cache.write_text(json.dumps(forged))
            cache.chmod(0o600 if tamper == "key" else 0o666)
            seen = _info(binary, {"sections": ["features"]})["features"]
            assert seen["probed_at"] != "1999-01-01T00:00:00Z", f"a cache with a bad {tamper} was trusted"
        # A link to a forged file (even one of ours) is not followed.
        forged = json.loads(json.dumps(saved))
        forged["features"]["probed_at"] = "1999-01-01T00:00:00Z"
        elsewhere = cache.parent / "forged.json"
        elsewhere.write_text(json.dumps(forged))
        elsewhere.chmod(0o600)
        cache.unlink()
        cache.symlink_to(elsewhere)
        seen = _info(binary, {"sections": ["features"]})["features"]
        assert seen["probed_at"] != "1999-01-01T00:00:00Z", "a link was followed"
        assert not cache.is_symlink(), "the link was replaced by the probes written"
        elsewhere.unlink()
        fresh = _info(binary, {"refresh": True, "sections": ["features"]})["features"]
        assert fresh["probed_at"] != first["probed_at"]
    finally:
        _info(binary, {"refresh": True})
