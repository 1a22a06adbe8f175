"""The Trainer: loop, progress, logging, EMA, previews, checkpoints, resume, divergence guard.

It knows nothing about any one method: it calls `method.train_step(x, step)` and reads back a
dict of tensors, converting them to floats only when it logs (no per-step device sync).

Exact resume: the batch order is a pure function of (seed, step), the global torch RNG state is
saved with every checkpoint, and previews draw from a forked RNG, so a run resumed from step k
repeats, bit for bit on CPU, what the uninterrupted run did after step k.

Under torchrun (`ebmlab.distributed`) each process trains on its own rows of every batch with
its own RNG stream and its own module buffers (replay-buffer chains), while `Method.update`
keeps the weights identical. Rank 0 alone logs, previews and writes checkpoints, which carry
the other processes' buffers and RNG states, so a resume with as many processes is as exact.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ebmlab import distributed
from ebmlab.config import RunConfig, TrainConfig
from ebmlab.data import Dataset
from ebmlab.errors import EbmlabError
from ebmlab.methods import Method
from ebmlab.nets import EMA
from ebmlab.samplers import compiled_langevin

CHECKPOINT = "checkpoints/last.pt"

clock = time.perf_counter  # training time; a test swaps in a fake clock


class TrainingDiverged(EbmlabError):
    """A logged loss or energy became NaN or infinite."""


def atomic_save(payload: Any, path: Path) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves a broken file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore `rng_state()`; the states are host tensors even if a checkpoint was loaded with
    map_location on a GPU."""
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def check_speed_options(cfg: TrainConfig, dataset: Dataset, device: torch.device) -> None:
    if cfg.amp == "bf16" and device.type != "cuda":
        raise EbmlabError("train.amp=bf16 needs a CUDA device; on a CPU train in float32")
    if cfg.channels_last and len(dataset.shape) != 3:
        raise EbmlabError(f"train.channels_last needs image data, got shape {dataset.shape}")


class Trainer:
    """Runs `config.train.steps` iterations of a method on a dataset, into `run_dir`, or fewer
    when `config.train.max_seconds` of training time run out first."""

    def __init__(
        self,
        method: Method,
        dataset: Dataset,
        config: RunConfig,
        run_dir: str | Path,
        device: torch.device,
        progress: bool = True,
    ):
        self.cfg = config.train
        check_speed_options(self.cfg, dataset, device)
        layout = torch.channels_last if self.cfg.channels_last else torch.preserve_format
        self.method = method.to(device, memory_format=layout)
        self.dataset = dataset
        self.config = config
        self.run_dir = Path(run_dir)
        self.device = device
        self.progress = progress
        # in-memory data lives on the device and batches are taken by index: no loader workers
        self.train_data = dataset.train.to(device)
        if self.cfg.channels_last:
            self.train_data = self.train_data.contiguous(memory_format=torch.channels_last)
        self.batch_size = min(config.data.batch_size, len(self.train_data))
        processes = distributed.world_size()
        if self.batch_size % processes:
            raise EbmlabError(
                f"data.batch_size {self.batch_size} is the batch of all processes together: "
                f"make it a multiple of the {processes} processes"
            )
        self.emas = {
            name: EMA(getattr(method, name), self.cfg.ema_decay)
            for name in method.ema_modules
            if self.cfg.ema_decay > 0
        }
        self._epoch_perm: tuple[int, Tensor] | None = None

    def batch(self, step: int) -> Tensor:
        """The batch of iteration `step`: a seeded permutation per epoch, no state to save."""
        per_epoch = len(self.train_data) // self.batch_size
        epoch, position = divmod(step, per_epoch)
        if self._epoch_perm is None or self._epoch_perm[0] != epoch:
            generator = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
            perm = torch.randperm(len(self.train_data), generator=generator)
            self._epoch_perm = (epoch, perm.to(self.device))
        start = position * self.batch_size
        return self.train_data[self._epoch_perm[1][start : start + self.batch_size]]

    def shard(self, step: int) -> Tensor:
        """This process's rows of `batch(step)`: N processes take one contiguous N-th each, so
        together they train on the batch a single process would."""
        size = self.batch_size // distributed.world_size()
        start = distributed.rank() * size
        return self.batch(step)[start : start + size]

    @contextlib.contextmanager
    def evaluation_weights(self) -> Iterator[None]:
        """EMA weights (when EMA is on) in eval mode, for previews: spectral norm's power
        iteration must not move while a preview is drawn."""
        with contextlib.ExitStack() as stack:
            for name, ema in self.emas.items():
                stack.enter_context(ema.swapped(getattr(self.method, name)))
            self.method.eval()
            try:
                yield
            finally:
                self.method.train()

    def checkpoint_payload(
        self, step: int, other_processes: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """Everything a resume needs; `other_processes` are ranks 1.. `process_state()`s (rank
        0's buffers and RNG state are those in `method` and `rng`)."""
        other_processes = other_processes or []
        return {
            "step": step,
            "config": self.config.to_dict(),
            "data_shape": list(self.dataset.shape),
            "data_kind": self.dataset.kind,
            "method": self.method.state_dict(),
            "optimizers": self.method.optimizer_state(),
            "ema": {name: ema.state_dict() for name, ema in self.emas.items()},
            "scaler": self.dataset.scaler.state_dict(),
            "rng": rng_state(),
            "processes": 1 + len(other_processes),
            "other_processes": other_processes,
            "torch_version": torch.__version__,
        }

    def process_state(self) -> dict[str, Any]:
        """What this process holds apart from the others, on the CPU: the method's buffers
        (replay-buffer chains, BatchNorm statistics) and the RNG state."""
        weights = {name for name, _ in self.method.named_parameters()}
        state = self.method.state_dict()
        buffers = {key: value.cpu() for key, value in state.items() if key not in weights}
        return {"buffers": buffers, "rng": rng_state()}

    def save_checkpoint(self, step: int) -> None:
        """Rank 0 writes the checkpoint, with every other process's own state gathered into it."""
        other_processes = []
        if distributed.is_distributed():
            states = distributed.gather_on_main(self.process_state())
            if not distributed.is_main():
                return
            other_processes = states[1:]
        atomic_save(self.checkpoint_payload(step, other_processes), self.run_dir / CHECKPOINT)

    def restore(self, path: Path) -> int:
        """Load a checkpoint written by this Trainer; returns the step to continue from.

        Rank 0 reads it and hands it to the others; each process takes back its own buffers
        and RNG state, so a run resumes only with the number of processes that wrote it."""
        payload = distributed.decided_on_main(lambda: read_checkpoint(path))
        processes, rank = payload.get("processes", 1), distributed.rank()
        if processes != distributed.world_size():
            raise EbmlabError(
                f"{path} was written by {processes} process(es), each with its own replay "
                f"buffer and RNG state; resume it with {processes} (torchrun --nproc_per_node), "
                f"not {distributed.world_size()}"
            )
        method_state, rng = payload["method"], payload["rng"]
        if rank:
            own = payload["other_processes"][rank - 1]
            method_state, rng = method_state | own["buffers"], own["rng"]
        self.method.load_state_dict(method_state)
        self.method.load_optimizer_state(payload["optimizers"])
        for name, ema in self.emas.items():
            ema.load_state_dict(payload["ema"][name])
        set_rng_state(rng)
        return int(payload["step"])

    def fit(self, resume: bool = False) -> list[dict[str, float]]:
        """Train to `steps` or `max_seconds`; returns the logged rows (also in metrics.jsonl).

        Training time is the `wall_s` of metrics.jsonl: a resumed run counts its earlier time,
        so a time budget spans interruptions, and nothing spent outside this loop counts."""
        start = 0
        if resume:
            start = self.restore(self.run_dir / CHECKPOINT)
        else:
            # identical weights came from one seed; from here each process draws its own noise
            torch.manual_seed(self.cfg.seed + distributed.rank())
        main = distributed.is_main()
        log = MetricsLog(self.run_dir / "metrics.jsonl", keep_up_to=start) if main else None
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        bar = tqdm(
            total=self.cfg.steps,
            initial=start,
            desc=f"{self.config.method} on {self.dataset.name}",
            disable=not (self.progress and main),
            dynamic_ncols=True,
            mininterval=0.1 if sys.stderr.isatty() else 10.0,  # logs and CI: a line every 10 s
        )
        tick, tick_step = clock(), start
        wall_start = tick - (log.rows[-1]["wall_s"] if log is not None and log.rows else 0.0)
        first = start if not self._out_of_time(wall_start) else self.cfg.steps
        for step in range(first, self.cfg.steps):
            with self.speed_options():
                logs = self.method.train_step(self.shard(step), step)
            for value in logs.values():
                finite &= torch.isfinite(value).all()
            for name, ema in self.emas.items():
                ema.update(getattr(self.method, name))
            done = step + 1
            bar.update(1)
            last = done == self.cfg.steps or self._out_of_time(wall_start)
            if done % self.cfg.log_every == 0 or last:
                # a row describes the global batch: the processes' logs averaged
                logs = dict(zip(logs, distributed.average(list(logs.values())), strict=True))
                self._guard(finite, done, logs)
                now = clock()
                row = {k: float(v) for k, v in logs.items()}
                row |= {
                    "step": done,
                    "it_per_s": (done - tick_step) / max(now - tick, 1e-9),
                    "wall_s": now - wall_start,
                }
                tick, tick_step = now, done
                if log is not None:
                    log.write(row)
                bar.set_postfix(loss=f"{row['loss']:.4g}", refresh=False)
            if main and self.cfg.sample_every and done % self.cfg.sample_every == 0:
                self.preview(done)
            if done % self.cfg.ckpt_every == 0 or last:
                self._guard(finite, done, logs)
                self.save_checkpoint(done)
            if last:
                break
        bar.close()
        return log.rows if log is not None else []

    @contextlib.contextmanager
    def speed_options(self) -> Iterator[None]:
        """`train.compile` (compiled Langevin steps) and `train.amp` (bfloat16 autocast of the
        forward passes; `Method.update` runs backward outside it) around one train_step."""
        autocast = torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.cfg.amp == "bf16"
        )
        with compiled_langevin(self.cfg.compile), autocast:
            yield

    def _out_of_time(self, wall_start: float) -> bool:
        limit = self.cfg.max_seconds
        # rank 0's clock decides, so that every process stops at the same step
        return limit is not None and distributed.main_says(clock() - wall_start >= limit)

    def _guard(self, finite: Tensor, step: int, logs: dict[str, Tensor]) -> None:
        if bool(distributed.all_true(finite)):  # all processes stop together, or none
            return
        checkpoint = self.run_dir / CHECKPOINT
        kept = (
            f"the last good checkpoint is kept at {checkpoint}"
            if checkpoint.is_file()
            else "no checkpoint was written before it"
        )
        values = ", ".join(f"{k}={float(v):.3g}" for k, v in logs.items())
        raise TrainingDiverged(
            f"training diverged by step {step} ({values}); {kept}. "
            "Lower the learning rate or the Langevin step size and train again."
        )

    def preview(self, step: int) -> None:
        """Save a picture of samples, drawn from a forked RNG so training is unaffected."""
        from ebmlab.report import save_samples_figure

        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), self.evaluation_weights():
            torch.manual_seed(self.cfg.seed + step)
            samples = self.method.sample(64 if self.dataset.kind == "image" else 1000)
        save_samples_figure(samples.cpu(), self.dataset, self.run_dir / f"samples/step_{step}.png")


def read_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise EbmlabError(f"nothing to resume: {path} does not exist")
    # on the CPU: loading copies into the modules, wherever they live
    return torch.load(path, map_location="cpu", weights_only=False)


class MetricsLog:
    """metrics.jsonl: one JSON row per log step; on resume, rows past the checkpoint are dropped."""

    def __init__(self, path: Path, keep_up_to: int):
        self.path = path
        self.rows: list[dict[str, float]] = []
        if path.is_file():
            lines = path.read_text().splitlines()
            self.rows = [r for r in map(json.loads, lines) if r["step"] <= keep_up_to]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in self.rows))

    def write(self, row: dict[str, float]) -> None:
        self.rows.append(row)
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
