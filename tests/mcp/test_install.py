"""scripts/install.sh into a throwaway root (DESTDIR): what it installs, that a second run
changes nothing it should keep, that --uninstall removes it all; and the systemd unit passes
`systemd-analyze verify`. Nothing on the live system changes."""

from __future__ import annotations

import os
import pathlib
import shutil
import stat
import subprocess
import tempfile

import pytest

from conftest import ROOT

SCRIPT = ROOT / "scripts" / "install.sh"
UNIT = ROOT / "deploy" / "systemd" / "ebpf-mcp.service"


def install(destdir: pathlib.Path, binary, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DESTDIR": str(destdir)}
    return subprocess.run([str(SCRIPT), "--binary", str(binary), *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_install_is_complete_idempotent_and_reversible(binary):
    live_unit = pathlib.Path("/etc/systemd/system/ebpf-mcp.service")
    live_before = live_unit.exists()
    root = pathlib.Path(tempfile.mkdtemp(prefix="ebpf-mcp-destdir-"))
    first = install(root, binary)
    assert first.returncode == 0, first.stderr
    installed = root / "usr/local/bin/ebpf-mcp"
    assert installed.read_bytes() == pathlib.Path(binary).read_bytes()
    assert stat.S_IMODE(installed.stat().st_mode) == 0o755
    config = root / "etc/ebpf-mcp/config.yaml"
    default = subprocess.run([str(binary), "config", "default"], capture_output=True, text=True).stdout
    assert config.read_text() == default
    assert (root / "etc/systemd/system/ebpf-mcp.service").read_text() == UNIT.read_text()
    assert (root / "usr/local/share/doc/ebpf-mcp/security.md").exists()
    assert "postrotate" in (root / "etc/logrotate.d/ebpf-mcp").read_text()
    users = [l for l in (root / "etc/passwd").read_text().splitlines() if l.startswith("ebpf-mcp:")]
    assert len(users) == 1 and users[0].endswith(":/nonexistent:/usr/sbin/nologin")
    assert any(l.startswith("ebpf-mcp:") for l in (root / "etc/group").read_text().splitlines())

    # Again, after the operator edited the configuration: kept; nothing doubled.
    config.write_text(default.replace("level: info", "level: debug"))
    second = install(root, binary)
    assert second.returncode == 0, second.stderr
    assert "keeping" in second.stdout and "level: debug" in config.read_text()
    assert (root / "etc/passwd").read_text().count("ebpf-mcp:") == 1

    # Out again: everything but the audit log; --purge takes that too.
    (root / "var/log/ebpf-mcp").mkdir(parents=True)
    (root / "var/log/ebpf-mcp/audit.log").write_text("{}\n")
    gone = install(root, binary, "--uninstall")
    assert gone.returncode == 0, gone.stderr
    for path in ["usr/local/bin/ebpf-mcp", "etc/ebpf-mcp", "etc/systemd/system/ebpf-mcp.service",
                 "usr/lib/sysusers.d/ebpf-mcp.conf", "usr/local/share/doc/ebpf-mcp", "etc/logrotate.d/ebpf-mcp"]:
        assert not (root / path).exists(), path
    assert "ebpf-mcp:" not in (root / "etc/passwd").read_text()
    assert (root / "var/log/ebpf-mcp/audit.log").exists()
    assert install(root, binary, "--uninstall", "--purge").returncode == 0
    assert not (root / "var/log/ebpf-mcp").exists()
    assert live_unit.exists() == live_before  # the live system was not touched


def test_a_binary_that_does_not_run_is_refused(binary):
    root = pathlib.Path(tempfile.mkdtemp(prefix="ebpf-mcp-destdir-"))
    bogus = root / "bogus"
    bogus.write_text("#!/bin/false\n")
    bogus.chmod(0o755)
    r = install(root, bogus)
    assert r.returncode != 0 and "does not run" in r.stderr
    assert not (root / "usr/local/bin/ebpf-mcp").exists()


def test_the_systemd_unit_verifies(binary):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze (Debian package systemd) is needed")
    # The unit names the installed path; verify a copy that names this build instead.
    d = pathlib.Path(tempfile.mkdtemp(prefix="ebpf-mcp-unit-"))
    unit = d / "ebpf-mcp.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/ebpf-mcp", str(binary)))
    r = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    text = UNIT.read_text()
    for directive in ["NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=", "PrivateTmp=yes",
                      "ReadWritePaths=", "ExecReload=/bin/kill -HUP $MAINPID", "User=ebpf-mcp", "Restart="]:
        assert directive in text, directive
    # The ambient capabilities are exactly what the server keeps after start-up.
    from test_sandbox import KEPT
    ambient = next(l for l in text.splitlines() if l.startswith("AmbientCapabilities="))
    assert set(ambient.split("=", 1)[1].split()) == set(KEPT)


def test_install_from_a_release_tarball(binary):
    out = pathlib.Path(tempfile.mkdtemp(prefix="ebpf-mcp-dist-"))
    made = subprocess.run([str(ROOT / "scripts" / "release-tarball.sh"), "--binary", str(binary), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    tarball = pathlib.Path(made.stdout.strip())
    unpacked = out / "unpacked"
    unpacked.mkdir()
    subprocess.run(["tar", "-xzf", str(tarball), "-C", str(unpacked)], check=True)
    (top,) = unpacked.iterdir()
    assert (top / "ebpf-mcp").exists() and (top / "deploy/kubernetes/daemonset.yaml").exists()
    root = out / "root"
    # No --binary: the tarball's own binary, no cargo.
    r = subprocess.run([str(top / "scripts/install.sh")], env={**os.environ, "DESTDIR": str(root), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "building" not in r.stdout
    assert (root / "usr/local/bin/ebpf-mcp").read_bytes() == pathlib.Path(binary).read_bytes()
    assert (root / "usr/local/share/doc/ebpf-mcp/operations.md").exists()
