"""The Dockerfile, statically: it lints clean (dockerfilelint), its build step is the one
scripts/install.sh runs, its base images are build arguments with tagged public defaults,
and every image it makes carries the binary and the default configuration only.
tests/mcp/test_container.py builds and runs it for real."""

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
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    assert args == {"BASE_IMAGE": "debian:bookworm-slim", "RUST_IMAGE": "rust:1.95-bookworm"}
    stages = re.findall(r"^FROM (\S+)(?: AS (\S+))?$", text, re.M)
    assert stages == [("${BASE_IMAGE}", "runtime"), ("runtime", "prebuilt"), ("${RUST_IMAGE}", "build"), ("runtime", "")]
    copies = re.findall(r"^COPY (?:--from=build )?(\S+) (\S+)$", text, re.M)
    # runtime: the configuration; prebuilt and the default: the binary, from dist/ or the build.
    assert [dst for _, dst in copies if dst != "."] == [
        "/etc/ebpf-mcp/config.yaml", "/usr/local/bin/ebpf-mcp", "/usr/local/bin/ebpf-mcp"]
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "target" in ignored and ".venv" in ignored
