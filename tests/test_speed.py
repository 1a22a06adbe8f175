"""The faster paths of `train`: each gives the plain path's results within tolerance.

`train.compile` (compiled Langevin steps) and `train.channels_last` run here on the CPU;
`train.amp=bf16` needs CUDA and is checked in test_gpu.py (here: refused on a CPU).
"""

import pytest
import torch

import ebmlab
from ebmlab import checkpoints
from ebmlab.config import merge
from ebmlab.errors import EbmlabError
from tests.helpers import TINY

TOY = {
    "method": {"energy_net": {"kind": "mlp", "hidden": 32, "depth": 2}, **TINY["cd"]},
    "data": {"n_train": 512, "batch_size": 64},
    "train": {"sample_every": 0, "device": "cpu"},
}
IMAGES = {
    "method": {
        "energy_net": {"kind": "conv", "width": 8},
        **TINY["cd"],
        "init_low": -1.0,
        "init_high": 1.0,
        "lr": 1e-2,  # steps of about 1e-2 per weight: far above the tolerances below
    },
    "data": {"n_train": 256, "batch_size": 32},
    "train": {"sample_every": 0, "device": "cpu"},
}


def trained_weights(tmp_path, name, data, overrides, steps):
    ebmlab.train(
        "cd",
        data,
        steps=steps,
        out=tmp_path / name,
        overrides=overrides,
        evaluate=False,
        progress=False,
    )
    return checkpoints.read_latest(tmp_path / name)[0]["method"]


def assert_close_weights(a, b, atol):
    """Every floating tensor of two state dicts agrees to `atol`; the worst gap is reported."""
    assert a.keys() == b.keys()
    gaps = {k: float((a[k] - b[k]).abs().max()) for k in a if a[k].is_floating_point()}
    worst = max(gaps, key=gaps.get)
    assert gaps[worst] <= atol, f"{worst} differs by {gaps[worst]:.3g}"


@pytest.mark.slow
def test_compiled_training_follows_the_eager_run(tmp_path):
    eager = trained_weights(tmp_path, "eager", "8gaussians", TOY, steps=6)
    compiled = trained_weights(
        tmp_path, "compiled", "8gaussians", merge(TOY, {"train": {"compile": True}}), steps=6
    )
    moved = trained_weights(tmp_path, "short", "8gaussians", TOY, steps=1)
    assert not torch.equal(moved["energy_net.net.0.weight"], eager["energy_net.net.0.weight"])
    assert_close_weights(compiled, eager, atol=1e-4)


def test_channels_last_training_follows_the_default_layout(tmp_path):
    plain = trained_weights(tmp_path, "plain", "digits", IMAGES, steps=4)
    nhwc = trained_weights(
        tmp_path, "nhwc", "digits", merge(IMAGES, {"train": {"channels_last": True}}), steps=4
    )
    conv = next(k for k, v in nhwc.items() if v.dim() == 4)
    assert nhwc[conv].is_contiguous(memory_format=torch.channels_last)
    # 40 times below the weights' movement (about 4e-2 in 4 steps): a wrong layout moves them
    # by that much, while the two layouts' sums in another order left the weights up to 2.9e-4
    # apart on one core (`taskset -c 1`; 1.4e-5 on two). The spectral norm's power-iteration
    # vectors, unit vectors derived from the weights, amplify that to 1.2e-3 (3.3e-5 on two).
    vectors = [k for k in nhwc if k.endswith(("._u", "._v"))]
    weights = [k for k in nhwc if k not in vectors]
    assert_close_weights(*({k: d[k] for k in weights} for d in (nhwc, plain)), atol=1e-3)
    assert_close_weights(*({k: d[k] for k in vectors} for d in (nhwc, plain)), atol=5e-3)


@pytest.mark.parametrize(
    ("option", "data", "message"),
    [
        ({"amp": "bf16"}, "8gaussians", "needs a CUDA device"),
        ({"amp": "fp8"}, "8gaussians", "train.amp must be one of none, bf16"),
        ({"channels_last": True}, "8gaussians", "needs image data"),
    ],
)
def test_speed_options_that_cannot_apply_are_refused(tmp_path, option, data, message):
    with pytest.raises(EbmlabError, match=message):
        ebmlab.train(
            "cd",
            data,
            steps=1,
            out=tmp_path / "x",
            overrides=merge(TOY, {"train": option}),
            evaluate=False,
            progress=False,
        )
    assert not (tmp_path / "x").exists()  # refused before any run directory was made
