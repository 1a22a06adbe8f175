"""Run configuration: three frozen dataclasses, YAML presets and dotted overrides.

Precedence, lowest first: the method's `Config` defaults (the paper's), the preset for the
(method, dataset) pair from `ebmlab/configs/`, a user's YAML file, then command-line overrides
such as `--method.lr=1e-4` or `--train.steps=500`. Unknown keys raise, naming the valid ones.

A preset or run file looks like::

    method: {name: cd, lr: 1.0e-3, langevin_steps: 20}
    data: {name: 8gaussians, batch_size: 256}
    train: {steps: 3000, ema_decay: 0.0}
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ebmlab.errors import EbmlabError

PRESET_DIR = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class DataConfig:
    """Which data and how it is batched."""

    name: str = "8gaussians"  # a bundled name, or a path to .npy/.npz/.csv/an image folder
    batch_size: int = 256
    n_train: int | None = None  # subsample the training split (toy2d: points drawn)
    seed: int = 0  # the train/test split and toy sampling
    classes: tuple[int, ...] | None = None  # keep these labels only: a class-conditional model

    def __post_init__(self):
        check_positive(**{"data.batch_size": self.batch_size})
        check_at_least(**{"data.seed": (self.seed, 0)})  # numpy's generators take no negatives


LR_SCHEDULES = ("constant", "exponential")


@dataclass(frozen=True)
class TrainConfig:
    """The loop around `train_step`: length, logging, EMA, checkpoints, device."""

    steps: int = 3000
    seed: int = 0
    device: str = "auto"  # "auto" picks CUDA when available
    log_every: int = 50
    sample_every: int = 1000  # preview grids/scatters under samples/; 0 = never
    ckpt_every: int = 1000
    ema_decay: float = 0.0  # 0 switches EMA off; evaluation then uses the live weights
    ema_modules: tuple[str, ...] | None = None  # the networks to average; None: all the method's
    eval_samples: int | None = None  # samples drawn for the final metrics; None = per data kind
    max_seconds: float | None = None  # also stop after this much training time (resumes count)
    compile: bool = False  # torch.compile each Langevin step of training (see Langevin)
    amp: str = "none"  # "bf16": forward passes in bfloat16 autocast (CUDA only)
    channels_last: bool = False  # image nets and batches in NHWC memory layout
    keep_checkpoints: int = 3  # the newest k checkpoints are kept; a corrupted one falls back
    energy_bound: float | None = 1e6  # a logged mean energy (e_*) past +-bound is a divergence
    divergence_lr_factor: float = 0.5  # on a first divergence: roll back, lr times this
    # "exponential": every optimiser's lr times lr_decay after each epoch (one pass over the
    # training split), as Dual-MCMC's and BiDVL's code (0.998); "constant": never
    lr_schedule: str = "constant"
    lr_decay: float = 0.998

    def __post_init__(self):
        check_choices(
            **{
                "train.amp": (self.amp, ("none", "bf16")),
                "train.lr_schedule": (self.lr_schedule, LR_SCHEDULES),
            }
        )
        check_positive(
            **{
                "train.steps": self.steps,
                "train.log_every": self.log_every,
                "train.ckpt_every": self.ckpt_every,
                "train.eval_samples": self.eval_samples,
                "train.max_seconds": self.max_seconds,
                "train.energy_bound": self.energy_bound,
                "train.divergence_lr_factor": self.divergence_lr_factor,
                "train.lr_decay": self.lr_decay,
            }
        )
        check_at_least(
            **{
                "train.keep_checkpoints": (self.keep_checkpoints, 1),
                "train.seed": (self.seed, 0),
                "train.sample_every": (self.sample_every, 0),
                "train.ema_decay": (self.ema_decay, 0),
            }
        )
        if not self.ema_decay < 1:
            raise EbmlabError(f"train.ema_decay must be below 1 (0 is off), got {self.ema_decay}")
        if not self.divergence_lr_factor < 1:
            raise EbmlabError(
                f"train.divergence_lr_factor must be below 1, got {self.divergence_lr_factor}"
            )


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; written to `<run>/config.yaml` and read back by `load`."""

    method: str
    method_params: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": {"name": self.method, **self.method_params},
            "data": dataclasses.asdict(self.data),
            "train": dataclasses.asdict(self.train),
        }

    @classmethod
    def from_dict(cls, tree: dict[str, Any]) -> RunConfig:
        unknown = set(tree) - {"method", "data", "train"}
        if unknown:
            raise EbmlabError(
                f"unknown config section(s) {sorted(unknown)}; use method, data, train"
            )
        method = dict(tree.get("method") or {})
        if "name" not in method:
            raise EbmlabError("the config names no method: set method.name (e.g. cd)")
        name = method.pop("name")
        return cls(
            method=name,
            method_params=method,
            data=build_dataclass(DataConfig, tree.get("data") or {}, "data"),
            train=build_dataclass(TrainConfig, tree.get("train") or {}, "train"),
        )


def build_dataclass(cls: type, values: dict[str, Any], section: str) -> Any:
    """Instantiate `cls` from a mapping, coercing types and naming any unknown key."""
    known = {f.name: f for f in fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise EbmlabError(
            f"unknown {section} option(s) {sorted(unknown)}; valid: {', '.join(sorted(known))}"
        )
    hints = typing.get_type_hints(cls)
    return cls(**{k: coerce(v, hints[k], f"{section}.{k}") for k, v in values.items()})


def check_choices(**options: tuple[Any, tuple[Any, ...]]) -> None:
    """Raise EbmlabError naming the first option whose value is not among its allowed ones;
    call as check_choices(name=(value, allowed), ...)."""
    for name, (value, allowed) in options.items():
        if value not in allowed:
            raise EbmlabError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


def check_positive(**options: float | None) -> None:
    """Raise EbmlabError naming the first option that is not above 0 (NaN included); None, an
    option switched off, passes. Call as check_positive(name=value, ...)."""
    for name, value in options.items():
        if value is not None and not value > 0:
            raise EbmlabError(f"{name} must be positive, got {value!r}")


def check_open_unit(**options: float | None) -> None:
    """Raise EbmlabError naming the first option not strictly between 0 and 1 (NaN included);
    None passes. Call as check_open_unit(name=value, ...)."""
    for name, value in options.items():
        if value is not None and not 0 < value < 1:
            raise EbmlabError(f"{name} must lie strictly between 0 and 1, got {value!r}")


def check_at_least(**options: tuple[float | None, float]) -> None:
    """Raise EbmlabError naming the first option below its least allowed value (NaN included);
    None passes. Call as check_at_least(name=(value, least), ...)."""
    for name, (value, least) in options.items():
        if value is not None and not value >= least:
            raise EbmlabError(f"{name} must be at least {least}, got {value!r}")


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Turn YAML/CLI values into the annotated type (str -> float, list -> tuple, ...)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_none and type(None) in typing.get_args(hint):
            return None
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        errors = []
        for option in options:
            try:
                return coerce(value, option, where)
            except EbmlabError as err:
                errors.append(str(err))
        raise EbmlabError(errors[0])
    if origin is tuple:
        items = parse_scalar(value) if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise EbmlabError(f"{where} must be a list such as [1, 2], got {value!r}")
        args = typing.get_args(hint)
        item_type = args[0] if args else Any
        return tuple(coerce(v, item_type, where) for v in items)
    if (origin is dict or hint is dict) and not isinstance(value, dict):
        raise EbmlabError(f"{where} must be a mapping such as {{kind: mlp}}, got {value!r}")
    if origin is dict or hint in (Any, dict):
        return value
    if hint is bool:
        if isinstance(value, str):
            if value.lower() in ("true", "yes", "1", "on"):
                return True
            if value.lower() in ("false", "no", "0", "off"):
                return False
        if isinstance(value, bool):
            return value
        raise EbmlabError(f"{where} must be true or false, got {value!r}")
    if hint in (int, float, str):
        parsed = parse_scalar(value) if isinstance(value, str) else value
        if isinstance(parsed, bool) and hint is not str:  # YAML's yes/true would count as 1
            raise EbmlabError(f"{where} must be {hint.__name__}, got {value!r}")
        try:
            converted = hint(parsed)
        except (TypeError, ValueError, OverflowError):
            raise EbmlabError(f"{where} must be {hint.__name__}, got {value!r}") from None
        if hint is int and isinstance(parsed, float) and parsed != int(parsed):
            raise EbmlabError(f"{where} must be an integer, got {value!r}")
        return converted
    return value


def parse_scalar(text: str) -> Any:
    """Read a CLI value the way YAML would ("1e-3" -> 0.001, "[1, 2]" -> [1, 2])."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise EbmlabError(f"{text!r} is not valid YAML: {err}".splitlines()[0]) from None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise EbmlabError(f"config file {path} does not exist")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise EbmlabError(f"{path} is not a text file; a config is YAML text") from None
    except OSError as err:
        raise EbmlabError(f"cannot read {path}: {err.strerror}") from None
    try:  # safe_load builds plain values only: a tag such as !!python/object is refused
        tree = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise EbmlabError(f"{path} is not valid YAML: {err}".splitlines()[0]) from None
    if not isinstance(tree, dict):
        raise EbmlabError(f"{path} must hold a mapping with method/data/train sections")
    for section, options in tree.items():
        if options is not None and not isinstance(options, dict):
            raise EbmlabError(f"{path}: section {section} must be a mapping, got {options!r}")
    return tree


def read_user_config(config: str | Path | None) -> dict[str, Any]:
    """A user's `--config`: a YAML file, or the name of a preset (e.g. "icd_cifar10")."""
    if config is None:
        return {}
    path = Path(config)
    if not path.is_file() and (PRESET_DIR / f"{config}.yaml").is_file():
        path = PRESET_DIR / f"{config}.yaml"
    if not path.is_file():
        raise EbmlabError(
            f"config {config} is neither a file nor a preset ({', '.join(preset_names())})"
        )
    return read_yaml(path)


# 2D points are a table of two columns: a method without a 2D preset of its own takes its
# preset for tables, whose sampler settings are derived from the data.
KIND_FALLBACK = {"toy2d": "tabular"}


def find_preset(method: str, dataset: str, kind: str) -> Path | None:
    """The preset for this pair: `<method>_<dataset>.yaml` (a file's name without its suffix,
    so cifar10.npz picks icd_cifar10), else `<method>_<kind>.yaml`, else for 2D points
    `<method>_tabular.yaml` (KIND_FALLBACK)."""
    stems = [f"{method}_{dataset}", f"{method}_{Path(dataset).stem}", f"{method}_{kind}"]
    stems += [f"{method}_{KIND_FALLBACK[kind]}"] if kind in KIND_FALLBACK else []
    for stem in stems:
        path = PRESET_DIR / f"{stem}.yaml"
        if path.is_file():
            return path
    return None


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; `extra` wins."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """["method.lr=1e-4", "train.steps=10"] -> {"method": {"lr": 1e-4}, "train": {"steps": 10}}."""
    tree: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.removeprefix("--").partition("=")
        if not sep or "." not in key:
            raise EbmlabError(f"override {pair!r} must look like section.key=value")
        *path, leaf = key.split(".")
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = parse_scalar(text)
    return tree
