"""A fork server for pytest: each test run forks a process that has torch & co. imported already.

Mutation testing runs a target's tests once per mutant, a few hundred times per file, and a
fresh `python -m pytest` spends about 4 s of each run importing torch, NumPy, SciPy,
scikit-learn and matplotlib before the first test: often more than the tests take. The server
imports those once; each run is a fork of it that imports ebmlab and the tests itself, so it
reads the mutated source from disk as a fresh interpreter would (the server never imports
ebmlab or tests/).

    python tools/pytest_forkserver.py serve SOCKET     # in the tree the tests run in
    python tools/pytest_forkserver.py run SOCKET -- PYTEST_ARGS...

`run` prints the run's output and exits with pytest's exit code. When `run` is killed (a
mutant's timeout), the server sees its connection close and kills the forked run. One run at
a time: cosmic-ray's local distributor tests one mutant after another.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import socket
import sys
import tempfile

#: third-party modules every test run needs; never ebmlab or tests (they must be read afresh)
PRELOAD = (
    "numpy",
    "scipy",
    "scipy.linalg",
    "scipy.stats",
    "torch",
    "torch.nn",
    "sklearn",
    "sklearn.metrics",
    "sklearn.neighbors",
    "matplotlib",
    "matplotlib.pyplot",
    "yaml",
    "tqdm",
    "pytest",
)
OUTPUT_TAIL = 20_000  # characters of a run's output sent back


def serve(path: str) -> None:
    os.environ.setdefault("MPLBACKEND", "Agg")
    for name in PRELOAD:
        importlib.import_module(name)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    print(f"pytest fork server ready on {path}", flush=True)
    while True:
        conn, _ = server.accept()
        with conn:
            request = json.loads(_read_line(conn))
            code, output = _fork_run(conn, request["args"], request["cwd"])
            if code is not None:
                conn.sendall(json.dumps({"code": code, "output": output}).encode() + b"\n")


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _fork_run(conn: socket.socket, args: list[str], cwd: str) -> tuple[int | None, str]:
    """Fork, run pytest in the child, wait for it or for the client to hang up (then kill it).
    Returns (exit code or None when the client left, the output's tail)."""
    with tempfile.TemporaryFile() as log:
        pid = os.fork()
        if pid == 0:
            _child(log.fileno(), args, cwd)
        code = _wait(conn, pid)
        log.seek(0)
        return code, log.read().decode(errors="replace")[-OUTPUT_TAIL:]


def _child(log: int, args: list[str], cwd: str) -> None:
    """The forked run: a fresh process in all but the imports of PRELOAD; never returns."""
    os.setpgid(0, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.chdir(cwd)
    sys.path.insert(0, cwd)
    code = 1
    try:
        import pytest

        code = int(pytest.main(args))
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _wait(conn: socket.socket, pid: int) -> int | None:
    """The run's exit code, or None (the run killed) when the client hangs up first."""
    pidfd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([conn, pidfd], [], [])
        if conn in ready and pidfd not in ready and not conn.recv(1):  # the client was killed
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(pidfd)
    return os.waitstatus_to_exitcode(status)


def run(path: str, args: list[str]) -> int:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(path)
    client.sendall(json.dumps({"args": args, "cwd": os.getcwd()}).encode() + b"\n")
    reply = json.loads(_read_line(client))
    sys.stdout.write(reply["output"])
    code = reply["code"]
    return code if code >= 0 else 128 - code  # a child killed by signal N: 128 + N


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "serve":
        serve(argv[1])
        return 0
    if len(argv) >= 3 and argv[0] == "run" and argv[2] == "--":
        return run(argv[1], argv[3:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
