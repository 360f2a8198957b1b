#!/usr/bin/env python3
"""The suite scripts/kernel-matrix runs inside each guest kernel, sized for emulation.

Each check starts the workload it traces (so it knows exactly what happened) and asserts
what the server reported. Most checks go through the binary (`ebpf-mcp call`); one MCP
session through the official Python SDK deploys an object and reads its map. Results go to
RESULTS (JSON): the kernel, each check with ok/detail/seconds, and what `info` said.

    guest.py BINARY RESULTS [COVERAGE_BINARY]

With COVERAGE_BINARY (an instrumented build), the checks of what only these kernels can
run (kfunc) are run again with it, its profiles written next to RESULTS under profiles/.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

BIN = sys.argv[1]
RESULTS = sys.argv[2]
COVERAGE_BIN = sys.argv[3] if len(sys.argv) > 3 else None
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHECKS: list[tuple[str, object]] = []
INFO: dict = {}


def check(name: str):
    def register(fn):
        CHECKS.append((name, fn))
        return fn
    return register


class Failed(Exception):
    pass


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise Failed(what)


def call(tool: str, args: dict | None = None, config: str | None = None) -> dict:
    cmd = [BIN, "call"] + (["--config", config] if config else []) + [tool, json.dumps(args or {})]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise Failed(f"{tool} {json.dumps(args)} failed: {out.stderr.strip()[:1500]}")
    return json.loads(out.stdout)


class Worker:
    """A Python child that waits for `go`, runs CODE, and exits: its pid is known before the
    trace starts, and what it does happens only once the trace is attached. It leaves with
    _exit, so the interpreter's teardown (which seeks stdin) adds no calls to count."""

    def __init__(self, code: str, name: str = "kmworker", setup: str = ""):
        prog = (
            "import os, sys, time, socket\n"
            f"open('/proc/self/comm', 'w').write({name!r})\n" + setup + "\n"
            "print(os.getpid(), flush=True)\n"
            "sys.stdin.readline()\n" + code + "\nprint('done', flush=True)\nos._exit(0)\n"
        )
        self.proc = subprocess.Popen([sys.executable, "-c", prog], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.pid = int(self.proc.stdout.readline())
        self.name = name

    def go(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().strip()
        expect(line == "done", f"the workload failed: {line!r}")
        self.proc.wait(timeout=60)


def trace(args: dict, action=None) -> dict:
    """Runs `ebpf-mcp call trace ARGS`; once the gadget is attached (its log line), calls
    `action`; returns the result."""
    proc = subprocess.Popen([BIN, "call", "--log-level", "info", "trace", json.dumps(args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    errors: list[str] = []
    attached = threading.Event()

    def read_stderr():
        for line in proc.stderr:
            errors.append(line)
            if "tracing with" in line:
                attached.set()
        attached.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    attached.wait(timeout=240)
    if action is not None and proc.poll() is None:
        action()
    out, _ = proc.communicate(timeout=300)
    reader.join(timeout=10)
    if proc.returncode != 0:
        raise Failed(f"trace {json.dumps(args)} failed: {''.join(errors)[-1500:]}")
    return json.loads(out)


def events_of(result: dict, **match) -> list[dict]:
    return [e for e in result.get("events", []) if all(e.get(k) == v for k, v in match.items())]


# --- what the kernel allows --------------------------------------------------------------

@check("info agrees with bpftool feature probe")
def info_vs_bpftool():
    tool = json.loads(subprocess.run(["bpftool", "-j", "feature", "probe", "kernel"],
                                     capture_output=True, text=True, check=True).stdout)
    features = INFO["features"]
    differ = []
    for ours, theirs, suffix in ((features["program_types"], tool["program_types"], "prog_type"),
                                 (features["map_types"], tool["map_types"], "map_type")):
        for name, support in ours.items():
            key = f"have_{name}_{suffix}"
            if key in theirs and (support["status"] == "available") != theirs[key]:
                differ.append(f"{name}: ours {support['status']}, bpftool {theirs[key]}")
    helpers = tool["helpers"].get("tracepoint_available_helpers", [])
    for name, support in features["helpers"].items():
        if name in ("override_return", "probe_write_user", "trace_printk", "send_signal"):
            continue  # checked from other program types or refused by lockdown on purpose
        if helpers and (support["status"] == "available") != (f"bpf_{name}" in helpers):
            differ.append(f"helper {name}: ours {support['status']}")
    expect(not differ, "; ".join(differ))
    return f"{len(features['program_types'])} program types, {len(features['map_types'])} map types agree"


# --- every gadget info calls supported, each with an event the check causes --------------

def supported(name: str) -> bool:
    return any(g["name"] == name and g["supported"] for g in INFO["gadgets"])


GADGET_CHECKS: dict[str, object] = {}


def gadget(name: str):
    def register(fn):
        GADGET_CHECKS[name] = fn
        return fn
    return register


@gadget("exec")
def g_exec():
    w = Worker("import subprocess\nsubprocess.run(['/bin/true', 'kmexec'])")
    r = trace({"gadget": "exec", "duration_ms": 4000, "filter": f"ppid == {w.pid}"}, w.go)
    argvs = [e.get("argv") for e in r["events"]]
    expect(any(a and a[:2] == ["/bin/true", "kmexec"] for a in argvs), f"no exec of /bin/true: {argvs}")
    return "the exec of /bin/true kmexec, with its argv"


@gadget("exit")
def g_exit():
    w = Worker("pass")
    r = trace({"gadget": "exit", "duration_ms": 4000, "pid": w.pid}, w.go)
    expect(len(events_of(r, pid=w.pid)) >= 1, f"no exit of {w.pid}: {r['events'][:3]}")


@gadget("open")
def g_open():
    path = tempfile.mktemp(prefix="kmopen-")
    w = Worker(f"open({path!r}, 'w').close()")
    r = trace({"gadget": "open", "duration_ms": 4000, "pid": w.pid}, w.go)
    expect(any(e.get("path") == path for e in r["events"]), f"no open of {path}: {r['events'][:3]}")
    return "the open of the check's file, by path"


def listener() -> tuple[socket.socket, int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    return s, s.getsockname()[1]


@gadget("tcp_connect")
def g_tcp_connect():
    srv, port = listener()
    w = Worker(f"socket.create_connection(('127.0.0.1', {port})).close()")
    r = trace({"gadget": "tcp_connect", "duration_ms": 4000, "pid": w.pid}, w.go)
    srv.close()
    expect(any(e.get("dport") == port for e in r["events"]), f"no connect to {port}: {r['events'][:3]}")
    return "the connect to the check's listener, by port"


@gadget("tcp_accept")
def g_tcp_accept():
    w = Worker("s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)\n"
               "c = socket.create_connection(s.getsockname()); a, _ = s.accept(); a.close(); c.close()")
    r = trace({"gadget": "tcp_accept", "duration_ms": 4000, "pid": w.pid}, w.go)
    expect(len(r["events"]) >= 1, "no accept")


@gadget("tcp_state")
def g_tcp_state():
    srv, port = listener()
    w = Worker(f"socket.create_connection(('127.0.0.1', {port})).close()")
    r = trace({"gadget": "tcp_state", "duration_ms": 4000, "mode": "events"}, w.go)
    srv.close()
    states = [e.get("newstate") for e in r["events"] if port in (e.get("dport"), e.get("sport"))]
    expect("ESTABLISHED" in states, f"no ESTABLISHED for port {port}: {states}")


@gadget("tcp_retransmit")
def g_tcp_retransmit():
    # Loopback drops nothing; netem dropping every packet makes the sender retransmit.
    subprocess.run(["modprobe", "sch_netem"], capture_output=True)
    srv, port = listener()
    code = (f"c = socket.create_connection(('127.0.0.1', {port}))\n"
            "os.system('tc qdisc add dev lo root netem loss 100%')\n"
            "c.send(b'x' * 100); time.sleep(1.5)\n"
            "os.system('tc qdisc del dev lo root')\nc.close()")
    w = Worker(code)
    r = trace({"gadget": "tcp_retransmit", "duration_ms": 6000}, w.go)
    srv.close()
    hits = [e for e in r["events"] if port in (e.get("dport"), e.get("sport"))]
    expect(len(hits) >= 1, f"no retransmit to {port}: {r['events'][:3]}")
    e = hits[0]
    expect(e.get("saddr") == "127.0.0.1" and e.get("daddr") == "127.0.0.1" and e.get("state") == "ESTABLISHED",
           f"misread retransmit: {e}")
    return f"{len(hits)} retransmits while netem dropped every packet"


@gadget("signal")
def g_signal():
    w = Worker("import signal\nsignal.signal(signal.SIGUSR1, lambda *a: None)\nos.kill(os.getpid(), signal.SIGUSR1)")
    r = trace({"gadget": "signal", "duration_ms": 4000, "pid": w.pid}, w.go)
    expect(any(e.get("signal") == "SIGUSR1" for e in r["events"]), f"no SIGUSR1: {r['events'][:3]}")


@gadget("oom_kill")
def g_oom():
    cg = "/sys/fs/cgroup/kmoom"
    os.makedirs(cg, exist_ok=True)
    with open("/sys/fs/cgroup/cgroup.subtree_control", "w") as f:
        f.write("+memory")
    with open(f"{cg}/memory.max", "w") as f:
        f.write(str(32 << 20))
    with open(f"{cg}/memory.swap.max", "w") as f:
        f.write("0")
    hog = ("import os\nopen('/sys/fs/cgroup/kmoom/cgroup.procs','w').write(str(os.getpid()))\n"
           "b = []\nwhile True: b.append(bytearray(1 << 20))")
    pid = []

    def act():
        p = subprocess.Popen([sys.executable, "-c", hog])
        pid.append(p.pid)
        p.wait(timeout=60)

    r = trace({"gadget": "oom_kill", "duration_ms": 8000}, act)
    os.rmdir(cg)
    victims = [e.get("victim_pid") for e in r["events"]]
    expect(pid[0] in victims, f"no OOM kill of {pid[0]}: victims {victims}")
    return "the kill of the check's process in a 32 MiB memory cgroup"


@gadget("syscalls")
def g_syscalls():
    w = Worker("for _ in range(50): os.getppid()")
    r = trace({"gadget": "syscalls", "duration_ms": 4000, "pid": w.pid}, w.go)
    counts = {c["key"].get("syscall"): c["count"] for c in r["counts"]}
    expect(counts.get("getppid", 0) >= 50, f"getppid counted {counts.get('getppid')}: {counts}")
    return f"50 getppid calls, {counts['getppid']} counted"


@gadget("biolatency")
def g_biolatency():
    dev = "/dev/vda"
    expect(os.path.exists(dev), "no virtio disk in the guest")
    act = lambda: subprocess.run(["dd", f"if={dev}", "of=/dev/null", "bs=4k", "count=64", "iflag=direct"],
                                 capture_output=True, check=True)
    r = trace({"gadget": "biolatency", "duration_ms": 4000}, act)
    total = sum(h["count"] for h in r["histograms"])
    expect(total >= 64, f"{total} block I/Os seen, 64 made")
    return f"64 direct reads of /dev/vda, {total} I/Os seen"


@gadget("runqlat")
def g_runqlat():
    w = Worker("for _ in range(20): time.sleep(0.005)")
    r = trace({"gadget": "runqlat", "duration_ms": 4000}, w.go)
    expect(sum(h["count"] for h in r["histograms"]) >= 20, "fewer wakeups than sleeps")


@gadget("profile")
def g_profile():
    w = Worker("t = time.time()\nwhile time.time() - t < 1.5: pass")
    r = trace({"gadget": "profile", "duration_ms": 4000, "pid": w.pid}, w.go)
    expect(sum(c["count"] for c in r["counts"]) >= 10, f"few samples: {r['counts'][:3]}")


@gadget("uprobe")
def g_uprobe():
    w = Worker("for _ in range(30): os.getpid()")
    r = trace({"gadget": "uprobe", "duration_ms": 4000, "pid": w.pid, "target": "libc.so.6:getpid"}, w.go)
    n = sum(c["count"] for c in r["counts"])
    expect(n >= 30, f"getpid called 30 times, {n} counted")
    return f"libc getpid called 30 times, {n} counted"


@gadget("tracepoint")
def g_tracepoint():
    w = Worker("for _ in range(25): os.getppid()")
    r = trace({"gadget": "tracepoint", "tracepoint": "syscalls:sys_enter_getppid", "mode": "count",
               "duration_ms": 4000, "pid": w.pid}, w.go)
    n = sum(c["count"] for c in r["counts"])
    expect(n == 25, f"25 getppid, {n} counted")
    return "25 getppid calls, 25 counted"


@gadget("kfunc")
def g_kfunc():
    # Count in the kernel over a glob (fentry: at most 8 functions).
    w = Worker("for _ in range(20): time.sleep(0.001)")
    r = trace({"gadget": "kfunc", "target": "*_nanosleep", "duration_ms": 4000, "pid": w.pid}, w.go)
    expect(r.get("counted_in") == "kernel", f"counted in {r.get('counted_in')}")
    counts = {c["key"]["function"]: c["count"] for c in r["counts"]}
    expect(counts.get("do_nanosleep") == 20, f"do_nanosleep: {counts}")
    hooks = r["hooks"]
    return f"*_nanosleep by {hooks[0].split(':')[0]}, {len(hooks)} hooks: {counts}"


# A regular file, opened before the trace (imports seek too): lseek on /dev/null returns 0
# whatever the offset.
LSEEK_SETUP = "import tempfile\nf = tempfile.TemporaryFile()\nfd = f.fileno()"
LSEEKS = "for _ in range(40): assert os.lseek(fd, 5, 0) == 5"


@check("kfunc: a glob of more functions than trampolines attaches kprobes")
def kfunc_kprobes():
    w = Worker(LSEEKS, setup=LSEEK_SETUP)
    r = trace({"gadget": "kfunc", "target": "ksys_*", "duration_ms": 4000, "pid": w.pid}, w.go)
    counts = {c["key"]["function"]: c["count"] for c in r["counts"]}
    expect(all(h.startswith("kprobe:") for h in r["hooks"]), f"hooks {r['hooks'][:3]}")
    expect(counts.get("ksys_lseek") == 40, f"ksys_lseek: {counts}")
    return f"{len(r['hooks'])} kprobes, ksys_lseek counted 40"


@check("kfunc over kprobes: latency histograms and returns paired by kretprobes")
def kfunc_kretprobes():
    w = Worker(LSEEKS, setup=LSEEK_SETUP)
    r = trace({"gadget": "kfunc", "target": "ksys_*", "mode": "histogram", "duration_ms": 4000,
               "pid": w.pid}, w.go)
    h = {x["key"]["function"]: x["count"] for x in r["histograms"]}
    expect(h.get("ksys_lseek") == 40, f"histograms {h}")
    w = Worker(LSEEKS, setup=LSEEK_SETUP)
    r = trace({"gadget": "kfunc", "target": "ksys_*", "mode": "events", "return": True, "duration_ms": 4000,
               "pid": w.pid}, w.go)
    calls = [e for e in r["events"] if e["function"] == "ksys_lseek"]
    expect(len(calls) == 40, f"{len(calls)} ksys_lseek returns: {r['events'][:2]}")
    e = calls[0]
    expect(e["ret"] == 5 and e["args"].get("offset") == 5 and e["args"].get("whence") == 0,
           f"lseek(fd, 5, SEEK_SET) read as {e}")
    return f"40 calls in the histogram and as returns: args {e['args']}, ret {e['ret']}"


@check("kfunc: latency histograms from entry to return, per function")
def kfunc_histogram():
    w = Worker("for _ in range(10): time.sleep(0.02)")
    r = trace({"gadget": "kfunc", "target": "*_nanosleep", "mode": "histogram", "duration_ms": 5000,
               "pid": w.pid}, w.go)
    h = [x for x in r["histograms"] if x["key"].get("function") == "do_nanosleep"]
    expect(h and h[0]["count"] == 10, f"histograms {r['histograms']}")
    expect(16_000 <= h[0]["p50_us"] <= 70_000, f"p50 {h[0]['p50_us']} µs for 20 ms sleeps")
    named = sorted(x["key"]["function"] for x in r["histograms"])
    expect(len(named) >= 2 and not any(n.startswith("0x") for n in named), f"functions {named}")
    return f"do_nanosleep: 10 calls, p50 {h[0]['p50_us']} µs; histograms of {', '.join(named)}"


@check("kfunc: arguments through BTF, return value, duration, stack")
def kfunc_args():
    path = tempfile.mktemp(prefix="kmargs-")
    w = Worker(f"open({path!r}, 'w').close()")
    r = trace({"gadget": "kfunc", "target": "do_sys_openat2", "mode": "events", "return": True,
               "duration_ms": 4000, "pid": w.pid, "fields": ["function", "args", "ret", "duration_ns", "stack"]},
              w.go)
    mine = [e for e in r["events"] if e["args"].get("filename") == path]
    expect(mine, f"no call with filename {path}: {r['events'][:2]}")
    e = mine[0]
    expect(isinstance(e["ret"], int) and e["ret"] >= 0, f"ret {e.get('ret')}")
    expect(e["duration_ns"] > 0, "no duration")
    expect(e["args"].get("dfd") == -100, f"dfd is AT_FDCWD (-100): {e['args']}")
    expect(any("openat" in f for f in e.get("stack", [])), f"stack {e.get('stack')}")
    return f"args {e['args']}, ret {e['ret']}, {len(e['stack'])} frames"


@check("list_functions finds functions with prototypes")
def list_functions():
    r = call("list_functions", {"pattern": "do_sys_openat2"})
    expect(r["source"] == "ftrace", f"source {r['source']}: {r.get('note')}")
    proto = r["functions"][0].get("prototype", "")
    expect("do_sys_openat2(int dfd, const char *filename" in proto, proto)
    return proto


# --- one MCP session through the official SDK: deploy, map_dump, undeploy ----------------

@check("MCP session: deploy a tracepoint object, map_dump its BTF map")
def mcp_session():
    started = time.time()
    code = f"""
import asyncio, base64, json, os, sys
from mcp import Client, StdioServerParameters
CONFIG = sys.argv[1]
async def main():
    params = StdioServerParameters(command={BIN!r}, args=["--config", CONFIG, "serve"], env=dict(os.environ))
    async with Client(params, mode="legacy") as c:
        obj = base64.b64encode(open({ROOT + '/bpf/obj/tests/ok_tracepoint.bpf.o'!r}, 'rb').read()).decode()
        d = (await c.call_tool("deploy", {{"object": obj}})).structured_content
        assert "deployment_id" in d, d
        for _ in range(30):
            os.getpid()
        m = [x for x in d["maps"] if x["name"] == "getpid_calls"][0]
        dump = (await c.call_tool("map_dump", {{"map_id": m["id"]}})).structured_content
        u = (await c.call_tool("undeploy", {{"deployment_id": d["deployment_id"]}})).structured_content
        print(json.dumps({{"dump": dump, "undeploy": u}}))
asyncio.run(main())
"""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as cfg:
        cfg.write('tools:\n  deploy:\n    enabled: true\n    allowed_types: ["tracepoint"]\n'
                  '    allowed_attach_points: ["tracepoint:syscalls:*"]\n')
    venv = os.path.join(ROOT, ".venv", "bin", "python")
    out = subprocess.run([venv, "-c", code, cfg.name], capture_output=True, text=True, timeout=400)
    expect(out.returncode == 0, f"SDK session failed: {out.stderr[-1500:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    entries = res["dump"]["entries"]
    expect(entries and entries[0]["value"] >= 30, f"30 getpid calls, map_dump says {res['dump']}")
    return f"map_dump: {entries[:1]} ({time.time() - started:.0f} s with the SDK)"


def main() -> int:
    global INFO
    started = time.time()
    results = {"kernel": os.uname().release, "checks": []}
    try:
        INFO = call("info", {"sections": ["all"]})
    except Failed as e:
        results["checks"].append({"name": "info", "ok": False, "detail": str(e)})
        json.dump(results, open(RESULTS, "w"), indent=1)
        return 1
    results["lockdown"] = INFO["kernel"]["lockdown"]["mode"]
    results["attach"] = {k: v["status"] for k, v in INFO["features"]["attach"].items()}
    results["gadgets"] = {g["name"]: {"supported": g["supported"], "reason": g.get("reason")}
                          for g in INFO["gadgets"]}
    todo = list(CHECKS[:1])
    for g in INFO["gadgets"]:
        fn = GADGET_CHECKS.get(g["name"])
        if fn is None:
            todo.append((f"gadget {g['name']}: no check written for it", None))
        elif g["supported"]:
            todo.append((f"gadget {g['name']}", fn))
        else:
            # Debian's kernels allow every gadget: one info calls unsupported is a defect.
            results["checks"].append({"name": f"gadget {g['name']}", "ok": False,
                                      "detail": f"info calls it unsupported: {g.get('reason')}"})
    todo += CHECKS[1:]
    if COVERAGE_BIN:
        def with_coverage(fn):
            def run():
                global BIN
                BIN, saved = COVERAGE_BIN, BIN
                os.environ["LLVM_PROFILE_FILE"] = os.path.join(os.path.dirname(RESULTS), "profiles",
                                                               "guest-%p-%m.profraw")
                try:
                    return fn()
                finally:
                    BIN = saved
                    os.environ.pop("LLVM_PROFILE_FILE", None)
            return run
        todo += [(f"instrumented: {name}", with_coverage(fn)) for name, fn in todo
                 if fn is not None and "kfunc" in name]
    for name, fn in todo:
        t = time.time()
        try:
            if fn is None:
                raise Failed("every gadget needs a check here")
            detail = fn() or ""
            ok = True
        except Failed as e:
            ok, detail = False, str(e)
        except Exception:  # a broken check is a failure, with its traceback
            ok, detail = False, traceback.format_exc()[-1500:]
        results["checks"].append({"name": name, "ok": ok, "detail": str(detail), "seconds": round(time.time() - t, 1)})
        print(f"{'ok  ' if ok else 'FAIL'} {name} ({time.time() - t:.1f} s) {'' if ok else detail}", flush=True)
    results["seconds"] = round(time.time() - started, 1)
    with open(RESULTS, "w") as f:
        json.dump(results, f, indent=1)
    return 0 if all(c["ok"] for c in results["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
