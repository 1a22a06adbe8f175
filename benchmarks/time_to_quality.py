"""Training seconds each method needs to reach an exact KL(data || model) of 0.2 nats.

    python benchmarks/time_to_quality.py [--data 8gaussians] [--kl 0.2] [--every 5] [--max 240]

Each method trains with its preset on the 2D data in shares of `--every` seconds of training
(resuming exactly between them); after each share its exact KL is computed on a grid. The
first share that reaches `--kl` gives the time (training seconds, scoring excluded) and steps;
a method that does not reach it by `--max` seconds shows `> max` and its best KL. Methods whose
exp(-E) is no density (GEBM) have no exact KL and are listed as such. Prints a table; asserts
nothing.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import ebmlab
from ebmlab.api import read_history
from ebmlab.bench import machine
from ebmlab.data import load_dataset
from ebmlab.methods import METHODS, get_method
from ebmlab.metrics import grid_density_metrics
from ebmlab.train import TrainingDiverged


def seconds_to_reach(method: str, args: argparse.Namespace, root: Path) -> str:
    dataset = load_dataset(args.data)
    best, elapsed, share = float("inf"), 0.0, 0
    while elapsed < args.max:
        share += 1
        try:
            run = ebmlab.train(
                method,
                args.data,
                out=root / method,
                resume=share > 1,
                evaluate=False,
                progress=False,
                overrides={
                    "train": {"steps": 10**9, "max_seconds": share * args.every, "sample_every": 0}
                },
            )
        except TrainingDiverged:
            return f"diverged after {elapsed:.0f} | - | best {best:.3f}"
        with torch.no_grad():
            kl = grid_density_metrics(run.method.energy, dataset.log_density, dataset.bounds)["kl"]
        last = read_history(run.path)[-1]
        elapsed, best = last["wall_s"], min(best, kl)
        if kl <= args.kl:
            return f"{elapsed:.1f} | {int(last['step'])} | {kl:.3f}"
    return f"> {args.max:.0f} | - | best {best:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="8gaussians")
    parser.add_argument("--kl", type=float, default=0.2)
    parser.add_argument("--every", type=float, default=5.0, help="training seconds per share")
    parser.add_argument("--max", type=float, default=240.0, help="training seconds at most")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    args = parser.parse_args()
    print(f"{machine()}; {torch.get_num_threads()} threads, data {args.data}")
    print(f"| method | seconds to KL <= {args.kl} | steps | KL then |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as root:
        for method in args.methods:
            if not get_method(method).energy_is_density:
                print(f"| {method} | - (exp(-E) is no density: no exact KL) | | |")
                continue
            print(f"| {method} | {seconds_to_reach(method, args, Path(root))} |", flush=True)


if __name__ == "__main__":
    main()
