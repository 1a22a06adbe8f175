"""The public Python API: `train`, `load`, `evaluate`, and the `Run` / `Model` they return.

Everything here speaks the user's units: `Model.energy(x)` takes data as the user gave it
(pixels 0..255, raw table columns, 2D points) and `Model.sample(n)` returns it so; the scaling
to model units lives inside the model (`Scaler`, saved in every checkpoint).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ebmlab import checkpoints, distributed
from ebmlab.config import (
    DataConfig,
    RunConfig,
    build_dataclass,
    find_preset,
    merge,
    read_user_config,
    read_yaml,
)
from ebmlab.data import Dataset, load_dataset
from ebmlab.data.scaling import Scaler
from ebmlab.defaults import resolve_auto
from ebmlab.errors import EbmlabError
from ebmlab.methods import Method, get_method
from ebmlab.nets import EMA
from ebmlab.train import Trainer

DataSpec = str | os.PathLike | np.ndarray


class Model:
    """A trained energy-based model, in the user's units."""

    def __init__(self, method: Method, scaler: Scaler, data_kind: str):
        self.method = method.eval()  # scoring must not move spectral norm's power iteration
        self.scaler = scaler.to(method.device)
        self.kind = data_kind

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one example in model layout, e.g. (2,) or (1, 28, 28)."""
        return self.method.data_shape

    def to_model_units(self, x: Tensor | np.ndarray) -> Tensor:
        """User-unit inputs in any usual layout -> model units (N, *shape) on the model's device."""
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x)
        x = x.to(self.method.device, torch.float32)
        if len(self.shape) == 3 and x.dim() == 3 and self.shape[0] == 1:
            x = x.unsqueeze(1)  # (N, H, W) greyscale
        if len(self.shape) == 3 and x.dim() == 4 and tuple(x.shape[1:]) != self.shape:
            x = x.permute(0, 3, 1, 2)  # (N, H, W, C) as images are usually stored
        if tuple(x.shape[1:]) != self.shape:
            raise EbmlabError(
                f"inputs have shape {tuple(x.shape)}; this model expects (N, *{self.shape})"
            )
        return self.scaler.to_model(x)

    def energy(self, x: Tensor | np.ndarray, batch_size: int = 4096) -> Tensor:
        """Energy per example (lower = more likely), as a CPU tensor of shape (N,)."""
        x = self.to_model_units(x)
        with torch.no_grad():
            parts = [self.method.energy(chunk) for chunk in x.split(batch_size)]
        return torch.cat(parts).cpu()

    def sample(self, n: int, seed: int | None = None, batch_size: int = 1000) -> Tensor:
        """n samples by the method's own procedure, in user units, as a CPU tensor."""
        if seed is not None:
            torch.manual_seed(seed)
        sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
        parts = [self.scaler.to_user(self.method.sample(size)).detach().cpu() for size in sizes]
        return torch.cat(parts)


@dataclass
class Run:
    """A run directory and what was trained in it."""

    path: Path
    config: RunConfig
    model: Model
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def method(self) -> Method:
        return self.model.method


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise EbmlabError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EbmlabError(f"device {name} was asked for but this torch build sees no GPU; use cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        last = torch.cuda.device_count() - 1
        raise EbmlabError(f"device {name} does not exist; this machine has cuda:0 to cuda:{last}")
    return device


def data_label(data: DataSpec) -> str:
    return "array" if isinstance(data, np.ndarray) else str(data)


def resolve_config(
    method: str,
    dataset: Dataset,
    data: DataSpec,
    config: str | Path | None,
    overrides: dict[str, Any] | None,
) -> RunConfig:
    """Method defaults < preset < user YAML < overrides; method options are validated here."""
    tree: dict[str, Any] = {"method": {"name": method}}
    preset = find_preset(method, dataset.name, dataset.kind)
    user_config = read_user_config(config)
    for layer in (read_yaml(preset) if preset else {}, user_config):
        tree = merge(tree, layer)
    # the data that was loaded names the run, whatever a file says
    tree = merge(tree, merge(overrides or {}, {"data": {"name": data_label(data)}}))
    user_method = merge(user_config.get("method") or {}, (overrides or {}).get("method") or {})
    tree["method"] = resolve_auto(tree["method"], user_method, dataset.train)
    run_config = RunConfig.from_dict(tree)
    build_method_config(run_config)
    return run_config


def build_method_config(run_config: RunConfig) -> Any:
    cls = get_method(run_config.method)
    return build_dataclass(cls.Config, run_config.method_params, "method")


def default_run_dir(method: str, data: DataSpec) -> Path:
    stem = "array" if isinstance(data, np.ndarray) else Path(str(data)).stem or "data"
    base = Path("runs") / f"{method}_{stem}"
    candidate, index = base, 1
    while candidate.exists():
        index += 1
        candidate = base.with_name(f"{base.name}-{index}")
    return candidate


def new_run_dir(method: str, data: DataSpec, out: str | Path | None) -> Path:
    """`out`, or a fresh `runs/<method>_<data>`; never a directory that already holds a run."""
    run_dir = Path(out) if out is not None else default_run_dir(method, data)
    if (run_dir / "config.yaml").exists():
        raise EbmlabError(
            f"{run_dir} already holds a run; pass resume=True (--resume) or another out"
        )
    return run_dir


def read_resumable(run_dir: Path) -> dict[str, Any]:
    """The saved config of a run that has a checkpoint to resume from: checked before anything
    is written, so a run that cannot resume is left as it was."""
    if not checkpoints.paths(run_dir):
        raise EbmlabError(f"nothing to resume: {run_dir} holds no checkpoints/step_*.pt")
    return read_yaml(run_dir / "config.yaml")


def train(
    method: str,
    data: DataSpec = "8gaussians",
    *,
    steps: int | None = None,
    out: str | Path | None = None,
    config: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    seed: int | None = None,
    device: str | None = None,
    resume: bool = False,
    evaluate: bool = True,
    progress: bool = True,
) -> Run:
    """Train `method` on `data` and write a run directory; returns the trained `Run`.

    Args:
        method: a registered method name (see `ebmlab.methods.METHODS`).
        data: a bundled dataset name, a path (.npy/.npz/.csv/image folder) or an array.
        steps: training iterations (default: the preset's, else 3000).
        out: the run directory (default: a fresh `runs/<method>_<data>`). An existing run is
            never overwritten: pass `resume=True` to continue it.
        config: a YAML file with method/data/train sections, or a preset's name (see
            `ebmlab info`), layered over the preset the data picks.
        overrides: nested options, e.g. {"method": {"lr": 1e-4}}, applied last.
        seed, device: shortcuts for train.seed and train.device.
        resume: continue the run in `out` from its last checkpoint (its saved config is used;
            `steps` may extend it).
        evaluate: compute the final metrics and write report.md.
        progress: show the progress bar.

    Under `torchrun --nproc_per_node=N` the N processes train one model together (see
    `ebmlab.distributed`): `data.batch_size` is the batch of all of them, and only rank 0
    writes the run directory and evaluates; the others return a `Run` without metrics.
    """
    distributed.init_from_env()
    shortcuts = {
        "train": {
            k: v for k, v in (("steps", steps), ("seed", seed), ("device", device)) if v is not None
        }
    }
    if resume:
        if out is None:
            raise EbmlabError("resume needs the run directory: pass out=... (--out)")
        run_dir = Path(out)
        saved_tree = distributed.decided_on_main(lambda: read_resumable(run_dir))
        saved = RunConfig.from_dict(saved_tree)
        if saved.method != method:
            raise EbmlabError(f"{run_dir} holds a {saved.method!r} run, not {method!r}")
        run_config = RunConfig.from_dict(merge(saved.to_dict(), merge(overrides or {}, shortcuts)))
        dataset = load_run_data(run_config)
    else:
        run_dir = distributed.decided_on_main(lambda: new_run_dir(method, data, out))
        get_method(method)  # an unknown method fails before any data is loaded
        data_options = merge(
            read_user_config(config).get("data") or {},
            (overrides or {}).get("data") or {},
        )
        data_config = build_dataclass(DataConfig, data_options, "data")
        dataset = load_dataset(
            data, n_train=data_config.n_train, seed=data_config.seed, classes=data_config.classes
        )
        run_config = resolve_config(
            method, dataset, data, config, merge(overrides or {}, shortcuts)
        )
    torch.manual_seed(run_config.train.seed)  # network initialisation repeats per seed
    method_obj = get_method(method)(build_method_config(run_config), dataset.shape)
    trainer = Trainer(
        method_obj,
        dataset,
        run_config,
        run_dir,
        distributed.local_device(resolve_device(run_config.train.device)),
        progress=progress,
    )
    trainer.fit(resume=resume)  # writes config.yaml once the checks and a resume's restore pass
    for name, ema in trainer.emas.items():
        ema.copy_to(getattr(method_obj, name))  # training is over: keep the averaged weights
    run = Run(run_dir, run_config, Model(method_obj, dataset.scaler, dataset.kind))
    if evaluate and distributed.is_main():
        evaluate_run(run, dataset)
    return run


def load(path: str | Path, device: str = "auto") -> Run:
    """Load a run directory for sampling, scoring and evaluation (EMA weights when trained so)."""
    run_dir = Path(path)
    if not checkpoints.paths(run_dir):
        raise EbmlabError(f"{run_dir} is not a trained run: it holds no checkpoints/step_*.pt")
    run_config = RunConfig.from_dict(read_yaml(run_dir / "config.yaml"))
    target = resolve_device(device)
    payload, _ = checkpoints.read_latest(run_dir, map_location=target)
    method = get_method(run_config.method)(
        build_method_config(run_config), tuple(payload["data_shape"])
    )
    method.load_state_dict(payload["method"])
    for name, ema_state in payload["ema"].items():
        ema = EMA(getattr(method, name), run_config.train.ema_decay, record_inputs=False)
        ema.load_state_dict(ema_state)
        ema.copy_to(getattr(method, name))
    scaler = Scaler(payload["scaler"]["shift"], payload["scaler"]["scale"])
    model = Model(method.to(target), scaler, payload["data_kind"])
    metrics_file = run_dir / "eval.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    return Run(run_dir, run_config, model, metrics)


def evaluate_run(
    run: Run,
    dataset: Dataset | None = None,
    *,
    fid: bool = False,
    ood: list[str] | dict[str, Tensor | np.ndarray] | None = None,
    n_samples: int | None = None,
    report: bool = True,
) -> dict[str, float]:
    """The metrics that fit the data (see `ebmlab.metrics.evaluate`), saved to eval.json, and
    the run's report.md written anew with them (unless `report=False`).

    Args:
        run: A trained run.
        dataset: Evaluate on this dataset instead of the run's own.
        fid: Also the Inception FID (images).
        ood: OOD set names for `auroc/<name>` (see `ebmlab.tasks.ood`): derived sets such as
            "noise", "flipped", "textures", "off-data", dataset names, paths, or "standard"
            for every set that suits the data; or a dict of name -> your own OOD examples, in
            your units. The report then shows their energies.
        n_samples: Model samples for the sample-based metrics.
        report: Write report.md and its figures (which draw samples again).
    """
    from ebmlab.metrics import evaluate as evaluate_metrics
    from ebmlab.report import write_report
    from ebmlab.tasks.ood import ood_set, standard_ood_sets

    if dataset is None:
        dataset = dataset_of(run)
    if dataset.shape != run.model.shape:
        raise EbmlabError(
            f"{dataset.name} has examples of shape {dataset.shape}, the model's data "
            f"{run.model.shape}; evaluate it on data of its shape"
        )
    if isinstance(ood, dict):
        ood_sets = {name: run.model.to_model_units(points).cpu() for name, points in ood.items()}
    else:
        names = [
            n
            for name in ood or []
            for n in (standard_ood_sets(dataset) if name == "standard" else [name])
        ]
        ood_sets = {name: ood_set(name, dataset, seed=run.config.train.seed) for name in names}
    n = n_samples or run.config.train.eval_samples
    metrics = evaluate_metrics(
        run.method, dataset, n_samples=n, fid=fid, ood=ood_sets or None, seed=run.config.train.seed
    )
    run.metrics = metrics
    (run.path / "eval.json").write_text(json.dumps(metrics, indent=2))
    if report:
        history = read_history(run.path)
        write_report(run.path, run.method, run.config, dataset, metrics, history, ood_sets)
    return metrics


def compose(runs: list, weights: list[float] | None = None):
    """A product of experts: the runs' energies summed with `weights` (default all 1).

    Args:
        runs: `Run`s, `Model`s or run directories, of data of one shape; the first one's
            sampler (e.g. ICD's Algorithm 2) samples the composition.
        weights: One exponent per run.

    Returns:
        An `ebmlab.tasks.Composition` with `energy(x)` and `sample(n, seed)` in user units.
    """
    from ebmlab.tasks.compose import Composition

    def as_model(run: Run | Model | str | Path) -> Model:
        if isinstance(run, Model):
            return run
        return (run if isinstance(run, Run) else load(run)).model

    return Composition([as_model(run) for run in runs], weights)


def read_history(run_dir: Path) -> list[dict[str, float]]:
    """The rows of a run's metrics.jsonl (empty when it has none)."""
    log = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []


def dataset_of(run: Run) -> Dataset:
    name = run.config.data.name
    if name == "array":
        raise EbmlabError("this run was trained on an in-memory array: pass the data again")
    return load_run_data(run.config)


def load_run_data(config: RunConfig) -> Dataset:
    """The dataset a run's config names, split, subsampled and restricted as it says."""
    data = config.data
    return load_dataset(data.name, n_train=data.n_train, seed=data.seed, classes=data.classes)
