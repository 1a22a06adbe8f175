"""Mutation testing of ebmlab with cosmic-ray: each target file against its own fast tests.

    python tools/mutants.py run [FILE ...]        # mutate and test; resumes where it stopped
    python tools/mutants.py report [FILE ...]     # killed / timeout / survived / score per file
    python tools/mutants.py report --markdown     # the finished ones as docs/testing.md's rows
    python tools/mutants.py survivors [FILE ...]  # each surviving mutant: line, operator, diff
    python tools/mutants.py targets               # the targets and their test files

`make mutants [FILE=ebmlab/methods/dsm.py]`, `make mutants-report` and `make mutants-survivors`
call these. The targets and their tests are in tools/mutants.toml; docs/testing.md has the
measured scores.

Per target, everything lives in .mutants/<target>/ (git-ignored):

- tree/: a copy of ebmlab/, tests/ and pyproject.toml taken from the working tree. cosmic-ray
  writes each mutant into the file it mutates, so it works on this copy, never on the checkout
  (someone else's test run or editor never sees a mutant); the tests import the copy through
  PYTHONPATH. The copy is taken afresh on every run, which also undoes a mutant left behind by
  a run that was killed mid-test.
- config.toml, session.sqlite: cosmic-ray's config and its session (one row per mutant).
- state.json: the fingerprint of the session (the target's source, its test files, tests/
  conftest.py and helpers.py, the test command and the operator filter), the unmutated run's
  time, the per-mutant timeout, the commit and when it started.

`run` resumes a session only while its fingerprint holds: the mutants left are tested, those
done are kept. Once the target or its tests change, the session is started again. Every run
(resumed or not) first runs the tests on the unmutated copy and skips the target when they fail,
as a red baseline would count every mutant as killed.

Score = (killed + timeout) / (killed + timeout + survived). Left out, and shown apart: mutants
skipped by the operator filter (see tools/mutants.toml), mutants inside a function's
annotations in a module with `from __future__ import annotations` (never evaluated, so
equivalent), and those cosmic-ray could not run (incompetent).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10; cosmic-ray depends on `toml`
    import toml as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
TARGETS_FILE = ROOT / "tools" / "mutants.toml"
FORK_SERVER = ROOT / "tools" / "pytest_forkserver.py"
WORK = ROOT / ".mutants"
# what the copy holds: the package, the tests, and the pytest configuration
TREE_PATHS = ["ebmlab", "tests", "pyproject.toml"]
# files every test module may depend on, besides its own
SHARED_TESTS = ["tests/__init__.py", "tests/conftest.py", "tests/helpers.py"]
POLL_S = 60.0


# ---------------------------------------------------------------------------------------------
# targets


def load_targets() -> tuple[dict, dict[str, dict]]:
    spec = tomllib.loads(TARGETS_FILE.read_text())
    return spec["defaults"], spec["targets"]


def select(targets: dict[str, dict], files: list[str]) -> list[str]:
    if not files:
        return list(targets)
    chosen = []
    for file in files:
        name = Path(file).resolve().relative_to(ROOT).as_posix() if Path(file).exists() else file
        if name not in targets:
            listed = ", ".join(targets)
            raise SystemExit(f"{file}: not a target; tools/mutants.toml lists: {listed}")
        chosen.append(name)
    return chosen


def slug(target: str) -> str:
    return target.removesuffix(".py").replace("/", "__")


def test_command(defaults: dict, spec: dict) -> list[str]:
    args = [sys.executable, "-m", "pytest", *defaults["pytest_args"]]
    if spec.get("k"):
        args += ["-k", spec["k"]]
    return args + list(spec["tests"])


# ---------------------------------------------------------------------------------------------
# the working copy and the session


def snapshot(tree: Path) -> None:
    """Copy the working tree's ebmlab/, tests/ and pyproject.toml (tracked and untracked files
    that git does not ignore) into `tree`, replacing what was there."""
    if tree.exists():
        shutil.rmtree(tree)
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *TREE_PATHS],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for rel in filter(None, (p.decode() for p in listed)):
        src = ROOT / rel
        if src.is_file():  # a tracked file deleted in the working tree is left out
            dst = tree / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


def fingerprint(base: Path, target: str, spec: dict, command: list[str], defaults: dict) -> str:
    digest = hashlib.sha256()
    files = dict.fromkeys([target, *(t.split("::")[0] for t in spec["tests"]), *SHARED_TESTS])
    for rel in files:  # a test may be a node id, tests/test_x.py::test_y: its file counts
        path = base / rel
        digest.update(rel.encode() + b"\0")
        digest.update(path.read_bytes() if path.exists() else b"<missing>")
    digest.update(json.dumps([command[1:], defaults["exclude_operators"]]).encode())
    return digest.hexdigest()


def test_env(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")  # one thread per test run unless the caller says otherwise
    return env


def write_config(path: Path, target: str, command: list[str], timeout: float, excluded) -> None:
    # cosmic-ray splits test-command with shlex, so quoting survives ("not slow and not network")
    lines = [
        "[cosmic-ray]",
        f"module-path = {json.dumps(target)}",
        f"timeout = {timeout:.1f}",
        "excluded-modules = []",
        f"test-command = {json.dumps(shlex.join(command))}",
        "",
        "[cosmic-ray.distributor]",
        'name = "local"',
        "",
        "[cosmic-ray.filters.operators-filter]",
        f"exclude-operators = {json.dumps(list(excluded))}",
        "",
    ]
    path.write_text("\n".join(lines))


def cosmic(args: list[str], tree: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=tree, env=test_env(tree), check=True, **kwargs
    )


def annotation_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """The (start, end) positions of every function's annotations (parameters and return) when
    the module has `from __future__ import annotations`: nothing in ebmlab evaluates those
    (config.py's get_type_hints reads the Config dataclasses' field annotations, which are kept
    out). No span otherwise."""
    tree = ast.parse(source)
    postponed = any(
        isinstance(node, ast.ImportFrom)
        and node.module == "__future__"
        and any(alias.name == "annotations" for alias in node.names)
        for node in tree.body
    )
    if not postponed:
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arg):
            found.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found.append(node.returns)
    return [
        ((n.lineno, n.col_offset), (n.end_lineno, n.end_col_offset)) for n in found if n is not None
    ]


def skip_annotation_mutants(session: Path, source: str) -> int:
    """Mark as skipped the mutants inside an annotation that is never evaluated (`generator:
    torch.Generator | None` -> `torch.Generator + None`): equivalent by construction. Returns how
    many; run after init and again after exec (exec overwrites the results it ran)."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    spans = annotation_spans(source)
    if not spans:
        return 0
    why = "in an annotation, never evaluated"
    skipped = WorkResult(output=why, worker_outcome=WorkerOutcome.SKIPPED)
    with use_db(str(session), WorkDB.Mode.open) as db:
        ids = [
            item.job_id
            for item in db.work_items
            if any(lo <= tuple(item.mutations[0].start_pos) < hi for lo, hi in spans)
        ]
        if ids:
            db.set_multiple_results(ids, skipped)
    return len(ids)


def git_commit() -> str:
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", *TREE_PATHS],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return head + ("+uncommitted" if dirty else "")


def source_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def forget_survivors(session: Path) -> int:
    """Drop the results of the surviving mutants, so that `cosmic-ray exec` tests them again;
    the killed keep theirs. Valid while the tests only gained: a test that was weakened or
    removed could let a mutant that it killed survive, which only a full run shows."""
    ids = [item.job_id for item, kind, _ in session_items(session) if kind == "survived"]
    with sqlite3.connect(session) as db:
        db.executemany("DELETE FROM work_results WHERE job_id = ?", [(i,) for i in ids])
    return len(ids)


@contextlib.contextmanager
def fork_server(sock: Path, tree: Path):
    """A pytest fork server (tools/pytest_forkserver.py) for the target's tree, and the map from
    a `python -m pytest ARGS` command to the same run forked from it: torch and the other
    heavy imports are paid once per target instead of once per mutant."""
    sock.unlink(missing_ok=True)
    sock.parent.mkdir(parents=True, exist_ok=True)
    tree.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen(
        [sys.executable, str(FORK_SERVER), "serve", str(sock)],
        cwd=tree,
        env=test_env(tree),
        stdout=subprocess.DEVNULL,
    )
    try:
        while not sock.exists():
            if server.poll() is not None:
                raise SystemExit(f"the pytest fork server exited with {server.returncode}")
            time.sleep(0.1)

        def forked(command: list[str]) -> list[str]:
            pytest_args = command[3:]  # after [python, -m, pytest]
            return [sys.executable, str(FORK_SERVER), "run", str(sock), "--", *pytest_args]

        yield forked
    finally:
        server.kill()
        server.wait()
        sock.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# results


def outcome(result) -> str:
    worker = str(result.worker_outcome.value)
    if worker == "skipped":
        return "skipped"
    if worker == "no-test":
        return "no-test"
    test = result.test_outcome.value if result.test_outcome is not None else None
    if test == "killed":
        return "timeout" if result.output == "timeout" else "killed"
    if test == "survived":
        return "survived"
    return "incompetent"


def session_items(session: Path):
    """(work item, outcome or "pending", result or None) for every mutant of a session."""
    from cosmic_ray.work_db import WorkDB, use_db

    with use_db(str(session), WorkDB.Mode.open) as db:
        done = {item.job_id: (item, result) for item, result in db.completed_work_items}
        items = list(db.work_items)
    rows = []
    for item in items:
        if item.job_id in done:
            result = done[item.job_id][1]
            rows.append((item, outcome(result), result))
        else:
            rows.append((item, "pending", None))
    return rows


COLUMNS = ["killed", "timeout", "survived", "incompetent", "skipped", "pending"]


def counts(session: Path) -> dict[str, int]:
    tally = dict.fromkeys([*COLUMNS, "no-test"], 0)
    for _, kind, _ in session_items(session):
        tally[kind] += 1
    tally["mutants"] = sum(tally[c] for c in COLUMNS)
    return tally


def score(tally: dict[str, int]) -> float | None:
    dead = tally["killed"] + tally["timeout"]
    tested = dead + tally["survived"]
    return dead / tested if tested else None


# ---------------------------------------------------------------------------------------------
# commands


def run_target(target: str, spec: dict, defaults: dict, restart: bool, recheck: bool) -> str:
    where = WORK / slug(target)
    snapshot(where / "tree")  # first: the fork server starts in the fresh copy
    with fork_server(where / "pytest.sock", where / "tree") as forked:
        return _run_target(target, spec, defaults, restart, recheck, forked)


def _run_target(target, spec, defaults, restart, recheck, forked) -> str:
    where = WORK / slug(target)
    tree, config, session, state_file = (
        where / "tree",
        where / "config.toml",
        where / "session.sqlite",
        where / "state.json",
    )
    where.mkdir(parents=True, exist_ok=True)
    command = test_command(defaults, spec)
    mark = fingerprint(tree, target, spec, command, defaults)  # of the copy the mutants run on
    source = source_hash(tree / target)
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    resume = not restart and session.exists() and state.get("fingerprint") == mark
    if recheck and not resume:
        if not (session.exists() and state.get("source") == source):
            print(f"{target}: --recheck needs a session of this very source; run it in full")
            return "no session to recheck"
        print(f"{target}: the tests changed; re-testing the survivors, keeping the killed")
    elif state and not resume and not restart:
        print(f"{target}: the file or its tests changed since the last session; starting again")
    print(f"{target}: unmutated tests: {shlex.join(command[1:])}", flush=True)
    start = time.monotonic()
    env = test_env(tree)
    base = subprocess.run(forked(command), cwd=tree, env=env, capture_output=True, text=True)
    took = time.monotonic() - start
    if base.returncode != 0:
        tail = "\n".join((base.stdout + base.stderr).splitlines()[-20:])
        print(f"{target}: the unmutated tests fail (exit {base.returncode}); skipped\n{tail}")
        return "baseline failed"
    print(f"{target}: unmutated tests pass in {took:.1f} s", flush=True)

    timeout = spec.get("timeout") or defaults["timeout_factor"] * took + defaults["timeout_pad"]
    if recheck and not resume:
        write_config(config, target, forked(command), timeout, defaults["exclude_operators"])
        again = forget_survivors(session)
        state |= {
            "fingerprint": mark,
            "rechecked": state.get("rechecked", []) + [{"commit": git_commit(), "mutants": again}],
        }
        state.pop("finished", None)
        state_file.write_text(json.dumps(state, indent=2) + "\n")
    elif not resume:
        write_config(config, target, forked(command), timeout, defaults["exclude_operators"])
        session.unlink(missing_ok=True)
        cosmic(["cosmic_ray.cli", "init", str(config), str(session)], tree)
        cosmic(["cosmic_ray.tools.filters.operators_filter", str(session), str(config)], tree)
        skip_annotation_mutants(session, (tree / target).read_text())
        state = {
            "fingerprint": mark,
            "source": source,
            "target": target,
            "tests": spec["tests"],
            "command": shlex.join(command[1:]),
            "baseline_s": round(took, 1),
            "timeout_s": round(timeout, 1),
            "commit": git_commit(),
            "started": dt.datetime.now().isoformat(timespec="seconds"),
        }
        state_file.write_text(json.dumps(state, indent=2) + "\n")

    skip_annotation_mutants(session, (tree / target).read_text())
    tally = counts(session)
    if tally["pending"] == 0:
        print(f"{target}: every mutant is done")
        return "done"
    print(
        f"{target}: {tally['pending']} of {tally['mutants']} mutants to test "
        f"(timeout {state['timeout_s']} s each)",
        flush=True,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "cosmic_ray.cli", "exec", str(config), str(session)],
        cwd=tree,
        env=test_env(tree),
    )
    try:
        while proc.poll() is None:
            try:
                proc.wait(timeout=POLL_S)
            except subprocess.TimeoutExpired:
                try:
                    now = counts(session)
                except Exception:  # the session is being written; report next time
                    continue
                done = now["mutants"] - now["pending"]
                print(
                    f"{target}: {done}/{now['mutants']} done, {now['survived']} survived",
                    flush=True,
                )
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        raise
    skip_annotation_mutants(session, (tree / target).read_text())  # exec ran them all the same
    state["finished"] = dt.datetime.now().isoformat(timespec="seconds")
    state_file.write_text(json.dumps(state, indent=2) + "\n")
    return "done" if proc.returncode == 0 else f"cosmic-ray exit {proc.returncode}"


def print_table(chosen: list[str]) -> None:
    header = ["file", "mutants", *COLUMNS, "score"]
    rows = []
    for target in chosen:
        session = WORK / slug(target) / "session.sqlite"
        if not session.exists():
            rows.append([target, "-", *["-"] * len(COLUMNS), "not run"])
            continue
        tally = counts(session)
        value = score(tally)
        shown = "-" if value is None else f"{100 * value:.1f}%"
        rows.append([target, tally["mutants"], *(tally[c] for c in COLUMNS), shown])
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [str(row[0]).ljust(widths[0])]
        cells += [str(c).rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        print("  ".join(cells))


def print_markdown(chosen: list[str]) -> None:
    """The rows of docs/testing.md's score table, for the targets whose session is finished."""
    for target in chosen:
        where = WORK / slug(target)
        state_file, session = where / "state.json", where / "session.sqlite"
        if not (state_file.exists() and session.exists()):
            continue
        state, tally = json.loads(state_file.read_text()), counts(session)
        if tally["pending"] or "finished" not in state:
            continue
        tested = tally["killed"] + tally["timeout"] + tally["survived"]
        tests = ", ".join(f"`{t.removeprefix('tests/')}`" for t in state["tests"])
        cells = [
            f"`{target}`",
            tests,
            tested,
            tally["killed"],
            tally["timeout"],
            tally["survived"],
            f"{100 * score(tally):.1f}%",
            f"`make mutants FILE={target}` ({state['baseline_s']} s unmutated)",
            f"{state['finished'][:10]}, {state['commit']}",
        ]
        print("| " + " | ".join(map(str, cells)) + " |")


def print_survivors(chosen: list[str], show_all: bool) -> None:
    wanted = {"survived"} | ({"timeout", "incompetent"} if show_all else set())
    for target in chosen:
        session = WORK / slug(target) / "session.sqlite"
        if not session.exists():
            continue
        found = [
            (item.mutations[0], kind, result)
            for item, kind, result in session_items(session)
            if kind in wanted
        ]
        found.sort(key=lambda f: (f[0].start_pos, f[0].operator_name))
        print(f"== {target}: {len(found)} {'/'.join(sorted(wanted))}")
        for mutation, kind, result in found:
            line, col = mutation.start_pos
            where = mutation.definition_name or "<module>"
            print(f"{target}:{line}:{col} [{where}] {mutation.operator_name} ({kind})")
            diff = result.diff or ""
            for text in diff.splitlines():
                if re.match(r"[-+](?![-+]{2} )", text):
                    print(f"    {text}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="mutate and test (resumable)")
    run.add_argument("files", nargs="*")
    run.add_argument("--restart", action="store_true", help="drop the sessions and start again")
    run.add_argument(
        "--recheck",
        action="store_true",
        help="after tests were added: re-test only the survivors of a session of the same source",
    )
    report = sub.add_parser("report", help="the score table")
    report.add_argument("files", nargs="*")
    report.add_argument("--markdown", action="store_true", help="docs/testing.md's rows")
    surv = sub.add_parser("survivors", help="each surviving mutant with its diff")
    surv.add_argument("files", nargs="*")
    surv.add_argument("--all", action="store_true", help="timeouts and incompetent mutants too")
    sub.add_parser("targets", help="the targets and their tests")
    args = parser.parse_args(argv)

    defaults, targets = load_targets()
    if args.command == "targets":
        for target, spec in targets.items():
            only = f" -k {spec['k']!r}" if spec.get("k") else ""
            print(f"{target}: {' '.join(spec['tests'])}{only}")
        return 0
    chosen = select(targets, args.files)
    if args.command == "run":
        outcomes = {
            t: run_target(t, targets[t], defaults, args.restart, args.recheck) for t in chosen
        }
        print()
        print_table(chosen)
        failed = {t: o for t, o in outcomes.items() if o != "done"}
        for target, why in failed.items():
            print(f"{target}: {why}")
        return 1 if failed else 0
    if args.command == "report":
        (print_markdown if args.markdown else print_table)(chosen)
    else:
        print_survivors(chosen, args.all)
    return 0


if __name__ == "__main__":
    sys.exit(main())
