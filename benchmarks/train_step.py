"""Time per training iteration of each method with its preset, split into sampling and update.

    python benchmarks/train_step.py [--steps 20] [--data 8gaussians mnist] [--device cuda]

Times `train_step` alone (no logging, checkpoints or data loading) on one fixed batch, after a
warm-up step, and splits each iteration into: sampling, the time inside ebmlab's samplers
(`Langevin`, `MALA`, `HMC`: the MCMC of every method that runs one); update, the time inside
`Method.update` (backward passes and optimiser steps); other, the rest (the losses' forward
passes, replay buffer, generators and encoders outside a chain). Prints a table in milliseconds;
asserts nothing. A method whose preset does not fit the data gets its reason instead.
`--compile`, `--amp bf16` and `--channels-last` time the training paths of the same names.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator

import torch

from ebmlab.api import build_method_config, resolve_config, resolve_device
from ebmlab.bench import machine
from ebmlab.data import load_dataset
from ebmlab.errors import EbmlabError
from ebmlab.methods import METHODS, Method, get_method
from ebmlab.samplers import HMC, MALA, Langevin, compiled_langevin
from ebmlab.train import check_speed_options

TIMED = {"sampling": [(Langevin, "__call__"), (MALA, "__call__"), (HMC, "__call__")]}
TIMED["update"] = [(Method, "update")]


@contextlib.contextmanager
def timed_parts(device: torch.device, totals: dict[str, float]) -> Iterator[None]:
    """Wrap the functions in TIMED so their seconds add up in `totals` (outermost calls only:
    a sampler inside a sampler counts once)."""
    depth = defaultdict(int)
    originals = []

    def wrap(part: str, function):
        def timed(*args, **kwargs):
            depth[part] += 1
            sync(device)
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                sync(device)
                depth[part] -= 1
                if depth[part] == 0:
                    totals[part] += time.perf_counter() - start

        return timed

    for part, targets in TIMED.items():
        for owner, name in targets:
            originals.append((owner, name, getattr(owner, name)))
            setattr(owner, name, wrap(part, getattr(owner, name)))
    try:
        yield
    finally:
        for owner, name, function in originals:
            setattr(owner, name, function)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def milliseconds_per_step(name: str, data: str, args: argparse.Namespace) -> dict:
    device, steps = resolve_device(args.device), args.steps
    dataset = load_dataset(data)
    speed = {"compile": args.compile, "amp": args.amp, "channels_last": args.channels_last}
    config = resolve_config(name, dataset, data, None, {"train": speed})
    check_speed_options(config.train, dataset, device)
    layout = torch.channels_last if args.channels_last else torch.preserve_format
    method = get_method(name)(build_method_config(config), dataset.shape)
    method.to(device, memory_format=layout)
    batch = dataset.train[: config.data.batch_size].to(device)
    if args.channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp == "bf16")
    totals: dict[str, float] = defaultdict(float)
    with compiled_langevin(args.compile), autocast:
        method.train_step(batch, 0)  # warm-up: first-call allocations, compilation
        with timed_parts(device, totals):
            sync(device)
            start = time.perf_counter()
            for step in range(1, steps + 1):
                method.train_step(batch, step)
            sync(device)
            total = time.perf_counter() - start
    parts = {"total": total, "sampling": totals["sampling"], "update": totals["update"]}
    parts["other"] = total - parts["sampling"] - parts["update"]
    return {key: 1000 * value / steps for key, value in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--data", nargs="+", default=["8gaussians", "mnist"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--amp", default="none", choices=["none", "bf16"])
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"{machine()}; device {device}, {torch.get_num_threads()} threads")
    print(
        "| data | method | ms / iteration | sampling | update | other |\n|---|---|---|---|---|---|"
    )
    for data in args.data:
        for name in args.methods:
            try:
                ms = milliseconds_per_step(name, data, args)
                cells = [f"{ms[k]:.1f}" for k in ("total", "sampling", "update", "other")]
            except EbmlabError as err:
                cells = [f"- ({err})", "", "", ""]
            print(f"| {data} | {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
