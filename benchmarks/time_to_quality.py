"""Training seconds each method needs to reach its quality goal, on 8gaussians and the unseen
suite (issue 19): an exact KL(data || model) <= 0.2 nats for the energy methods, and for GEBM,
whose exp(-E) is no density, samples with mode coverage >= 0.9 and mode-weight TV <= 0.1.

    python benchmarks/time_to_quality.py [--data 8gaussians unseen] [--kl 0.2] [--every 10]
                                         [--max 60] [--methods cd icd ...] [--per-density]

`unseen` stands for the 12 densities of `ebmlab.data.unseen.UNSEEN_SUITE`. Each method trains
with its preset (no flags) in shares of `--every` training seconds, resuming exactly between
them; after each share it is scored (exact grid KL, or GEBM's sample criterion on 2,000
samples). The first share that meets the goal gives the time (training seconds, scoring
excluded); one that does not by `--max` shows `> max` with its best score. Prints one table per
data set and, for the suite, the share of densities reached and the median and worst score;
GEBM is judged on the suite's mixtures only; `--per-density` adds a line per method with each
density's seconds or best score. Asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

import ebmlab
from ebmlab.api import read_history
from ebmlab.bench import machine
from ebmlab.data import load_dataset
from ebmlab.data.unseen import UNSEEN_SUITE
from ebmlab.methods import METHODS, get_method
from ebmlab.metrics import grid_density_metrics
from ebmlab.metrics.modes import mode_metrics
from ebmlab.train import TrainingDiverged

SAMPLES = 2_000
COVERAGE, WEIGHT_TV = 0.9, 0.1


def score(run, dataset, kl_goal: float) -> tuple[float, bool]:
    """(the score shown, whether the goal is met): KL for densities, TV for GEBM's samples."""
    if run.method.energy_is_density:
        box = dataset.box or dataset.bounds
        with torch.no_grad():
            kl = grid_density_metrics(run.method.energy, dataset.log_density, box)["kl"]
        return kl, kl <= kl_goal
    torch.manual_seed(0)
    samples = torch.cat([run.method.sample(500).detach() for _ in range(SAMPLES // 500)])
    c = dataset.components
    modes = mode_metrics(samples.cpu(), c.means, c.covariances, c.weights)
    return modes["mode_weight_tv"], (
        modes["mode_coverage"] >= COVERAGE and modes["mode_weight_tv"] <= WEIGHT_TV
    )


def is_judged(method: str, data: str) -> bool:
    """Whether the goal applies: always for a density; for GEBM only on mixtures, whose
    components its sample criterion needs (rings and spirals have none)."""
    return get_method(method).energy_is_density or load_dataset(data).components is not None


def seconds_to_reach(
    method: str, data: str, root: Path, args: argparse.Namespace
) -> tuple[float | None, float]:
    """(training seconds to the goal or None, the best score seen)."""
    dataset = load_dataset(data)
    best, elapsed, share = float("inf"), 0.0, 0
    while elapsed < args.max:
        share += 1
        try:
            run = ebmlab.train(
                method,
                data,
                out=root / f"{method}_{data}",
                resume=share > 1,
                evaluate=False,
                progress=False,
                overrides={
                    "train": {"steps": 10**9, "max_seconds": share * args.every, "sample_every": 0}
                },
            )
        except TrainingDiverged:
            return None, best
        value, reached = score(run, dataset, args.kl)
        elapsed, best = read_history(run.path)[-1]["wall_s"], min(best, value)
        if reached:
            return elapsed, best
    return None, best


def main() -> None:
    args = parse_args()
    print(f"{machine()}; {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as root:
        for data in args.data:
            names = [f"unseen-{seed}" for seed in UNSEEN_SUITE] if data == "unseen" else [data]
            print(
                f"\n{data}: seconds to KL <= {args.kl} (gebm: coverage >= {COVERAGE}, TV <= "
                f"{WEIGHT_TV}); `> {args.max:.0f}` = not within the budget"
            )
            print("| method | reached | median s | median best score | worst best score |")
            print("|---|---|---|---|---|")
            for method in args.methods:
                judged = [name for name in names if is_judged(method, name)]
                results = [seconds_to_reach(method, name, Path(root), args) for name in judged]
                times = [t for t, _ in results if t is not None]
                scores = [s for _, s in results]
                median_s = f"{statistics.median(times):.0f}" if times else f"> {args.max:.0f}"
                kind = "KL" if get_method(method).energy_is_density else "TV"
                print(
                    f"| {method} | {len(times)}/{len(judged)} | {median_s} | "
                    f"{kind} {statistics.median(scores):.3f} | {kind} {max(scores):.3f} |",
                    flush=True,
                )
                if args.per_density and len(judged) > 1:
                    print_per_density(method, judged, results, kind, args.max)


def print_per_density(
    method: str,
    names: list[str],
    results: list[tuple[float | None, float]],
    kind: str,
    budget: float,
) -> None:
    """One line under the method's row: each density's seconds to the goal, or `> budget` with
    its best score."""
    cells = [
        f"{name} {t:.0f} s" if t is not None else f"{name} > {budget:.0f} s ({kind} {best:.3f})"
        for name, (t, best) in zip(names, results, strict=True)
    ]
    print(f"|   {method}, each: " + "; ".join(cells) + " | | | | |", flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", nargs="+", default=["8gaussians", "unseen"])
    parser.add_argument("--kl", type=float, default=0.2)
    parser.add_argument("--every", type=float, default=10.0, help="training seconds per share")
    parser.add_argument("--max", type=float, default=60.0, help="training seconds at most")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument(
        "--per-density", action="store_true", help="also list each density's seconds and best"
    )
    return parser.parse_args()


if __name__ == "__main__":
    main()
