"""Tiny method configs shared by the tests."""

from ebmlab.config import build_dataclass
from ebmlab.methods import METHODS

# Small enough to run in milliseconds; each method keeps its own algorithm and defaults otherwise.
TINY = {
    "cd": {
        "langevin_steps": 5,
        "buffer_size": 64,
        "step_size": 0.01,
        "noise": None,
        "init_low": -3.0,
        "init_high": 3.0,
        "sample_steps": 10,
        "alpha": 0.1,
    },
    "shortrun": {"langevin_steps": 5, "step_size": 0.01, "noise": None},
    "dsm": {"sample_steps": 10},
    "icd": {
        "langevin_steps": 4,
        "buffer_size": 64,
        "step_size": 0.01,
        "noise": None,
        "init_low": -3.0,
        "init_high": 3.0,
        "sample_rounds": 2,
        "sample_round_steps": 3,
        "entropy_after": 0,
    },
    "gebm": {
        "z_dim": 2,
        "generator": {"kind": "mlp", "hidden": 32, "depth": 2},
        "energy_steps": 2,
        "warmup_energy_steps": 1,
        "latent_steps": 10,
    },
    "bounds": {
        "z_dim": 2,
        "generator": {"kind": "mlp", "hidden": 32, "depth": 2},
        "penalty_weight": 0.1,
    },
    "dualmcmc": {
        "z_dim": 2,
        "generator": {"kind": "mlp", "hidden": 32, "depth": 2},
        "encoder": {"kind": "mlp", "hidden": 32, "depth": 2},
        "x_steps": 5,
        "z_steps": 3,
        "x_step_size": 0.01,
    },
    "bidvl": {
        "z_dim": 2,
        "encoder": {"kind": "mlp", "hidden": 32, "depth": 2},
        "generator": {"kind": "mlp", "hidden": 32, "depth": 2},
    },
}


def tiny_method(name: str, shape=(2,), **extra):
    cls = METHODS[name]
    params = {
        "energy_net": {"kind": "mlp", "hidden": 32, "depth": 2},
        **TINY.get(name, {}),
        **extra,
    }
    return cls(build_dataclass(cls.Config, params, "method"), shape)


def preset_method(name: str, data: str, kind: str, shape, overrides=None):
    """The method built from the preset that `data` (a name of `kind`) picks, and its stem."""
    from types import SimpleNamespace

    import torch

    from ebmlab.api import build_method_config, resolve_config
    from ebmlab.config import find_preset

    # a stand-in training split, from which a preset's `auto` values are derived
    dataset = SimpleNamespace(name=data, kind=kind, train=torch.randn(256, *shape))
    config = resolve_config(name, dataset, data, None, overrides or {})
    method = METHODS[name](build_method_config(config), shape)
    return method, find_preset(name, data, kind).stem


def fixture_image_run(tmp_path, name: str, stem: str, count: int, size: int, overrides=None):
    """(method, data, config) from the preset picked by random uint8 images saved as
    `<stem>.npy` (e.g. cifar10.npy picks `<name>_cifar10`)."""
    import numpy as np

    from ebmlab.api import build_method_config, resolve_config
    from ebmlab.data import load_dataset

    path = tmp_path / f"{stem}.npy"
    images = np.random.default_rng(0).integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    np.save(path, images)
    data = load_dataset(path)
    config = resolve_config(name, data, str(path), None, overrides or {})
    return METHODS[name](build_method_config(config), data.shape), data, config


def tiny_run_overrides(method: str, n_train: int) -> dict:
    """Overrides for a short CPU run of `method` on 2D data: a small MLP, logs every 5 steps,
    checkpoints every 10, EMA on, no previews (bit-for-bit resume is promised on the CPU)."""
    return {
        "method": {"energy_net": {"kind": "mlp", "hidden": 32, "depth": 2}, **TINY[method]},
        "data": {"n_train": n_train, "batch_size": 64},
        "train": {
            "log_every": 5,
            "ckpt_every": 10,
            "sample_every": 0,
            "ema_decay": 0.9,
            "device": "cpu",
        },
    }


TINY_CD = tiny_run_overrides("cd", n_train=2000)


def quick_cd(out, steps: int, resume: bool = False, overrides: dict = TINY_CD):
    """A tiny cd run on 8gaussians into `out`, without evaluation or progress bar."""
    import ebmlab

    return ebmlab.train(
        "cd",
        "8gaussians",
        steps=steps,
        out=out,
        overrides=overrides,
        resume=resume,
        evaluate=False,
        progress=False,
    )


def applied_gradients(method) -> dict:
    """{optimiser name: [the gradient each of its parameters is stepped with]}, filled in as
    the method's optimisers step (after any clipping or transform): what a test compares with
    the gradient of the paper's loss, restated independently."""
    import torch

    applied = {}
    for name, optimizer in method.optimizers.items():
        params = [p for group in optimizer.param_groups for p in group["params"]]

        def record(*args, _name=name, _params=params, _step=optimizer.step, **kwargs):
            applied[_name] = [
                torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in _params
            ]
            return _step(*args, **kwargs)

        optimizer.step = record
    return applied


def recorded_calls(obj, name: str) -> list:
    """Wrap `obj.name` so that each call's (args, result) is appended to the returned list."""
    calls = []
    original = getattr(obj, name)

    def record(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append((args, result))
        return result

    setattr(obj, name, record)
    return calls


def gradients(loss, params) -> list:
    """d loss / d params, zeros for parameters the loss does not reach."""
    import torch

    params = list(params)
    found = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(found, params, strict=True)]


def assert_gradients_equal(got, expected, rtol: float = 1e-4, atol: float = 1e-6) -> None:
    import torch

    assert len(got) == len(expected)
    for k, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert torch.allclose(g, e, rtol=rtol, atol=atol), (k, float((g - e).abs().max()))


def use_offset_linear_energy(method) -> None:
    """Give `method` the energy E(x) = x1 + x2 + 5 (2D data) and a plain SGD step on it: data
    near (-3, -3) sit at energy -1 and chains near the origin at about 5, so the two mean
    energies have opposite signs and a loss that combines them other than by their difference
    shows in its value; the gradient in the offset of mean E(x+) - mean E(x-) is 0."""
    import torch

    linear = torch.nn.Linear(2, 1)
    with torch.no_grad():
        linear.weight.fill_(1.0)
        linear.bias.fill_(5.0)
    method.energy_net = torch.nn.Sequential(linear, torch.nn.Flatten(0))
    method.optimizers["energy"] = torch.optim.SGD(linear.parameters(), lr=1.0)
