"""The CUDA path: ICD trains, samples, scores and composes on a GPU as it does on the CPU.

Skipped without CUDA (CI has none); run on a GPU machine with `pytest -m gpu`.
"""

import pytest
import torch

from ebmlab.api import Model
from ebmlab.data import load_dataset
from ebmlab.data.scaling import Scaler
from ebmlab.metrics import ood_table
from ebmlab.tasks import Composition, ood_set
from tests.helpers import tiny_method

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]
CUDA = torch.device("cuda")


def test_icd_step_on_cuda_matches_the_cpu():
    """Same weights, same inputs, no noise: losses and gradient norms agree across devices."""
    cpu = tiny_method("icd", noise=0.0, reinit_prob=0.0, buffer_size=32, grad_clip=None)
    gpu = tiny_method("icd", noise=0.0, reinit_prob=0.0, buffer_size=32, grad_clip=None)
    gpu.load_state_dict(cpu.state_dict())
    gpu.to(CUDA)
    x = torch.randn(32, 2)
    torch.manual_seed(1)
    logs_cpu = cpu.train_step(x, 0)
    torch.manual_seed(1)
    logs_gpu = gpu.train_step(x.to(CUDA), 0)
    for key in ("loss_cd", "loss_opt", "grad_norm/cd", "grad_norm/kl"):
        assert logs_gpu[key].device.type == "cuda"
        assert float(logs_gpu[key]) == pytest.approx(float(logs_cpu[key]), rel=1e-3, abs=1e-5)


def test_multiscale_resnet_icd_trains_and_samples_on_cuda():
    energy_net = {
        "kind": "resnet",
        "widths": [16, 16, 32],
        "blocks_per_stage": 2,
        "norm": "group",
        "self_attention": True,
        "attention_stage": 1,
        "pool": "mean",
        "multiscale": [1, 2, 4],
    }
    method = tiny_method("icd", shape=(3, 32, 32), energy_net=energy_net, step_size=100.0)
    method.to(CUDA)
    x = torch.rand(16, 3, 32, 32, device=CUDA) * 2 - 1
    for step in range(3):
        logs = method.train_step(x, step)
    assert all(torch.isfinite(v).all() and v.device.type == "cuda" for v in logs.values())
    samples = method.sample(8)
    assert samples.device.type == "cuda" and samples.abs().max() <= 1
    assert all(p.grad is None or p.grad.device.type == "cuda" for p in method.parameters())


def test_ood_scoring_and_composition_on_cuda():
    digits = load_dataset("digits")
    method = tiny_method("icd", shape=digits.shape).to(CUDA)
    table = ood_table(method.energy, digits.test, {"noise": ood_set("noise", digits)})
    assert 0.0 <= table["noise"] <= 1.0
    models = [Model(tiny_method("icd").to(CUDA), Scaler.identity(), "toy2d") for _ in range(2)]
    samples = Composition(models).sample(10, seed=0)
    assert samples.shape == (10, 2) and torch.isfinite(samples).all()
