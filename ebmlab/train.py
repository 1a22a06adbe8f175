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

Nothing is lost (`ebmlab.checkpoints`): the newest `train.keep_checkpoints` checkpoints are
kept, each checksummed and written atomically, and a corrupted one falls back to the one before.
SIGINT or SIGTERM ends the step in flight, writes a checkpoint and raises `TrainingInterrupted`.
A non-finite log or a mean energy past `train.energy_bound` is a divergence: the run rolls back
to its newest checkpoint (one is written at step 0), multiplies every learning rate by
`train.divergence_lr_factor`, notes it in `train.log` and goes on; a second divergence stops it.

`train.lr_schedule: exponential` multiplies every optimiser's learning rate by `train.lr_decay`
after each epoch (torch's ExponentialLR, one scheduler per optimiser, saved in checkpoints).
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor
from tqdm.auto import tqdm

from ebmlab import checkpoints, distributed
from ebmlab.config import RunConfig, TrainConfig
from ebmlab.data import Dataset
from ebmlab.errors import EbmlabError
from ebmlab.methods import Method
from ebmlab.nets import EMA
from ebmlab.samplers import compiled_langevin

clock = time.perf_counter  # training time; a test swaps in a fake clock


class TrainingDiverged(EbmlabError):
    """A logged loss or energy became NaN or infinite."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training after a checkpoint was written."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        kept = f"checkpoint {checkpoint}" if checkpoint else "no checkpoint"
        super().__init__(
            f"{signal.Signals(signum).name} stopped training at step {step}; {kept}; "
            "continue with --resume (resume=True)"
        )


class StopSignals:
    """Records SIGINT/SIGTERM while installed (main thread only) instead of dying mid-step;
    a second signal acts as it would have without this."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {n: signal.signal(n, self._handle) for n in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


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


def averaged_modules(method: Method, cfg: TrainConfig) -> tuple[str, ...]:
    """The networks whose weights an EMA averages: none while `ema_decay` is 0, else
    `ema_modules`, or every network the method lists when that is None. Averaging only a
    generator keeps the energy live: a sampler's average need not be the density's."""
    chosen = method.ema_modules if cfg.ema_modules is None else tuple(cfg.ema_modules)
    unknown = sorted(set(chosen) - set(method.ema_modules))
    if unknown:
        raise EbmlabError(
            f"train.ema_modules {unknown} are not networks of this method; "
            f"choose among {', '.join(method.ema_modules)}"
        )
    return chosen if cfg.ema_decay > 0 else ()


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
            for name in averaged_modules(method, self.cfg)
        }
        self._epoch_perm: tuple[int, Tensor] | None = None
        self.health = torch.ones((), dtype=torch.bool, device=device)  # no divergence seen since
        self.divergences = 0  # rollbacks so far (one is allowed)
        self.log: MetricsLog | None = None
        self._tick = (0.0, 0)  # (clock, step) of the last logged row, for it_per_s
        self.schedulers = {
            name: torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=self.cfg.lr_decay)
            for name, optimizer in method.optimizers.items()
            if self.cfg.lr_schedule == "exponential"
        }

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_data) // self.batch_size

    def batch(self, step: int) -> Tensor:
        """The batch of iteration `step`: a seeded permutation per epoch, no state to save."""
        epoch, position = divmod(step, self.steps_per_epoch)
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
            "schedulers": {name: s.state_dict() for name, s in self.schedulers.items()},
            "ema": {name: ema.state_dict() for name, ema in self.emas.items()},
            "scaler": self.dataset.scaler.state_dict(),
            "rng": rng_state(),
            "divergences": self.divergences,
            "processes": 1 + len(other_processes),
            "other_processes": other_processes,
            "torch_version": str(torch.__version__),
        }

    def process_state(self) -> dict[str, Any]:
        """What this process holds apart from the others, on the CPU: the method's buffers
        (replay-buffer chains, BatchNorm statistics) and the RNG state."""
        weights = {name for name, _ in self.method.named_parameters()}
        state = self.method.state_dict()
        buffers = {key: value.cpu() for key, value in state.items() if key not in weights}
        return {"buffers": buffers, "rng": rng_state()}

    def save_checkpoint(self, step: int) -> Path | None:
        """Rank 0 writes the checkpoint, with every other process's own state gathered into it,
        and returns its path (None on the other ranks)."""
        other_processes = []
        if distributed.is_distributed():
            states = distributed.gather_on_main(self.process_state())
            if not distributed.is_main():
                return None
            other_processes = states[1:]
        payload = self.checkpoint_payload(step, other_processes)
        return checkpoints.write(payload, self.run_dir, step, self.cfg.keep_checkpoints)

    def restore(self) -> int:
        """Load the run's newest intact checkpoint; returns the step to continue from.

        Rank 0 reads it (a corrupted newer one is noted and skipped) and hands it to the others;
        each process takes back its own buffers and RNG state, so a run resumes only with the
        number of processes that wrote it."""
        payload = distributed.decided_on_main(
            lambda: checkpoints.read_latest(self.run_dir, report=self.note)[0]
        )
        processes, rank = payload.get("processes", 1), distributed.rank()
        if processes != distributed.world_size():
            raise EbmlabError(
                f"{self.run_dir} was written by {processes} process(es), each with its own "
                f"replay buffer and RNG state; resume it with {processes} (torchrun "
                f"--nproc_per_node), not {distributed.world_size()}"
            )
        method_state, rng = payload["method"], payload["rng"]
        if rank:
            own = payload["other_processes"][rank - 1]
            method_state, rng = method_state | own["buffers"], own["rng"]
        self.method.load_state_dict(method_state)
        self.method.load_optimizer_state(payload["optimizers"])
        saved_schedules = payload.get("schedulers", {})  # none before the run had a schedule
        for name, scheduler in self.schedulers.items():
            if name in saved_schedules:
                scheduler.load_state_dict(saved_schedules[name])
        for name, ema in self.emas.items():
            ema.load_state_dict(payload["ema"][name])
        set_rng_state(rng)
        self.divergences = payload["divergences"]
        return int(payload["step"])

    def fit(
        self, resume: bool = False, stop_early: Callable[[int], bool] | None = None
    ) -> list[dict[str, float]]:
        """Train to `steps` or `max_seconds`; returns the logged rows (also in metrics.jsonl).

        Training time is the `wall_s` of metrics.jsonl: a resumed run counts its earlier time,
        so a time budget spans interruptions, and nothing spent outside this loop counts.
        `stop_early(step)` is called after every iteration, its EMA update done; True ends the
        run there as reaching `steps` would (a last log row and checkpoint)."""
        if resume:
            step = self.restore()
            if step > self.cfg.steps:
                raise EbmlabError(
                    f"{self.run_dir} is at step {step}, past train.steps={self.cfg.steps}: "
                    f"resume with --steps {step} or more"
                )
        else:
            # identical weights came from one seed; from here each process draws its own noise
            torch.manual_seed(self.cfg.seed + distributed.rank())
            step = 0
        main = distributed.is_main()
        if main:  # only now: a refused run or resume leaves its directory as it was
            self.run_dir.mkdir(parents=True, exist_ok=True)
            config = yaml.safe_dump(self.config.to_dict(), sort_keys=False)
            (self.run_dir / "config.yaml").write_text(config)
        if not resume:
            self.save_checkpoint(step)  # the divergence guard's first point to roll back to
        self.log = MetricsLog(self.run_dir / "metrics.jsonl", keep_up_to=step) if main else None
        bar = tqdm(
            total=self.cfg.steps,
            initial=step,
            desc=f"{self.config.method} on {self.dataset.name}",
            disable=not (self.progress and main),
            dynamic_ncols=True,
            mininterval=0.1 if sys.stderr.isatty() else 10.0,  # logs and CI: a line every 10 s
        )
        self._tick = (clock(), step)
        rows = self.log.rows if self.log is not None else []
        wall_start = self._tick[0] - (rows[-1]["wall_s"] if rows else 0.0)
        if self._out_of_time(wall_start):
            step = self.cfg.steps
        with StopSignals() as signals:
            while step < self.cfg.steps:
                with self.speed_options():
                    logs = self.method.train_step(self.shard(step), step)
                self._watch(logs)
                for name, ema in self.emas.items():
                    ema.update(getattr(self.method, name))
                step += 1
                if step % self.steps_per_epoch == 0:
                    for scheduler in self.schedulers.values():
                        scheduler.step()
                bar.update(1)
                stopped = stop_early is not None and stop_early(step)
                last = stopped or step == self.cfg.steps or self._out_of_time(wall_start)
                if step % self.cfg.log_every == 0 or last:
                    # a row describes the global batch: the processes' logs averaged
                    logs = dict(zip(logs, distributed.average(list(logs.values())), strict=True))
                    if not self._healthy():
                        step = bar.n = self._roll_back(step, logs)
                        continue
                    bar.set_postfix(loss=f"{self._log_row(step, logs, wall_start):.4g}")
                if main and self.cfg.sample_every and step % self.cfg.sample_every == 0:
                    self.preview(step)
                if self._stop_requested(signals):
                    self._stop(signals.received or signal.SIGTERM, step)
                if step % self.cfg.ckpt_every == 0 or last:
                    if not self._healthy():
                        step = bar.n = self._roll_back(step, logs)
                        continue
                    self.save_checkpoint(step)
                if last:
                    break
        bar.close()
        return rows

    def _watch(self, logs: dict[str, Tensor]) -> None:
        """Fold this step's logs into the health flag, on the device (no sync per step)."""
        bound = self.cfg.energy_bound
        for name, value in logs.items():
            self.health &= torch.isfinite(value).all()
            if bound is not None and name.startswith("e_"):  # mean energies: e_pos, e_data, ...
                self.health &= (value.abs() <= bound).all()

    def _healthy(self) -> bool:
        return bool(distributed.all_true(self.health))  # all processes roll back together

    def _log_row(self, step: int, logs: dict[str, Tensor], wall_start: float) -> float:
        """Append the row of `step` to metrics.jsonl (rank 0); returns its loss."""
        now = clock()
        row = {k: float(v) for k, v in logs.items()}
        row |= {
            "step": step,
            "it_per_s": (step - self._tick[1]) / max(now - self._tick[0], 1e-9),
            "wall_s": now - wall_start,
        }
        self._tick = (now, step)
        if self.log is not None:
            self.log.write(row)
        return row["loss"]

    def _roll_back(self, step: int, logs: dict[str, Tensor]) -> int:
        """Handle a divergence seen by `step`: the first time, go back to the newest checkpoint
        and lower every learning rate; the second time, stop. Returns the step to go on from."""
        values = ", ".join(f"{k}={float(v):.3g}" for k, v in logs.items())
        newest = checkpoints.paths(self.run_dir)[:1]
        if self.divergences:
            kept = f"the last good checkpoint is kept at {newest[0]}" if newest else ""
            raise TrainingDiverged(
                f"training diverged again by step {step} ({values}), after its learning rate "
                f"was already lowered once; {kept}. Lower the learning rate or the Langevin "
                "step size further and train again."
            )
        restored = self.restore()
        self.divergences = 1
        factor = self.cfg.divergence_lr_factor
        for optimizer in self.method.optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] *= factor
        self.health.fill_(True)
        if self.log is not None:
            self.log.truncate(restored)
        rates = ", ".join(
            f"{name} {optimizer.param_groups[0]['lr']:.3g}"
            for name, optimizer in self.method.optimizers.items()
        )
        self.note(
            f"training diverged by step {step} ({values}); rolled back to step {restored} and "
            f"multiplied every learning rate by {factor} (now {rates}); a second divergence "
            "stops the run"
        )
        self._tick = (clock(), restored)
        return restored

    def _stop_requested(self, signals: StopSignals) -> bool:
        """Whether any process received SIGINT/SIGTERM (all stop at the same step)."""
        return distributed.any_process(signals.received is not None)

    def _stop(self, signum: int, step: int) -> None:
        """Write the checkpoint of `step` (when healthy) and raise TrainingInterrupted."""
        saved = self.save_checkpoint(step) if self._healthy() else None
        if distributed.is_main():
            saved = saved or next(iter(checkpoints.paths(self.run_dir)), None)
            self.note(f"{signal.Signals(signum).name} received; stopped at step {step}")
        raise TrainingInterrupted(signum, step, saved)

    def note(self, message: str) -> None:
        """An event worth keeping (a rollback, a skipped checkpoint): a line in the run's
        train.log, and on stderr."""
        if not distributed.is_main():
            return
        with (self.run_dir / "train.log").open("a") as handle:
            handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        tqdm.write(f"ebmlab: {message}", file=sys.stderr)

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

    def preview(self, step: int) -> None:
        """Save a picture of samples, drawn from a forked RNG so training is unaffected."""
        from ebmlab.report import save_samples_figure

        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), self.evaluation_weights():
            torch.manual_seed(self.cfg.seed + step)
            samples = self.method.sample(64 if self.dataset.kind == "image" else 1000)
        save_samples_figure(samples.cpu(), self.dataset, self.run_dir / f"samples/step_{step}.png")


class MetricsLog:
    """metrics.jsonl: one JSON row per log step; on resume, rows past the checkpoint are dropped."""

    def __init__(self, path: Path, keep_up_to: int):
        self.path = path
        self.rows: list[dict[str, float]] = []
        if path.is_file():
            self.rows = [json.loads(line) for line in path.read_text().splitlines()]
        path.parent.mkdir(parents=True, exist_ok=True)
        self.truncate(keep_up_to)

    def truncate(self, step: int) -> None:
        """Keep only the rows up to `step` (in place: a caller's reference to `rows` holds)."""
        self.rows[:] = [row for row in self.rows if row["step"] <= step]
        self.path.write_text("".join(json.dumps(row) + "\n" for row in self.rows))

    def write(self, row: dict[str, float]) -> None:
        self.rows.append(row)
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
