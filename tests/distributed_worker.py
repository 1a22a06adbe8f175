"""What each process runs for test_distributed.py under `torchrun -m tests.distributed_worker`.

`train DUMP ARGS...`: `ebmlab train ARGS...` through the CLI's own entry point; afterwards each
process saves the state its method ended with to DUMP/rank<RANK>.pt, for the test to compare.

`methods DUMP`: a few steps of every registered method through `ebmlab.train`; each process
saves the weights it ended with to DUMP/rank<RANK>.pt.

`update DUMP`: `Method.update` on this process's rows of one fixed batch (`probe_updates`); the
test runs the same function in one process on the whole batch and compares.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

import ebmlab
from ebmlab import cli, distributed
from ebmlab.methods import METHODS, Method
from tests.helpers import TINY


class Probe(Method):
    """Three linear maps: `always` in every loss, `sometimes` only on rows with x_0 > 0 (so
    a process without such rows has no gradient for it), `never` in no loss."""

    def __init__(self):
        super().__init__(cfg=None, data_shape=(2,))
        self.always, self.sometimes, self.never = (nn.Linear(2, 1) for _ in range(3))
        self.optimizers["all"] = torch.optim.Adam(self.parameters(), lr=0.1)

    def energy(self, x: Tensor) -> Tensor:
        return self.always(x).squeeze(1)

    def train_step(self, x: Tensor, step: int) -> dict[str, Tensor]:
        raise NotImplementedError("a probe of Method.update only")

    def sample(self, n: int) -> Tensor:
        raise NotImplementedError("a probe of Method.update only")


def probe_batch() -> Tensor:
    """8 rows, x_0 < 0 in the first half and > 0 in the second: with 2 processes, rank 0 never
    uses `sometimes`."""
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    x[:, 0] = x[:, 0].abs() * torch.tensor([-1.0] * 4 + [1.0] * 4)
    return x


def probe_updates(rank: int, world_size: int) -> dict[str, Tensor]:
    """Three plain-loss updates (clipped) and one in parts on rank's rows of `probe_batch()`;
    every loss is a sum over rows divided by the rows on this process, so the average over
    processes is the one-process loss of the whole batch. Returns the weights, the norms, and
    whether `sometimes` and `never` had a gradient after the plain updates."""
    torch.manual_seed(0)
    method = Probe()
    rows = probe_batch().chunk(world_size)[rank]
    positive = rows[rows[:, 0] > 0]
    for _ in range(3):
        loss = method.energy(rows).pow(2).mean()
        if len(positive):  # only here does `sometimes` get a gradient
            loss = loss + method.sometimes(positive).sum() / len(rows)
        assert method.update("all", loss, clip=0.5) == {}
    has_grad = {
        f"{name}_has_grad": torch.tensor(layer.weight.grad is not None)
        for name, layer in (("sometimes", method.sometimes), ("never", method.never))
    }
    norms = method.update(
        "all",
        {
            "square": method.energy(rows).pow(2).mean(),
            "positive": method.sometimes(positive).sum() / len(rows),
        },
    )
    weights = {name: p.detach().clone() for name, p in method.named_parameters()}
    return weights | norms | has_grad


def dump_train(dump: Path, argv: list[str]) -> int:
    runs = []
    real_train = ebmlab.train

    def keep_run(*args, **kwargs):
        runs.append(real_train(*args, **kwargs))
        return runs[-1]

    ebmlab.train = keep_run
    code = cli.main(argv)
    if runs:
        state = {k: v.clone() for k, v in runs[0].method.state_dict().items()}
        torch.save(state, dump / f"rank{os.environ['RANK']}.pt")
    return code


def tiny_overrides(method: str) -> dict:
    options = {"energy_net": {"kind": "mlp", "hidden": 32, "depth": 2}, **TINY[method]}
    if method == "gebm":
        options["init_log_partition_batches"] = 2  # GEBM's c, a weight set from random draws
    return {
        "method": options,
        "data": {"n_train": 256, "batch_size": 32},
        "train": {"device": "cpu", "sample_every": 0, "ema_decay": 0.0},
    }


TABLE_RUN = "cd on a table"  # cd_tabular: MALA chains whose step is adapted on each process


def dump_table_run(dump: Path) -> dict:
    """cd's weights and adapted step after 4 steps on a 3-column table."""
    table = np.random.default_rng(0).normal(size=(256, 3)).astype(np.float32)
    np.save(dump / "table.npy", table)
    overrides = tiny_overrides("cd")
    overrides["method"] = {"energy_net": overrides["method"]["energy_net"], "buffer_size": 64}
    run = ebmlab.train(
        "cd",
        dump / "table.npy",
        steps=4,
        out=dump / "table",
        overrides=overrides,
        evaluate=False,
        progress=False,
    )
    state = {k: p.detach().clone() for k, p in run.method.named_parameters()}
    return state | {"chain.adapter.log_step": run.method.chain.adapter.log_step.clone()}


def dump_methods(dump: Path) -> int:
    weights = {}
    for name in METHODS:
        run = ebmlab.train(
            name,
            "8gaussians",
            steps=4,
            out=dump / name,
            overrides=tiny_overrides(name),
            evaluate=False,
            progress=False,
        )
        weights[name] = {k: p.detach().clone() for k, p in run.method.named_parameters()}
    weights[TABLE_RUN] = dump_table_run(dump)
    torch.save(weights, dump / f"rank{distributed.rank()}.pt")
    distributed.shutdown()
    return 0


def dump_updates(dump: Path) -> int:
    distributed.init_from_env()
    result = probe_updates(distributed.rank(), distributed.world_size())
    torch.save(result, dump / f"rank{distributed.rank()}.pt")
    distributed.shutdown()
    return 0


if __name__ == "__main__":
    command, dump, *rest = sys.argv[1:]
    if command == "train":
        sys.exit(dump_train(Path(dump), rest))
    sys.exit(dump_methods(Path(dump)) if command == "methods" else dump_updates(Path(dump)))
