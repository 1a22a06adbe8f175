"""tools/pytest_forkserver.py, which runs each mutant's tests as a fork of a process that has
torch imported: a run sees the source as it is on disk at that moment (a mutant written just
before), reports pytest's exit code, and a run whose client is killed (a mutant's timeout) is
killed with it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

SERVER = Path(__file__).resolve().parents[1] / "tools" / "pytest_forkserver.py"

MODULE = "def value():\n    return {}\n"
TEST = """
import time
from subject import value

def test_value():
    assert value() == 1

def test_slow():
    time.sleep(float(open("sleep").read()))
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("tree")
    (tmp_path / "subject.py").write_text(MODULE.format(1))
    (tmp_path / "test_subject.py").write_text(TEST)
    (tmp_path / "sleep").write_text("0")
    sock = tmp_path / "s.sock"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "serve", str(sock)], cwd=tmp_path, env=env
    )
    deadline = time.monotonic() + 60
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    yield tmp_path, sock
    proc.kill()
    proc.wait()


def forked_pytest(tree: Path, sock: Path, *args: str, timeout: float | None = None):
    return subprocess.run(
        [
            sys.executable,
            str(SERVER),
            "run",
            str(sock),
            "--",
            "-q",
            "-p",
            "no:cacheprovider",
            *args,
        ],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_each_run_reads_the_source_afresh_and_returns_pytests_exit_code(server):
    tree, sock = server
    passed = forked_pytest(tree, sock)
    assert passed.returncode == 0 and "2 passed" in passed.stdout
    (tree / "subject.py").write_text(MODULE.format(2))  # a mutant, written between two runs
    failed = forked_pytest(tree, sock)
    assert failed.returncode == 1 and "1 failed" in failed.stdout
    (tree / "subject.py").write_text(MODULE.format(1))
    assert forked_pytest(tree, sock, "-k", "nothing_matches").returncode == 5


def test_a_killed_client_kills_its_run_and_the_server_goes_on(server):
    tree, sock = server
    (tree / "sleep").write_text("30")
    with pytest.raises(subprocess.TimeoutExpired):
        forked_pytest(tree, sock, timeout=3)
    (tree / "sleep").write_text("0")
    start = time.monotonic()
    assert forked_pytest(tree, sock, timeout=20).returncode == 0  # not queued behind the sleeper
    assert time.monotonic() - start < 20
