"""The same Langevin workload through the peer libraries and through ebmlab, in one run.

    pip install -e ".[bench]"        # torchebm and ebmkit, from PyPI
    python benchmarks/peers.py [--device cpu|cuda] [--compile] [--repeats 7]

For each workload of `sampler_floor.py` (one energy net and its chains), every runner takes
STEPS unadjusted Langevin steps from the same start with the net's parameters frozen: a plain
autograd loop (the yardstick), ebmkit's `LangevinDynamics`, torchebm's `LangevinDynamics`,
ebmlab's `Langevin`, and with `--compile` ebmlab's `Langevin(compile=True)`. After a warm-up,
each of `--repeats` rounds times every runner in turn, in a new order each round; a cell is the
median milliseconds per step, and the last columns take, for each peer, the median over rounds
of its time over ebmlab's in the same round, and show the smaller of the two (above 1: ebmlab is
faster than both). A per-round minimum of the two peers' times would be biased low by noise, so
it is not used. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from sampler_floor import STEPS, WORKLOADS, paired_ratio, timed_rounds
from torch import nn

from ebmlab.api import resolve_device
from ebmlab.bench import machine
from ebmlab.nets import build_energy
from ebmlab.samplers import Langevin, frozen_params

STEP_SIZE = 1e-3
PEERS = ("ebmkit", "torchebm")


def plain_loop(net: nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    noise = (2 * STEP_SIZE) ** 0.5

    def run() -> torch.Tensor:
        chains = x
        for _ in range(STEPS):
            chains = chains.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(net(chains).sum(), chains)
            chains = chains - STEP_SIZE * grad + noise * torch.randn_like(chains)
        return chains.detach()

    return run


def ebmkit(net: nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    from ebm.samplers import LangevinDynamics

    sampler = LangevinDynamics(step_size=STEP_SIZE, steps=STEPS)
    return lambda: sampler.sample(net, x)


def torchebm(net: nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    from torchebm.core import BaseModel
    from torchebm.samplers import LangevinDynamics

    class Wrapped(BaseModel):
        def __init__(self):
            super().__init__(device=x.device)
            self.net = net

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            return self.net(inputs)

    sampler = LangevinDynamics(Wrapped(), step_size=STEP_SIZE, device=x.device)
    return lambda: sampler.sample(x=x, n_steps=STEPS)


def ebmlab_runner(compiled: bool) -> Callable:
    sampler = Langevin(steps=STEPS, step_size=STEP_SIZE, compile=compiled)
    return lambda net, x: lambda: sampler(net, x)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    device = resolve_device(args.device)
    runners = {"plain loop": plain_loop, "ebmkit": ebmkit, "torchebm": torchebm}
    runners["ebmlab"] = ebmlab_runner(False)
    if args.compile:
        runners["ebmlab compiled"] = ebmlab_runner(True)
    print(f"{machine()}; device {device}, {torch.get_num_threads()} threads")
    mine = [name for name in runners if name.startswith("ebmlab")]
    heading = [f"ms/step {name}" for name in runners] + [f"peer / {name}" for name in mine]
    print("| workload | " + " | ".join(heading) + " |\n" + "|---" * (len(heading) + 1) + "|")
    for workload, (shape, chains, options) in WORKLOADS.items():
        net = build_energy(shape, **options).to(device)
        x = torch.randn(chains, *shape, device=device)
        with frozen_params(net):
            runs = {name: make(net, x) for name, make in runners.items()}
            times = timed_rounds(runs, args.repeats, device)
        cells = [f"{1000 * statistics.median(times[name]) / STEPS:.3f}" for name in runners]
        cells += [
            f"{min(paired_ratio(times[peer], times[name]) for peer in PEERS):.2f}" for name in mine
        ]
        print(f"| {workload} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
