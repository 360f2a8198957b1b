"""The container image for real: a Docker engine (started here when none runs, and stopped
again), a Debian base image made with mmdebstrap (no registry is needed; cached), the image
built from the binary under test (the Dockerfile's `prebuilt` target) and run the way
deploy/kubernetes/daemonset.yaml runs it: the DaemonSet's capabilities only, seccomp
unconfined, read-only root, the host's PID namespace, /sys mounted, a tokens file. Traffic
stays on loopback: the engine has no bridge, the server uses the host's network (as a pod
with hostNetwork), a second container has none."""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from typing import Iterator

import anyio
import httpx2 as httpx
import pytest
import yaml

from conftest import BUILD, IN_CI, INITIALIZE, ROOT, _bpf_ids, require_root
from test_access import client, new_token
from test_sandbox import KEPT

BASE = "ebpf-mcp-base:bookworm"
IMAGE = "ebpf-mcp:test"
CACHE = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "ebpf-mcp"
STATE = pathlib.Path("/run/ebpf-mcp-test-docker")
DAEMONSET = ROOT / "deploy" / "kubernetes" / "daemonset.yaml"
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}

pytestmark = pytest.mark.anyio


def unavailable(why: str) -> None:
    if IN_CI:
        pytest.fail(f"{why} (CI=true: the container tests must run; scripts/bootstrap installs docker.io)")
    pytest.skip(why)


class Engine:
    """A Docker engine: the one running, or one started for these tests."""

    def __init__(self) -> None:
        # Debian's client matches Debian's engine; any other on PATH will do.
        self.cli = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else shutil.which("docker")
        self.env = dict(os.environ)
        self.daemon: subprocess.Popen | None = None

    def __call__(self, *args: str, check: bool = True, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
        r = subprocess.run([self.cli, *args], capture_output=True, text=True, env=self.env, timeout=timeout, **kw)
        if check and r.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {r.stdout}{r.stderr}")
        return r

    def up(self) -> bool:
        return self("info", check=False, timeout=30).returncode == 0

    def start(self) -> None:
        if self.cli is None or shutil.which("dockerd") is None:
            unavailable("docker and dockerd are not installed")
        if self.up():
            return
        STATE.mkdir(parents=True, exist_ok=True)
        socket_path = STATE / "docker.sock"
        self.env["DOCKER_HOST"] = f"unix://{socket_path}"
        log = open(STATE / "dockerd.log", "w")
        # No bridge, no iptables: containers get the host's network or none.
        self.daemon = subprocess.Popen(
            ["dockerd", "--bridge=none", "--iptables=false", "--ip-masq=false", "--host", f"unix://{socket_path}",
             "--data-root", "/var/lib/ebpf-mcp-test-docker", "--exec-root", str(STATE / "exec"),
             "--pidfile", str(STATE / "dockerd.pid")],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not self.up():
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                self.stop()
                unavailable(f"dockerd did not start: {(STATE / 'dockerd.log').read_text()[-2000:]}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.terminate()
            try:
                self.daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        self.daemon = None

    def knows_newer_caps(self) -> bool:
        r = self("run", "--rm", "--network", "none", "--cap-add", "BPF", BASE, "/bin/true", check=False)
        if "unknown capability" in r.stderr:
            return False
        assert r.returncode == 0, r.stderr
        return True

    def base_image(self) -> None:
        """A minimal Debian 12 made with mmdebstrap from Debian's archive, imported once."""
        if self("image", "inspect", BASE, check=False).returncode == 0:
            return
        if shutil.which("mmdebstrap") is None:
            unavailable("mmdebstrap is not installed")
        CACHE.mkdir(parents=True, exist_ok=True)
        tarball = CACHE / "debian-bookworm-minbase.tar"
        if not tarball.exists():
            partial = tarball.with_suffix(".partial")
            subprocess.run(
                ["mmdebstrap", "--variant=minbase", "--quiet",
                 "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
                 "--dpkgopt=path-exclude=/usr/share/locale/*",
                 "bookworm", str(partial), "deb http://deb.debian.org/debian bookworm main"],
                check=True, capture_output=True, timeout=900)
            partial.rename(tarball)
        self("import", str(tarball), BASE)

    def build(self, binary: pathlib.Path) -> None:
        """The image from the Dockerfile's `prebuilt` target: the binary under test."""
        context = pathlib.Path(tempfile.mkdtemp(prefix="ebpf-mcp-image-"))
        (context / "dist").mkdir()
        (context / "configs").mkdir()
        shutil.copy(binary, context / "dist" / "ebpf-mcp")
        shutil.copy(ROOT / "configs" / "default.yaml", context / "configs" / "default.yaml")
        shutil.copy(ROOT / "Dockerfile", context / "Dockerfile")
        self("build", "--target", "prebuilt", "--build-arg", f"BASE_IMAGE={BASE}", "-t", IMAGE, str(context))
        shutil.rmtree(context)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    require_root()
    e = Engine()
    e.start()
    try:
        e.base_image()
        e.build(BUILD / "ebpf-mcp")
        yield e
    finally:
        e.stop()


def free_ports(n: int) -> list[int]:
    """`n` distinct loopback ports free now (all bound at once, then released)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


# Capabilities newer than some engines (Docker before 23.0 refuses them by name); the
# server needs them, and CAP_SYS_ADMIN, which the DaemonSet grants too, stands in for both.
NEWER_CAPS = {"BPF", "PERFMON"}


def daemonset_run_args(known_caps: bool = True) -> list[str]:
    """`docker run` options for what the DaemonSet's pod spec says (capabilities, seccomp,
    read-only root, host PID, host mounts). `known_caps: False`: for an engine that does not
    know CAP_BPF and CAP_PERFMON."""
    pod = yaml.safe_load(DAEMONSET.read_text())["spec"]["template"]["spec"]
    c = pod["containers"][0]
    sc = c["securityContext"]
    args = ["--cap-drop", "ALL"]
    for cap in sc["capabilities"]["add"]:
        if known_caps or cap not in NEWER_CAPS:
            args += ["--cap-add", cap]
    if sc["seccompProfile"]["type"] == "Unconfined":
        args += ["--security-opt", "seccomp=unconfined"]
    if sc["readOnlyRootFilesystem"]:
        args.append("--read-only")
    if not sc["allowPrivilegeEscalation"]:
        args += ["--security-opt", "no-new-privileges"]
    if pod["hostPID"]:
        args += ["--pid", "host"]
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    for m in c["volumeMounts"]:
        if m["name"] in host_paths and m["name"] != "audit":
            args += ["-v", f"{host_paths[m['name']]}:{m['mountPath']}{':ro' if m.get('readOnly') else ''}"]
    return args


@contextlib.contextmanager
def server_container(engine: Engine, binary: pathlib.Path) -> Iterator[tuple[str, str, str, str]]:
    """The server in a container, as the DaemonSet runs it: (container id, MCP URL, metrics
    URL, a token's secret)."""
    d = pathlib.Path(tempfile.mkdtemp(prefix="ebpf-mcp-container-"))
    (d / "tokens").mkdir()
    (d / "audit").mkdir()
    secret, line = new_token(binary, "agent-1", "read,trace")
    (d / "tokens" / "tokens.yaml").write_text(f"tokens:\n{line}\n")
    (d / "tokens" / "tokens.yaml").chmod(0o400)
    port, metrics = free_ports(2)
    cm = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "configmap.yaml").read_text())["data"]
    config = (cm["config.yaml"]
              .replace('"0.0.0.0:8080"', f'"127.0.0.1:{port}"')
              .replace("0.0.0.0:9090/metrics", f"127.0.0.1:{metrics}/metrics"))
    (d / "config.yaml").write_text(config)
    name = f"ebpf-mcp-test-{uuid.uuid4().hex[:8]}"
    env = []
    for key in ("LLVM_PROFILE_FILE",):  # coverage of the instrumented build, when it is one
        if key in os.environ:
            env += ["-e", f"{key}={os.environ[key]}", "-v", f"{ROOT / 'target'}:{ROOT / 'target'}"]
    cid = engine(
        "run", "-d", "--name", name, "--network", "host", *daemonset_run_args(engine.knows_newer_caps()), *env,
        "-v", f"{d / 'config.yaml'}:/etc/ebpf-mcp/config.yaml:ro",
        "-v", f"{d / 'tokens'}:/etc/ebpf-mcp/tokens:ro",
        "-v", f"{d / 'audit'}:/var/log/ebpf-mcp",
        "-e", "NODE_NAME=node-a", "-e", f"POD_NAME={name}",
        IMAGE, "--config", "/etc/ebpf-mcp/config.yaml", "serve", "--http").stdout.strip()
    url, metrics_url = f"http://127.0.0.1:{port}/mcp", f"http://127.0.0.1:{metrics}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{metrics_url}/health", timeout=2).status_code == 200:
                    break
            state = engine("inspect", "-f", "{{.State.Running}}", cid, check=False).stdout.strip()
            if state != "true" or time.monotonic() > deadline:
                raise AssertionError(f"the server container did not come up ({state}): "
                                     f"{engine('logs', cid, check=False).stderr[-3000:]}")
            time.sleep(0.3)
        yield cid, url, metrics_url, secret
    finally:
        engine("stop", "-t", "20", cid, check=False)
        logs = engine("logs", cid, check=False)
        engine("rm", "-f", cid, check=False)
        shutil.rmtree(d, ignore_errors=True)
        print(logs.stderr[-2000:])


async def call(c, tool: str, args: dict) -> dict:
    r = await c.call_tool(tool, args)
    assert not r.is_error, r.structured_content
    return r.structured_content


async def trace_while(c, args: dict, action) -> dict:
    """`trace` on client `c`; `action` (in a thread) once the gadget is attached (the
    trace's first progress report)."""
    attached = anyio.Event()
    result = {}

    async def on_progress(value, total, message) -> None:
        if message and message.startswith("attached: "):
            attached.set()

    async def run() -> None:
        r = await c.call_tool("trace", args, progress_callback=on_progress)
        assert not r.is_error, r.structured_content
        result["data"] = r.structured_content
        attached.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        with anyio.fail_after(60):
            await attached.wait()
        assert "data" not in result, "the trace ended before it reported being attached"
        await anyio.to_thread.run_sync(action)
    return result["data"]


async def test_the_image_runs_as_the_daemonset_and_names_containers(engine, binary):
    """Over HTTP with a token and the official SDK: `info` names the server's container;
    `trace exec` sees a process started on the host and one started in a second container,
    whose events carry that container's id; /ready and /metrics answer; stopping the
    container leaves no BPF object behind."""
    before = _bpf_ids()
    marker = uuid.uuid4().hex[:12]
    with server_container(engine, binary) as (cid, url, metrics_url, secret):
        assert httpx.get(f"{metrics_url}/ready", timeout=10).status_code == 200
        assert "ebpf_mcp_" in httpx.get(f"{metrics_url}/metrics", timeout=10).text
        assert httpx.post(url, json=INITIALIZE, timeout=10, headers=HEADERS).status_code == 401
        async with client(url, secret) as c:
            info = await call(c, "info", {"sections": ["server"]})
            assert info["summary"]["container"] == f"{cid} (docker)", info["summary"]
            assert info["server"]["container"]["id"] == cid
            assert info["server"]["kubernetes"]["node"] == "node-a"
            assert info["server"]["sandbox"]["seccomp"], info["server"]["sandbox"]
            second = {}

            def action():
                subprocess.run(["/bin/echo", f"host-{marker}"], check=True, capture_output=True)
                r = engine("run", "-d", "--network", "none", BASE, "/bin/sh", "-c",
                           f"/bin/echo container-{marker}; sleep 1")
                second["id"] = r.stdout.strip()
                engine("wait", second["id"])
                engine("rm", second["id"])

            data = await trace_while(c, {"gadget": "exec", "duration_ms": 10000, "comm": "echo",
                                         "fields": ["argv", "container_id"]}, action)
            events = data["events"]
            host = [e for e in events if e["argv"] == ["/bin/echo", f"host-{marker}"]]
            inside = [e for e in events if e["argv"] == ["/bin/echo", f"container-{marker}"]]
            assert len(host) == 1 and "container_id" not in host[0], events
            assert len(inside) == 1 and inside[0]["container_id"] == second["id"], (events, second)
            # The container filter, in the kernel: a running container's processes (its own
            # cgroup and those below it), nothing from the host or the server's container.
            looping = engine("run", "-d", "--network", "none", BASE, "/bin/sh", "-c",
                             "mkdir -p /tmp/x; while true; do /bin/true; sleep 0.1; done").stdout.strip()
            try:
                def host_execs():
                    for _ in range(5):
                        subprocess.run(["/bin/true"], check=True)

                seen = (await trace_while(c, {"gadget": "exec", "duration_ms": 2000, "container": looping[:12],
                                              "fields": ["comm", "container_id"]}, host_execs))["events"]
                assert seen and {e["container_id"] for e in seen} == {looping}, seen
            finally:
                engine("rm", "-f", looping)
            only = await call(c, "trace", {"gadget": "exec", "duration_ms": 1000, "container": cid[:12]})
            assert only["events_total"] == 0, only
    deadline = time.monotonic() + 10
    while True:
        now = _bpf_ids()
        left = {k: now[k] - before[k] for k in now}
        if not any(left.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not any(left.values()), f"the stopped container left BPF objects: {left}"


def test_the_run_options_are_the_daemonsets():
    """The container test runs what the DaemonSet says, not a copy of it."""
    args = daemonset_run_args()
    caps = {args[i + 1] for i, a in enumerate(args) if a == "--cap-add"}
    assert {f"CAP_{c}" for c in caps} == set(KEPT)
    assert "--read-only" in args and ["--pid", "host"] == args[args.index("--pid"):args.index("--pid") + 2]
    assert "seccomp=unconfined" in args
    assert any(a.startswith("/sys/fs/bpf:") for a in args)
