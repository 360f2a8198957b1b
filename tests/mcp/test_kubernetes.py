"""deploy/kubernetes: every manifest validates against the Kubernetes schemas (strict), the
kustomization lists them all, the ConfigMap's configuration is one the server accepts, the
DaemonSet grants exactly the capabilities the server keeps, and a server run with that
configuration and the downward API's variables answers agents by any Host name with a token
and names its node and cluster in `info`."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import tempfile

import httpx2 as httpx
import pytest
import yaml

from conftest import INITIALIZE as INIT
from conftest import ROOT, require_root, start_http_server
from test_access import new_token
from test_sandbox import KEPT

K8S = ROOT / "deploy" / "kubernetes"
VALIDATE = pathlib.Path(sys.executable).with_name("kubernetes-validate")
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def manifests() -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(K8S.glob("*.yaml")) if p.name != "kustomization.yaml"}


@pytest.mark.parametrize("version", ["1.30.0", "1.37.0"])
def test_every_manifest_validates_strictly(version):
    files = [str(K8S / name) for name in manifests()]
    r = subprocess.run([str(VALIDATE), "--strict", "-k", version, *files], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("passed") == len(files), r.stdout


def test_the_kustomization_applies_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(manifests())


def test_the_daemonset_grants_what_the_server_keeps_and_probes_its_endpoints():
    ds = manifests()["daemonset.yaml"]
    pod = ds["spec"]["template"]["spec"]
    c = pod["containers"][0]
    sc = c["securityContext"]
    assert "privileged" not in sc and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert {f"CAP_{cap}" for cap in sc["capabilities"]["add"]} == set(KEPT)
    assert pod["hostPID"] is True
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    env = {e["name"] for e in c["env"]}
    assert {"NODE_NAME", "POD_NAME", "POD_NAMESPACE", "CLUSTER_NAME"} <= env
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/sys/fs/bpf", "/sys/kernel/tracing", "/sys/kernel/btf", "/var/log/ebpf-mcp"} <= mounts
    annotations = ds["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"


def test_the_configmaps_configuration_serves_agents_by_any_host_with_a_token(binary):
    require_root()
    cm = manifests()["configmap.yaml"]["data"]
    d = pathlib.Path(tempfile.mkdtemp(prefix="ebpf-mcp-k8s-"))
    secret, line = new_token(binary, "agent-1", "read")
    tokens = d / "tokens.yaml"
    tokens.write_text(f"tokens:\n{line}\n")
    tokens.chmod(0o400)
    # The pod's paths, moved into a temporary directory; ports chosen by the kernel.
    config = (cm["config.yaml"]
              .replace("/etc/ebpf-mcp/tokens/tokens.yaml", str(tokens))
              .replace("/var/log/ebpf-mcp/audit.log", str(d / "audit.log"))
              .replace("0.0.0.0:9090/metrics", "127.0.0.1:0/metrics"))
    (d / "config.yaml").write_text(config)
    check = subprocess.run([str(binary), "config", "check", str(d / "config.yaml")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    server = start_http_server(
        binary, config=config,
        env={"NODE_NAME": "node-a", "POD_NAME": "ebpf-mcp-abcde", "POD_NAMESPACE": "ebpf-mcp",
             "CLUSTER_NAME": cm["cluster-name"]},
    )
    try:
        url = server.url
        port = url.rsplit(":", 1)[1].split("/")[0]
        headers = {**HEADERS, "Host": f"10.0.3.7:{port}"}  # a pod IP, as a headless Service gives
        assert httpx.post(url, headers=headers, json=INIT, timeout=10).status_code == 401
        r = httpx.post(url, headers={**headers, "Authorization": f"Bearer {secret}"}, json=INIT, timeout=10)
        assert r.status_code == 200, r.text
        sid = r.headers["mcp-session-id"]
        auth = {**headers, "Authorization": f"Bearer {secret}", "Mcp-Session-Id": sid, "Mcp-Protocol-Version": "2025-11-25"}
        httpx.post(url, headers=auth, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, timeout=10)
        info = httpx.post(url, headers=auth, json={"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                                    "params": {"name": "info", "arguments": {}}}, timeout=60)
        assert info.status_code == 200
        body = info.text
        assert '"node":"node-a"' in body and f'"cluster":"{cm["cluster-name"]}"' in body
    finally:
        assert server.stop(timeout=20) == 0


def test_any_host_needs_tokens(binary):
    d = pathlib.Path(tempfile.mkdtemp(prefix="ebpf-mcp-k8s-"))
    (d / "c.yaml").write_text('server:\n  allowed_hosts: ["*"]\n')
    r = subprocess.run([str(binary), "config", "check", str(d / "c.yaml")], capture_output=True, text=True)
    assert r.returncode == 2 and "tokens_file" in r.stderr
