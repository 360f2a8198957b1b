"""The Dockerfile: no engine runs here, so it is linted (dockerfilelint), and its build step
is checked to be the one scripts/install.sh runs; the image carries the binary and the
default configuration only."""

from __future__ import annotations

import re
import subprocess

from conftest import ROOT

LINT = ROOT / "tests" / "lint" / "node_modules" / ".bin" / "dockerfilelint"


def test_the_dockerfile_lints_clean():
    assert LINT.exists(), "scripts/bootstrap installs tests/lint (npm ci)"
    r = subprocess.run([str(LINT), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert r.returncode == 0 and "Issues: None found" in r.stdout, r.stdout + r.stderr


def test_the_image_is_built_as_the_install_script_builds_and_carries_two_files():
    text = (ROOT / "Dockerfile").read_text()
    build = re.search(r"RUN (cargo build [^\n]+)", text).group(1)
    assert build in (ROOT / "scripts" / "install.sh").read_text()
    copies = re.findall(r"^COPY (?:--from=build )?(\S+) (\S+)$", text, re.M)
    final = [dst for src, dst in copies if dst != "."]
    assert final == ["/usr/local/bin/ebpf-mcp", "/etc/ebpf-mcp/config.yaml"]
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "target" in ignored and ".venv" in ignored
