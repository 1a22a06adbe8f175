"""Seconds per training iteration of each method with its preset, on this machine.

    python benchmarks/train_speed.py [--steps 50] [--data 8gaussians digits]

Prints a table; asserts nothing. Times `train_step` only (no logging or checkpoints). A method
whose preset does not fit the data (e.g. a latent wider than 8x8 digits) gets its reason.
"""

from __future__ import annotations

import argparse
import time

import torch

from ebmlab.api import build_method_config, resolve_config, resolve_device
from ebmlab.data import load_dataset
from ebmlab.errors import EbmlabError
from ebmlab.methods import METHODS, get_method


def seconds_per_step(name: str, data: str, steps: int, device: torch.device) -> float:
    dataset = load_dataset(data)
    config = resolve_config(name, dataset, data, None, None)
    method = get_method(name)(build_method_config(config), dataset.shape).to(device)
    batch = dataset.train[: config.data.batch_size].to(device)
    method.train_step(batch, 0)  # warm-up: first-call allocations
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for step in range(steps):
        method.train_step(batch, step)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--data", nargs="+", default=["8gaussians", "digits"])
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| method | data | ms / iteration |\n|---|---|---|")
    for data in args.data:
        for name in METHODS:
            try:
                ms = f"{1000 * seconds_per_step(name, data, args.steps, device):.1f}"
            except EbmlabError as err:
                ms = f"- ({err})"
            print(f"| {name} | {data} | {ms} |")


if __name__ == "__main__":
    main()
