"""The kfunc gadget and list_functions on this host, whose kernel has no kprobes and whose
lockdown refuses fentry: the refusal quotes the kernel for both ways, info agrees, and
finding functions still works from BTF. Tracing kernel functions for real runs in the
kernel matrix (tests/kernels/guest.py under scripts/kernel-matrix)."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import require_root

pytestmark = pytest.mark.anyio


def call(binary, tool: str, args: dict) -> tuple[int, dict]:
    out = subprocess.run([str(binary), "call", tool, json.dumps(args)], capture_output=True, text=True, timeout=120)
    return out.returncode, json.loads(out.stdout)


def test_kernel_functions_are_refused_with_the_kernels_reasons(binary):
    require_root()
    rc, info = call(binary, "info", {"sections": ["gadgets", "features"]})
    assert rc == 0
    attach = info["features"]["attach"]
    kfunc = next(g for g in info["gadgets"] if g["name"] == "kfunc")
    if attach["fentry"]["status"] == "available" or attach["kprobe"]["status"] == "available":
        pytest.fail("this host traces kernel functions: the kernel matrix covers that, not this test")
    assert kfunc["supported"] is False
    assert "fentry:" in kfunc["reason"] and "kprobe:" in kfunc["reason"], kfunc["reason"]
    rc, err = call(binary, "trace", {"gadget": "kfunc", "target": "do_nanosleep", "duration_ms": 300})
    assert rc != 0 and err["code"] == "GADGET_FAILED", err
    assert attach["fentry"]["reason"].split(" (")[0] in err["message"], err["message"]
    assert "kprobe:" in err["message"] and "tracepoint gadget" in err["message"]


def test_kfunc_target_errors_say_how_to_fix_them(binary):
    require_root()
    for args, code, needle in [
        ({}, "INVALID_ARGUMENTS", "needs `target`"),
        ({"target": "vfs read"}, "INVALID_ARGUMENTS", "glob of `*` and `?`"),
        ({"target": "/etc/passwd"}, "INVALID_ARGUMENTS", "glob of `*` and `?`"),
        ({"target": "no_such_function_xyz"}, "TARGET_NOT_FOUND", "list_functions"),
        ({"target": "vfs_rea"}, "TARGET_NOT_FOUND", "did you mean"),
        ({"target": "*"}, "INVALID_ARGUMENTS", "at most 64"),
        ({"target": "do_nanosleep", "return": True}, "INVALID_ARGUMENTS", "mode events"),
    ]:
        rc, err = call(binary, "trace", {"gadget": "kfunc", "duration_ms": 300, **args})
        assert rc != 0 and err["code"] == code, (args, err)
        assert needle in err["message"], (args, err["message"])


def test_list_functions_finds_functions_with_their_prototypes(binary):
    require_root()
    rc, r = call(binary, "list_functions", {"pattern": "do_sys_openat2"})
    assert rc == 0, r
    assert [f["name"] for f in r["functions"]] == ["do_sys_openat2"]
    assert "do_sys_openat2(int dfd, const char *filename, struct open_how *how)" in r["functions"][0]["prototype"]
    if r["source"] == "btf":
        assert "available_filter_functions" in r["note"]
    # Paged by cursor, and every page a slice of the whole.
    rc, whole = call(binary, "list_functions", {"pattern": "tcp_v4_*", "limit": 1000})
    names = [f["name"] for f in whole["functions"]]
    assert whole["total"] == len(names) > 5
    rc, first = call(binary, "list_functions", {"pattern": "tcp_v4_*", "limit": 3})
    assert first["truncated"] and [f["name"] for f in first["functions"]] == names[:3]
    rc, second = call(binary, "list_functions", {"pattern": "tcp_v4_*", "limit": 3, "cursor": first["next_cursor"]})
    assert [f["name"] for f in second["functions"]] == names[3:6]
    for args, needle in [({"pattern": ""}, "1 to 256"), ({"pattern": "x", "limit": 0}, "between 1"),
                         ({"pattern": "tcp_*", "cursor": "nope"}, "start again")]:
        rc, err = call(binary, "list_functions", args)
        assert rc != 0 and needle in err["message"], (args, err)
