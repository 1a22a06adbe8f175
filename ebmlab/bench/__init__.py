"""`ebmlab bench`: every method on the same data, budgets and metrics, side by side.

Each (method, dataset, seed) trains with its method's preset for the data, under one budget
(seconds of training or steps, see `suites.py`), in its own process (`worker.py`): a crash, a
hang or a divergence is recorded for that run and the others go on. Into the output folder:

- results.csv: one row per run: every metric, steps, training seconds, it/s, peak memory,
  diverged yes/no, and the error of a run that did not finish;
- leaderboard.md: mean ± std over seeds per method and dataset, the best of each column in bold;
- density_<data>.png (2D: each method's density beside the data's), samples_<data>.png (images:
  each method's samples), quality_vs_time.png (each run's quality as it trained);
- runs/<method>_<data>_s<seed>/: each run directory, with its report, spec.json, bench.json
  and worker.log.

`resume=True` skips the runs already in results.csv, so an interrupted bench continues;
`continue_published=True` also continues, on a machine without the earlier `out`, from the rows
the page (`publish`) already holds, so a suite is finished over several sittings. Figures
that need runs of an earlier sitting (quality against time, a figure of all methods) are kept
from the page, said as such, not redrawn from fewer runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ebmlab.bench.spec import Budget, RunSpec
from ebmlab.bench.suites import SUITES, Suite
from ebmlab.bench.tables import leaderboard, read_results, result_row, run_key, write_results
from ebmlab.errors import EbmlabError

__all__ = ["SUITES", "Budget", "RunSpec", "Suite", "bench", "plan_runs"]

#: seconds a run may take beyond its training budget (start-up, scoring) before it is stopped
TIMEOUT_MARGIN = 1200
#: the figure of every run's quality as it trained
QUALITY_FIGURE = "quality_vs_time.png"


def markers(name: str) -> tuple[str, str]:
    """The markers between which `publish` replaces a page's section `name`."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


#: the standard suite's section; another suite's is named after it (see `section_name`)
BEGIN, END = markers("bench")


def bench(
    suite: str = "quick",
    *,
    methods: list[str] | None = None,
    data: list[str] | None = None,
    seeds: int | None = None,
    budget: str | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    continue_published: bool = False,
    jobs: int | None = None,
    device: str = "auto",
    publish: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Run a bench suite and write its results folder; returns the folder.

    Args:
        suite: A name in `ebmlab.bench.SUITES` ("quick", "standard"): its datasets, budgets,
            seeds and scored points.
        methods: Method names (default: every registered method).
        data: Dataset names (default: the suite's); one outside the suite needs `budget`.
        seeds: Seeds per (method, dataset) (default: the suite's), seeds 0..seeds-1.
        budget: Per-run budget for every dataset, e.g. "120s" (training seconds) or "2000"
            (steps); default: the suite's per dataset.
        out: The results folder (default runs/bench_<suite>).
        resume: Continue the bench in `out`, skipping runs already in its results.csv.
        continue_published: Resume, and where `out` holds no results.csv (another machine),
            continue from the rows that `publish`'s section already holds, keeping their
            published sample grids: a suite longer than one sitting is finished over several.
        jobs: Runs at once, each with cores/jobs threads. Default: one per core on a CPU
            (one thread each, so no run competes for another's cores), one on a GPU.
        device: Device of every run (auto, cpu, cuda, cuda:N).
        publish: Also write the leaderboard into this markdown page (between the markers
            `<!-- bench:begin -->` and `<!-- bench:end -->` when it has them) and copy the
            figures to images/bench/ beside it.
        progress: Show a progress bar over the runs.
    """
    if suite not in SUITES:
        raise EbmlabError(f"unknown suite {suite!r}; choose from {', '.join(SUITES)}")
    requested_jobs, jobs = jobs, default_jobs(device) if jobs is None else jobs
    if jobs < 1:
        raise EbmlabError(f"jobs must be at least 1, got {jobs}")
    out = Path(out or f"runs/bench_{suite}")
    datasets = load_datasets(data or list(SUITES[suite].budgets))
    kinds = {name: dataset.kind for name, dataset in datasets.items()}
    specs = plan_runs(SUITES[suite], out, methods, kinds, seeds, budget, device)
    if continue_published and publish is None:
        raise EbmlabError("continue_published (--continue-published) needs a page to publish to")
    resume = resume or continue_published
    rows = read_results(out / "results.csv")
    if rows and not resume:
        raise EbmlabError(
            f"{out} already holds a bench; pass resume=True (--resume) or another out"
        )
    if continue_published and not rows:
        rows = published_rows(Path(publish), section_name(suite))
    todo = pending(specs, rows)
    out.mkdir(parents=True, exist_ok=True)
    write_results(out / "results.csv", rows)
    execute(todo, jobs, lambda result: record(out, rows, result), progress)
    command = command_line(suite, methods, data, seeds, budget, requested_jobs, device)
    write_outputs(out, rows, specs, datasets, command, publish, section_name(suite))
    return out


def section_name(suite: str) -> str:
    """The published page's section and figure folder of a suite: `bench` for the standard
    suite, `bench-<suite>` for the others, so that several suites share one page."""
    return "bench" if suite == "standard" else f"bench-{suite}"


def published_rows(page: Path, section: str) -> list[dict[str, Any]]:
    """The rows that an earlier sitting published to `page` (its images/<section>/results.csv):
    on a machine without that sitting's `out`, `--continue-published` continues from them, so
    that a suite longer than one sitting (the long one on a CPU) is finished over several."""
    return read_results(page.parent / "images" / section / "results.csv")


def default_jobs(device: str) -> int:
    from ebmlab.api import resolve_device

    return usable_cores() if resolve_device(device).type == "cpu" else 1


def usable_cores() -> int:
    """The cores this process may run on (`taskset` narrows them), else the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def plan_runs(
    suite: Suite,
    out: Path,
    methods: list[str] | None,
    kinds: dict[str, str],
    seeds: int | None,
    budget: str | None,
    device: str,
) -> list[RunSpec]:
    """Every (dataset, method, seed) of the bench, in that order, validated; `kinds` maps
    each dataset to its kind."""
    from ebmlab.methods import METHODS, get_method

    for name in methods or []:
        get_method(name)
    if seeds is not None and seeds < 1:
        raise EbmlabError(f"seeds must be at least 1, got {seeds}")
    budgets = {}
    for name in kinds:
        text = budget or suite.budgets.get(name) or _any_suite_budget(name)
        budgets[name] = str(Budget.parse(text))
    return [
        RunSpec(
            method,
            name,
            seed,
            budgets[name],
            str(out / "runs" / f"{method}_{_slug(name)}_s{seed}"),
            suite.image_curve_points if kinds[name] == "image" else suite.curve_points,
            device,
            suite.image_samples if kinds[name] == "image" else None,
            suite.fid and kinds[name] == "image",
        )
        for name in budgets
        for method in methods or list(METHODS)
        for seed in range(seeds or suite.seeds)
    ]


def _any_suite_budget(name: str) -> str:
    for suite in SUITES.values():
        if name in suite.budgets:
            return suite.budgets[name]
    raise EbmlabError(f"no suite has a budget for {name!r}: pass one, e.g. --budget 60s")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(name).stem or name)


def load_datasets(names: list[str] | set[str]) -> dict[str, Any]:
    """Each dataset of the bench, loaded once up front so a bad name fails before any run."""
    from ebmlab.data import load_dataset

    return {name: load_dataset(name) for name in names}


def pending(specs: list[RunSpec], rows: list[dict[str, Any]]) -> list[RunSpec]:
    """The specs without a row yet; a row at another budget cannot be continued."""
    done = {run_key(row): row for row in rows}
    todo = []
    for spec in specs:
        row = done.get((spec.method, spec.data, spec.seed))
        if row is None:
            todo.append(spec)
        elif str(row["budget"]) != spec.budget:
            raise EbmlabError(
                f"results.csv has {spec.method} on {spec.data} at budget {row['budget']}, "
                f"this bench asks for {spec.budget}; use another out"
            )
    return todo


def execute(
    specs: list[RunSpec], jobs: int, on_result: Callable[[dict], None], progress: bool
) -> None:
    """Run each spec in a worker process, `jobs` at a time, handing results over as they end."""
    threads = max(1, usable_cores() // jobs)
    bar = tqdm(total=len(specs), desc="bench", disable=not progress, dynamic_ncols=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run_in_process, spec, threads) for spec in specs]
        for future in as_completed(futures):
            result = future.result()
            on_result(result)
            bar.set_postfix_str(
                f"{result['method']} on {result['data']} s{result['seed']}: {result['status']}"
            )
            bar.update(1)
    bar.close()


def run_in_process(spec: RunSpec, threads: int) -> dict[str, Any]:
    """`python -m ebmlab.bench.worker` for one spec; its result, or a failure when it crashed,
    was killed or ran past its time. The run directory starts afresh, unless an interrupted
    bench left this very spec there with a checkpoint: the worker then continues from it."""
    run_dir = Path(spec.run_dir)
    spec_file, result_file = run_dir / "spec.json", run_dir / "bench.json"
    spec_text = json.dumps(dataclasses.asdict(spec), indent=2)
    if not is_interrupted_run(run_dir, spec_text):
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        spec_file.write_text(spec_text)
    result_file.unlink(missing_ok=True)
    budget = Budget.parse(spec.budget)
    timeout = budget.amount + TIMEOUT_MARGIN if budget.unit == "seconds" else None
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "ebmlab.bench.worker", str(spec_file), str(result_file)]
    with (run_dir / "worker.log").open("w") as log:
        try:
            code = subprocess.run(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            return failure(spec, f"stopped after {timeout:.0f} s", result_file)
    if code != 0 or not result_file.is_file():
        return failure(
            spec, f"worker exited with code {code}; see {run_dir / 'worker.log'}", result_file
        )
    return json.loads(result_file.read_text())


def is_interrupted_run(run_dir: Path, spec_text: str) -> bool:
    """Whether `run_dir` holds a run of this spec with a checkpoint. (One that had finished
    resumes at its last step, trains no further and is scored again.)"""
    from ebmlab import checkpoints

    spec_file = run_dir / "spec.json"
    return (
        spec_file.is_file()
        and spec_file.read_text() == spec_text
        and bool(checkpoints.paths(run_dir))
    )


def failure(spec: RunSpec, error: str, result_file: Path) -> dict[str, Any]:
    result = {
        **dataclasses.asdict(spec),
        "status": "failed",
        "error": error,
        "metrics": {},
        "curve": [],
    }
    result_file.write_text(json.dumps(result, indent=2))
    return result


def record(out: Path, rows: list[dict[str, Any]], result: dict[str, Any]) -> None:
    """Add a finished run to results.csv at once, so an interrupted bench keeps it."""
    rows.append(result_row(result))
    write_results(out / "results.csv", rows)


def write_outputs(
    out: Path,
    rows: list[dict[str, Any]],
    specs: list[RunSpec],
    datasets: dict[str, Any],
    command: str,
    publish: str | Path | None,
    section: str = "bench",
) -> None:
    """leaderboard.md and the figures, over every row in results.csv; with `publish`, also
    that page's `section` and the figures in images/<section>/ beside it."""
    from ebmlab.bench.figures import save_model_figures, save_quality_vs_time

    rows = order_rows(rows, specs)
    run_dirs = {
        run_key(row): out / "runs" / f"{row['method']}_{_slug(row['data'])}_s{int(row['seed'])}"
        for row in rows
    }
    datasets |= load_datasets(set(dict.fromkeys(row["data"] for row in rows)) - set(datasets))
    kinds = {name: dataset.kind for name, dataset in datasets.items()}
    carried = [row for row in rows if not (run_dirs[run_key(row)] / "bench.json").is_file()]
    figures = save_model_figures(rows, run_dirs, datasets, out)
    save_quality_vs_time(rows, run_dirs, kinds, out / QUALITY_FIGURE)
    figures.insert(0, out / QUALITY_FIGURE)
    (out / "leaderboard.md").write_text(page(rows, kinds, command, figures, "", carried))
    if publish is not None:
        folder = Path(publish).parent / "images" / section
        own = [
            f
            for f in figures
            if not (carried and f.name == QUALITY_FIGURE and (folder / f.name).is_file())
        ]
        earlier = earlier_figures(rows, folder, own)
        shown = in_page_order(own + earlier, rows)
        publish_page(
            Path(publish),
            page(rows, kinds, command, shown, f"images/{section}/", carried, earlier),
            [*own, out / "results.csv"],
            section,
        )


def earlier_figures(rows: list[dict[str, Any]], folder: Path, figures: list[Path]) -> list[Path]:
    """The figures already published in `folder` that this sitting drew none in place of
    (its rows carried over from an earlier sitting): the per-method sample grids, a dataset's
    figure of all methods where not all of their runs are here, and quality against time."""
    names = {figure.name for figure in figures}
    candidates = [folder / QUALITY_FIGURE] + [
        folder / name
        for row in rows
        if row["status"] == "ok"
        for name in (
            f"samples_{row['data']}_{row['method']}.png",
            f"samples_{row['data']}.png",
            f"density_{row['data']}.png",
        )
    ]
    return [f for f in dict.fromkeys(candidates) if f.name not in names and f.is_file()]


def in_page_order(figures: list[Path], rows: list[dict[str, Any]]) -> list[Path]:
    """`figures` as a sitting that drew them all would list them: quality against time, then
    per dataset (in the rows' order) its density panels, method grids and all-method grid."""
    data = list(dict.fromkeys(row["data"] for row in rows))
    methods = list(dict.fromkeys(row["method"] for row in rows))
    names = [QUALITY_FIGURE]
    for d in data:
        names += [f"density_{d}.png", *(f"samples_{d}_{m}.png" for m in methods)]
        names.append(f"samples_{d}.png")
    rank = {name: i for i, name in enumerate(names)}
    return sorted(figures, key=lambda figure: rank.get(figure.name, len(rank)))


def order_rows(rows: list[dict[str, Any]], specs: list[RunSpec]) -> list[dict[str, Any]]:
    """Rows in the order of the plan, then any others results.csv holds."""
    rank = {(s.method, s.data, s.seed): i for i, s in enumerate(specs)}
    return sorted(rows, key=lambda row: rank.get(run_key(row), len(rank)))


def page(rows, kinds, command: str, figures: list[Path], prefix: str, carried=(), kept=()) -> str:
    """The leaderboard page; `carried` are the rows of earlier sittings and `kept` the
    figures of earlier sittings among `figures`, each said as such."""
    header = "\n".join(
        [
            "# ebmlab bench",
            "",
            f"Measured {time.strftime('%Y-%m-%d')} with `{command}` on {machine()}."
            + carried_note(rows, carried)
            + kept_note(rows, carried, kept),
            "",
            "Each run trains in its own process with its method's preset for the data, for the "
            "budget given (`90s`: seconds of training; `2000 steps`: iterations; `preset`: the "
            "preset's own steps), then is scored "
            "by `ebmlab.evaluate` with the data's standard OOD sets. Cells are mean ± std over "
            "the seeds that finished; `-`: the method does not report it or no run finished. "
            "Bold: the best mean of a column. "
            f"Every run's row: [results.csv]({prefix}results.csv).",
        ]
    )
    text = leaderboard(rows, kinds, header)
    lines = ["", "## Figures", ""]
    for figure in figures:
        lines += [f"![{figure.stem}]({prefix}{figure.name})", ""]
    return text + "\n".join(lines)


def carried_note(rows, carried) -> str:
    """One sentence on the rows measured in an earlier sitting, or nothing."""
    if not carried:
        return ""
    methods = ", ".join(dict.fromkeys(row["method"] for row in carried))
    return (
        f" {len(carried)} of the {len(rows)} rows ({methods}) were measured in an earlier "
        "sitting and carried over from the published results.csv (`--continue-published`)."
    )


def kept_note(rows, carried, kept: list[Path]) -> str:
    """One sentence on the figures of several methods kept from an earlier sitting (they
    need its runs) that leave out rows measured since, or nothing."""
    measured = [row for row in rows if row not in carried]
    data = dict.fromkeys(row["data"] for row in measured)
    stale = {f"samples_{d}.png" for d in data} | {f"density_{d}.png" for d in data}
    names = [f.stem for f in kept if f.name in stale or (measured and f.name == QUALITY_FIGURE)]
    if not names:
        return ""
    return (
        f" Kept from the earlier sitting, as they need its runs: {', '.join(names)}; they do "
        "not show the rows measured since."
    )


def machine() -> str:
    import torch

    import ebmlab

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = re.findall(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        cpu = names[0].strip() if names else cpu
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (
        f"{cpu} ({os.cpu_count()} cores){gpu}; ebmlab {ebmlab.__version__}, "
        f"torch {torch.__version__}, python {platform.python_version()}"
    )


def command_line(suite, methods, data, seeds, budget, jobs, device) -> str:
    parts = ["ebmlab bench", f"--suite {suite}"]
    for flag, value in (("--methods", methods), ("--data", data)):
        if value:
            parts.append(f"{flag} {','.join(value)}")
    for flag, value, default in (
        ("--seeds", seeds, None),
        ("--budget", budget, None),
        ("--jobs", jobs, None),
        ("--device", device, "auto"),
    ):
        if value != default:
            parts.append(f"{flag} {value}")
    return " ".join(parts)


def publish_page(path: Path, text: str, files: list[Path], name: str = "bench") -> None:
    """Write the leaderboard into `path`, between the markers `<!-- NAME:begin -->` and
    `<!-- NAME:end -->` where it has them (else appended), and copy `files` (the figures,
    results.csv) to images/NAME/ beside it."""
    begin, end = markers(name)
    images = path.parent / "images" / name
    images.mkdir(parents=True, exist_ok=True)
    for file in files:
        shutil.copyfile(file, images / file.name)
    section = f"{begin}\n{text}\n{end}"
    old = path.read_text() if path.is_file() else ""
    if begin in old and end in old:
        before, rest = old.split(begin, 1)
        section = before + section + rest.split(end, 1)[1]
    elif old:
        section = f"{old.rstrip()}\n\n{section}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(section if section.endswith("\n") else section + "\n")
