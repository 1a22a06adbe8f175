"""The bench's pictures: per 2D dataset each method's density beside the data's, per image
dataset each method's samples, and each method's quality against training time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from ebmlab.bench.tables import run_key
from ebmlab.report import save_density_comparison, save_sample_panels, show_images

#: the quality-vs-time metric per data kind: one that every method reports
CURVE_METRIC = {"toy2d": ("mmd2", "MMD² of samples"), "tabular": ("mmd2", "MMD² of samples")}
CURVE_METRIC["image"] = ("fd_classifier", "FD in classifier features")
#: smaller values (the unbiased MMD² can be slightly negative) are drawn here on the log axis
LOG_FLOOR = 1e-5


def save_model_figures(
    rows: list[dict[str, Any]], run_dirs: dict[tuple, Path], datasets: dict, out: Path
) -> list[Path]:
    """Per 2D dataset one density panel per method (`density_<data>.png`); per image dataset
    one grid of 64 samples per method (`samples_<data>_<method>.png`, each drawn at seed 0) and
    all of them beside the data (`samples_<data>.png`). Each method's first finished seed is
    drawn; a row whose run directory is gone (one carried over from an earlier sitting, see
    `ebmlab.bench`) has no figure here, and a figure of all methods is drawn only when every
    finished method's run is here, so that it never shows some of them as if they were all.
    Returns the files written."""
    import ebmlab
    from ebmlab import checkpoints

    written = []
    for name, dataset in datasets.items():
        finished = {}
        for row in rows:
            if row["data"] == name and row["status"] == "ok":
                finished.setdefault(row["method"], run_dirs[run_key(row)])
        if not finished or dataset.kind == "tabular":
            continue
        here = {m: d for m, d in finished.items() if checkpoints.paths(d)}
        models = {m: ebmlab.load(d).method for m, d in here.items()}
        every_method_here = bool(models) and len(models) == len(finished)
        if dataset.kind == "toy2d" and every_method_here:
            path = out / f"density_{name}.png"
            save_density_comparison(models, dataset, path)
            written.append(path)
        elif dataset.kind == "image":
            written += [save_method_samples(m, model, name, out) for m, model in models.items()]
            if every_method_here:
                path = out / f"samples_{name}.png"
                save_sample_panels(models, dataset, path)
                written.append(path)
    return written


def save_method_samples(method: str, model: Any, data: str, out: Path, n: int = 64) -> Path:
    """One method's n samples as an 8-wide grid, drawn at seed 0 (the same for every method)."""
    from ebmlab.metrics._common import seeded

    with seeded(0, model.device):
        images = model.sample(n).detach().cpu()
    path = out / f"samples_{data}_{method}.png"
    fig, ax = plt.subplots(figsize=(3.2, 3.5))
    show_images(ax, images, f"{method} on {data}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_quality_vs_time(
    rows: list[dict[str, Any]], run_dirs: dict[tuple, Path], kinds: dict[str, str], path: Path
) -> None:
    """One panel per dataset: each run's quality metric at each scored point of its training
    against its training seconds; one colour per method, one line per seed."""
    datasets = list(dict.fromkeys(row["data"] for row in rows))
    methods = list(dict.fromkeys(row["method"] for row in rows))
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    columns = min(len(datasets), 4)
    nrows = -(-len(datasets) // columns)
    fig, axes = plt.subplots(nrows, columns, figsize=(4.2 * columns, 3.4 * nrows), squeeze=False)
    for ax, data in zip(axes.flat, datasets, strict=False):
        metric, label = CURVE_METRIC[kinds[data]]
        for row in rows:
            if row["data"] != data:
                continue
            points = _curve(row, run_dirs[(row["method"], data, int(row["seed"]))], metric)
            if points:
                seconds, values = zip(*points, strict=True)
                shown = [max(v, LOG_FLOOR) for v in values]
                ax.plot(seconds, shown, "o-", color=colours[row["method"]], ms=3, lw=1)
        ax.set_title(data)
        ax.set_xlabel("training seconds")
        ax.set_ylabel(label)
        ax.set_yscale("log")
    for ax in axes.flat[len(datasets) :]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=colours[m], marker="o", label=m) for m in methods]
    fig.legend(handles=handles, loc="center right", frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 1.1 / (4.2 * columns), 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _curve(row: dict[str, Any], run_dir: Path, metric: str) -> list[tuple[float, float]]:
    """(training seconds, metric) at each scored point of a finished run, the end included."""
    if row["status"] != "ok" or row.get(metric, "") == "":
        return []
    result_file = run_dir / "bench.json"
    curve = json.loads(result_file.read_text())["curve"] if result_file.is_file() else []
    points = [(p["wall_s"], p[metric]) for p in curve if metric in p]
    return [*points, (float(row["wall_s"]), float(row[metric]))]
