"""results.csv (one row per run) and leaderboard.md (mean ± std over seeds, best in bold; for
metrics measured on several datasets, each method's median and worst over them)."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

#: the columns every row has, before its metrics
RUN_COLUMNS = [
    "method",
    "data",
    "seed",
    "budget",
    "status",
    "diverged",
    "steps",
    "wall_s",
    "it_per_s",
    "peak_mem_mb",
    "device",
]

#: leaderboard metrics in column order: name -> (heading, True when higher is better, None
#: when not ranked);
#: `auroc/<set>` columns join for every OOD set some run reports
QUALITY = {
    "kl": ("KL", False),
    "nll": ("NLL", False),
    "nll_test_grid": ("held-out NLL", False),
    "mode_coverage": ("mode coverage", True),
    "mode_weight_tv": ("mode weight TV", False),
    "mmd2": ("MMD²", False),
    "fid_inception": ("Inception FID", False),
    "fid_inception_floor": ("its train-vs-test floor", None),
    "fd_classifier": ("FD", False),
    "kid": ("KID", False),
    "confident_share": ("confident", True),
    "confident_label_entropy": ("label entropy", True),
    "recon_rmse_test": ("recon RMSE", False),
    "inpaint_psnr": ("inpaint PSNR", True),
}
#: cost columns: name -> (heading, True/False when higher/lower is better, None: not ranked,
#: as training seconds are the budget itself when it is time)
COST = {
    "it_per_s": ("it/s", True),
    "wall_s": ("train s", None),
    "peak_mem_mb": ("peak MB", False),
}
#: the summary's metric per data kind: samples against data, which every method can report
HEADLINE = {"toy2d": ("kl", "mmd2"), "image": ("fd_classifier",), "tabular": ("kl", "mmd2")}
#: metrics summarised by their median and worst over datasets, where 2 or more have them
ACROSS = ("kl", "mode_coverage", "mode_weight_tv")


def run_key(row: dict[str, Any]) -> tuple[str, str, int]:
    return row["method"], row["data"], int(row["seed"])


def result_row(result: dict[str, Any]) -> dict[str, Any]:
    """A worker's result as one flat results.csv row."""
    row = {column: result.get(column, "") for column in RUN_COLUMNS}
    row["diverged"] = "yes" if result["status"] == "diverged" else "no"
    row |= result.get("metrics", {})
    row["error"] = result.get("error", "")
    return row


def read_results(path: Path) -> list[dict[str, Any]]:
    """The rows of a results.csv; numbers come back as floats, missing values as ""."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def write_results(path: Path, rows: list[dict[str, Any]]) -> None:
    """All rows, with the union of their metric columns; written whole, then renamed."""
    metrics = sorted({k for row in rows for k in row} - set(RUN_COLUMNS) - {"error"})
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, [*RUN_COLUMNS, *metrics, "error"], restval="")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def leaderboard(rows: list[dict[str, Any]], kinds: dict[str, str], header: str) -> str:
    """Markdown: a summary of the headline metrics, then one table per dataset."""
    datasets = list(dict.fromkeys(row["data"] for row in rows))
    lines = [header, "", "## Summary", "", *summary_table(rows, datasets, kinds), ""]
    across = across_datasets_table(rows, datasets)
    if across:
        lines += ["## Across datasets", "", *across, ""]
    for data in datasets:
        subset = [row for row in rows if row["data"] == data]
        seeds = len({row["seed"] for row in subset})
        budget = subset[0]["budget"]
        lines += [
            f"## {data}",
            "",
            f"{kinds[data]} data, budget {budget} per run, {seeds} seed(s).",
            "",
        ]
        lines += [*dataset_table(subset), ""]
    return "\n".join(lines)


def summary_table(
    rows: list[dict[str, Any]], datasets: list[str], kinds: dict[str, str]
) -> list[str]:
    """One table per headline metric: a row per method, a column per dataset that has it, the
    mean over seeds (the spread is in the dataset tables), the best of a column in bold."""
    methods = list(dict.fromkeys(row["method"] for row in rows))
    metrics = dict.fromkeys(m for data in datasets for m in HEADLINE.get(kinds[data], ()))
    lines: list[str] = []
    for metric in metrics:
        heading, higher_is_better = QUALITY[metric]
        columns = [data for data in datasets if metric in HEADLINE.get(kinds[data], ())]
        cells = {(m, d): _values(rows, m, d, metric) for m in methods for d in columns}
        best = {d: _best([cells[m, d] for m in methods], higher_is_better) for d in columns}
        lines += [f"{heading}, mean over seeds:", ""]
        lines += [_table_row(["method", *columns]), _table_row(["---"] * (len(columns) + 1))]
        for method in methods:
            texts = [_cell(cells[method, d], best[d], spread=False) for d in columns]
            lines.append(_table_row([method, *texts]))
        lines.append("")
    return lines[:-1]


def across_datasets_table(rows: list[dict[str, Any]], datasets: list[str]) -> list[str]:
    """A row per method: for each metric of ACROSS that 2 or more datasets have, the median and
    the worst over datasets of the method's mean over seeds, and on how many of those datasets
    it has a value (a failed run has none, so a method cannot hide its worst case by failing)."""
    methods = list(dict.fromkeys(row["method"] for row in rows))
    metrics = {}
    for metric in ACROSS:
        means = {
            (method, data): float(np.mean(values))
            for method in methods
            for data in datasets
            if (values := _values(rows, method, data, metric))
        }
        measured = {data for _, data in means}
        if len(measured) >= 2:
            metrics[metric] = (means, len(measured))
    if not metrics:
        return []
    headings, cells = [], {method: [] for method in methods}
    for metric, (means, total) in metrics.items():
        heading, higher_is_better = QUALITY[metric]
        headings += [f"{heading} median", f"{heading} worst", f"{heading} on"]
        worst = min if higher_is_better else max
        summaries = {
            method: [v for (m, _), v in means.items() if m == method] for method in methods
        }
        medians = [[float(np.median(v))] if v else [] for v in summaries.values()]
        worsts = [[worst(v)] if v else [] for v in summaries.values()]
        best_median, best_worst = _best(medians, higher_is_better), _best(worsts, higher_is_better)
        for method, median, worst_value in zip(methods, medians, worsts, strict=True):
            cells[method] += [
                _cell(median, best_median),
                _cell(worst_value, best_worst),
                f"{len(summaries[method])}/{total}",
            ]
    lines = [
        "Per method, the median and the worst over datasets of its mean over seeds; `on`: the "
        "datasets where it has a value, out of those where some method has.",
        "",
        _table_row(["method", *headings]),
        _table_row(["---"] * (len(headings) + 1)),
    ]
    lines += [_table_row([method, *cells[method]]) for method in methods]
    return lines


def dataset_table(rows: list[dict[str, Any]]) -> list[str]:
    """One row per method: quality metrics, OOD AUROCs, cost, and diverged runs out of all."""
    present = {k for row in rows for k, v in row.items() if v != ""}
    aurocs = sorted(k for k in present if k.startswith("auroc/"))
    quality = [k for k in QUALITY if k in present] + aurocs
    directions = {k: QUALITY.get(k, (k, True))[1] for k in quality} | {
        k: better for k, (_, better) in COST.items()
    }
    columns = quality + list(COST)
    methods = list(dict.fromkeys(row["method"] for row in rows))
    data = rows[0]["data"]
    cells = {(m, k): _values(rows, m, data, k) for m in methods for k in columns}
    best = {k: _best([cells[m, k] for m in methods], directions[k]) for k in columns}
    headings = [QUALITY.get(k, (k.removeprefix("auroc/") + " AUROC",))[0] for k in quality]
    headings += [heading for heading, _ in COST.values()]
    table = [
        _table_row(["method", *headings, "diverged"]),
        _table_row(["---"] * (len(columns) + 2)),
    ]
    for method in methods:
        runs = [row for row in rows if row["method"] == method]
        failed = sum(row["status"] != "ok" for row in runs)
        texts = [_cell(cells[method, k], best[k]) for k in columns]
        table.append(_table_row([method, *texts, f"{failed}/{len(runs)}"]))
    return table


def _values(rows: Iterable[dict[str, Any]], method: str, data: str, key: str) -> list[float]:
    """The finite values of `key` over the seeds of (method, data) that finished."""
    found = [
        row.get(key, "")
        for row in rows
        if row["method"] == method and row["data"] == data and row["status"] == "ok"
    ]
    return [float(v) for v in found if v != "" and math.isfinite(float(v))]


def _best(cells: list[list[float]], higher_is_better: bool | None) -> float | None:
    means = [float(np.mean(values)) for values in cells if values]
    if len(means) < 2 or higher_is_better is None:
        return None
    return max(means) if higher_is_better else min(means)


def _cell(values: list[float], best: float | None, spread: bool = True) -> str:
    if not values:
        return "-"
    mean = float(np.mean(values))
    text = _fmt(mean)
    if spread and len(values) > 1:
        text += f" ± {_fmt(np.std(values, ddof=1))}"
    return f"**{text}**" if best is not None and mean == best else text


def _fmt(value: float) -> str:
    if abs(value) < 1e-9:
        return "0"  # a spread of rounding error, e.g. AUROCs of 1 computed in float32
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _table_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"
