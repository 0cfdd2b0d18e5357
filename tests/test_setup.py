"""A fresh machine: `make test`'s Chromium step (.ci/chromium) and the browser tests without it.

The setup script runs with a PATH of stand-ins (id, sudo, apt-get that only record what they
were asked), so nothing is installed; the browser tests run in a pytest of their own with
SHUFFLELM_CHROMIUM pointing at nothing, as on a machine without Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / ".ci" / "chromium"
BASH = shutil.which("bash") or "/bin/bash"


def stand_ins(tmp_path: Path, *, uid: int, sudo: bool | None) -> Path:
    """A bin folder with id (printing uid), apt-get (logging its arguments; `install chromium`
    puts a chromium there) and, unless sudo is None, sudo (passwordless if sudo is True)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "log"
    scripts = {
        "id": f"echo {uid}\n",
        "apt-get": (
            f'echo "apt-get $*" >> {log}\n'
            'case "$*" in *install*chromium*)'
            f' printf "#!{BASH}\\n" > {bin_dir}/chromium; chmod +x {bin_dir}/chromium;; esac\n'
        ),
    }
    if sudo is not None:
        scripts["sudo"] = (
            f'echo "sudo $*" >> {log}\n'
            + ("exit 1\n" if not sudo else "")
            + 'shift  # -n\n[ "$1" = true ] && exit 0\n'
            'while [ "${1#*=}" != "$1" ]; do export "$1"; shift; done\n"$@"\n'
        )
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f"#!{BASH}\n{body}")
        path.chmod(0o755)
    return bin_dir


def run_setup(tmp_path: Path, bin_dir: Path, **env) -> tuple[subprocess.CompletedProcess, str]:
    environment = {"PATH": str(bin_dir), "HOME": str(tmp_path), **env}
    result = subprocess.run(
        [BASH, str(SCRIPT)], env=environment, capture_output=True, text=True, timeout=60
    )
    log = tmp_path / "log"
    return result, log.read_text() if log.exists() else ""


def test_as_root_chromium_is_installed_with_apt_get(tmp_path):
    result, log = run_setup(tmp_path, stand_ins(tmp_path, uid=0, sudo=None))
    assert result.returncode == 0, result.stderr
    assert log.splitlines() == ["apt-get update -q", "apt-get install -y -q chromium"]
    assert (tmp_path / "bin" / "chromium").exists()


def test_with_password_less_sudo_chromium_is_installed_through_it(tmp_path):
    result, log = run_setup(tmp_path, stand_ins(tmp_path, uid=1000, sudo=True))
    assert result.returncode == 0, result.stderr
    assert "sudo -n DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium" in log
    assert "apt-get install -y -q chromium" in log.splitlines()


@pytest.mark.parametrize("sudo", [None, False], ids=["no-sudo", "sudo-asks-a-password"])
def test_where_it_cannot_install_it_says_how_and_only_ci_fails(tmp_path, sudo):
    bin_dir = stand_ins(tmp_path, uid=1000, sudo=sudo)
    result, log = run_setup(tmp_path, bin_dir)
    assert result.returncode == 0
    assert "apt-get" not in log.replace("sudo -n true", "")
    note = result.stderr.strip()
    assert len(note.splitlines()) == 1 and "sudo apt-get install chromium" in note
    assert "skipped" in note
    result, _ = run_setup(tmp_path, bin_dir, CI="true")
    assert result.returncode == 1 and "error: Chromium is missing" in result.stderr


def test_an_explicit_chromium_that_is_missing_is_reported_not_installed(tmp_path):
    bin_dir = stand_ins(tmp_path, uid=0, sudo=None)
    result, log = run_setup(tmp_path, bin_dir, SHUFFLELM_CHROMIUM=str(tmp_path / "nothing"))
    assert result.returncode == 0 and log == ""
    assert "SHUFFLELM_CHROMIUM" in result.stderr
    (tmp_path / "chrome").write_text("#!/bin/sh\n")
    (tmp_path / "chrome").chmod(0o755)
    result, log = run_setup(tmp_path, bin_dir, SHUFFLELM_CHROMIUM=str(tmp_path / "chrome"))
    assert result.returncode == 0 and result.stderr == "" and log == ""


def run_browser_tests(tmp_path: Path, **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "CI"}
    environment.update(SHUFFLELM_CHROMIUM=str(tmp_path / "no-chromium"), **env)
    command = [sys.executable, "-m", "pytest", "tests/test_browser.py", "-q", "-rs"]
    return subprocess.run(
        [*command, "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_without_chromium_the_browser_tests_skip_in_one_line_and_fail_under_ci(tmp_path):
    result = run_browser_tests(tmp_path)
    out = result.stdout
    # the module skips as a whole: alone, pytest says no test ran (5); in `make test` the rest run
    assert result.returncode in (0, pytest.ExitCode.NO_TESTS_COLLECTED), out[-3000:]
    assert " skipped" in out and "passed" not in out and "error" not in out.lower()
    reasons = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert len(reasons) == 1, out[-3000:]  # one line for all of them
    assert "Chromium" in reasons[0] and "sudo apt-get install chromium" in reasons[0]
    assert "SHUFFLELM_CHROMIUM" in reasons[0]
    result = run_browser_tests(tmp_path, CI="true")
    assert result.returncode != 0
    assert "CI=true and Chromium is missing" in result.stdout
