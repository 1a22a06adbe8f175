"""How close ebmlab's samplers come to the cost floor of one Langevin step.

    python benchmarks/sampler_floor.py [--device cpu|cuda] [--compile] [--repeats 7]

A Langevin step cannot cost less than one forward and one input-backward of the energy net. For
each workload this times that pair in isolation (the floor: `x.requires_grad_()`, forward,
`torch.autograd.grad`, parameters frozen as during sampling) and one step of ebmlab's Langevin,
MALA and HMC (per gradient evaluation), and prints each step's time divided by the floor. With
`--compile` it adds `Langevin(compile=True)` (forward, input backward and update compiled) and
the floor of the compiled net alone, both divided by the eager floor. After a warm-up, each of
`--repeats` rounds times the floor and every sampler in turn, in a new order each round; a ratio
is the median over rounds of the two times within one round, so that other load on the machine
cancels out. Prints a table, asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from ebmlab.api import resolve_device
from ebmlab.bench import machine
from ebmlab.nets import build_energy
from ebmlab.samplers import HMC, MALA, Langevin, frozen_params

#: name -> (data shape, chains, energy net options)
WORKLOADS = {
    "mlp 2D": ((2,), 10_000, {"kind": "mlp", "hidden": 128, "depth": 3, "activation": "swish"}),
    "conv 1x28x28": ((1, 28, 28), 256, {"kind": "conv"}),
    "resnet 3x32x32": ((3, 32, 32), 64, {"kind": "resnet"}),
}
STEPS = 20  # sampler steps per timed run


def timed_rounds(
    runs: dict[str, Callable[[], object]], repeats: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds of every run in each of `repeats` rounds, after one warm-up call of each
    (allocations, cuDNN autotuning, compilation). A round times the runs one after another, so
    a change in load (other processes on a shared CPU) falls on all of them alike and ratios
    taken within a round stay fair where run-by-run medians drift apart. Each round takes the
    runs in a new order (seeded), so that no run keeps a place or a neighbour whose memory and
    cache traffic it would inherit."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {label: [] for label in runs}
    order, shuffler = list(runs), random.Random(0)
    for _ in range(repeats):
        shuffler.shuffle(order)
        for label in order:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            runs[label]()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[label].append(time.perf_counter() - start)
    return times


def paired_ratio(numerators: list[float], denominators: list[float]) -> float:
    """The median over rounds of one run's time over another's in the same round."""
    return statistics.median(a / b for a, b in zip(numerators, denominators, strict=True))


def floor_pair(net: nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """One forward and one input-backward, STEPS times."""

    def run() -> torch.Tensor:
        for _ in range(STEPS):
            y = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(net(y).sum(), y)
        return grad

    return run


def sampler_run(sampler, net: nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    return lambda: sampler(net, x)[0]


def measure(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    shape, chains, options = WORKLOADS[name]
    net = build_energy(shape, **options).to(device)
    x = torch.randn(chains, *shape, device=device)
    leapfrog = 5
    samplers = {
        "langevin": Langevin(steps=STEPS, step_size=1e-3),
        "mala": MALA(steps=STEPS, step_size=1e-3),
        "hmc": HMC(steps=STEPS // leapfrog, step_size=1e-3, leapfrog_steps=leapfrog),
    }
    if args.compile:
        samplers["langevin compiled"] = Langevin(steps=STEPS, step_size=1e-3, compile=True)
    with frozen_params(net):
        runs = {"floor": floor_pair(net, x)}
        runs.update({label: sampler_run(sampler, net, x) for label, sampler in samplers.items()})
        if args.compile:
            runs["compiled net floor"] = floor_pair(torch.compile(net), x)
        times = timed_rounds(runs, args.repeats, device)
    row = {"floor ms": 1000 * statistics.median(times["floor"]) / STEPS}
    for label in list(runs)[1:]:
        row[label] = paired_ratio(times[label], times["floor"])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS))
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(
        f"{machine()}; device {device}, {torch.get_num_threads()} threads, "
        f"{STEPS} steps per run, median of {args.repeats}"
    )
    rows = {name: measure(name, args, device) for name in args.workloads}
    columns = list(next(iter(rows.values())))
    print("| workload | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, row in rows.items():
        cells = [f"{row[c]:.3f}" if c != "floor ms" else f"{row[c]:.2f}" for c in columns]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("Ratios are time per step / floor time; MALA and HMC per gradient evaluation.")


if __name__ == "__main__":
    main()
