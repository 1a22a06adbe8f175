"""The CUDA path: ICD trains, samples, scores and composes on a GPU as it does on the CPU.

Skipped without CUDA (CI has none); run on a GPU machine with `pytest -m gpu`.
"""

import pytest
import torch

from ebmlab.api import Model
from ebmlab.data import load_dataset
from ebmlab.data.scaling import Scaler
from ebmlab.metrics import ood_table
from ebmlab.samplers import frozen_params
from ebmlab.tasks import Composition, ood_set
from tests.helpers import tiny_method

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]
CUDA = torch.device("cuda")


def test_icd_last_step_and_its_gradient_on_cuda_match_the_cpu():
    """Same weights, same chains, no noise: x^-hat, L_opt and its gradient agree across devices
    (the random draws of a whole train_step differ between the CPU and CUDA generators)."""
    cpu = tiny_method("icd", noise=0.0)
    gpu = tiny_method("icd", noise=0.0)
    gpu.load_state_dict(cpu.state_dict())
    gpu.to(CUDA)
    x = torch.randn(32, 2)
    results = []
    for method, chains in ((cpu, x), (gpu, x.to(CUDA))):
        x_kl = method._last_steps(chains)
        with frozen_params(method.energy_net):
            loss_opt = method.energy_net(x_kl).mean()
        params = list(method.energy_net.parameters())
        grads = torch.autograd.grad(loss_opt, params, allow_unused=True)  # the head's bias: none
        grads = [
            torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)
        ]
        results.append((x_kl.cpu(), loss_opt.cpu(), [g.cpu() for g in grads]))
    (x_cpu, opt_cpu, grads_cpu), (x_gpu, opt_gpu, grads_gpu) = results
    pairs = [("x_kl", x_cpu, x_gpu), ("L_opt", opt_cpu, opt_gpu)]
    pairs += [
        (f"grad {k}", a, b) for k, (a, b) in enumerate(zip(grads_cpu, grads_gpu, strict=True))
    ]
    for name, on_cpu, on_gpu in pairs:
        gap = float((on_cpu - on_gpu).detach().abs().max())
        assert torch.allclose(on_cpu, on_gpu, rtol=1e-4, atol=1e-5), (name, gap)


def test_icd_train_step_runs_on_cuda_and_logs_there():
    method = tiny_method("icd").to(CUDA)
    logs = method.train_step(torch.randn(32, 2, device=CUDA), 0)
    for key in ("loss_cd", "loss_opt", "loss_ent", "grad_norm/cd", "grad_norm/kl"):
        assert logs[key].device.type == "cuda" and torch.isfinite(logs[key]), key
    assert all(p.requires_grad for p in method.parameters())


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


def test_bf16_autocast_training_follows_float32(tmp_path):
    """Same seed and data on CUDA: with train.amp=bf16 the conv layers really run in bfloat16,
    and the logged losses of the first steps stay within a few percent of float32's."""
    import ebmlab
    from ebmlab.api import read_history
    from ebmlab.config import merge
    from tests.test_speed import IMAGES

    seen = set()
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, out: (
            seen.add(out.dtype) if isinstance(module, torch.nn.Conv2d) else None
        )
    )
    losses = {}
    try:
        for amp in ("none", "bf16"):
            overrides = merge(IMAGES, {"train": {"device": "cuda", "amp": amp, "log_every": 1}})
            run = ebmlab.train(
                "cd",
                "digits",
                steps=3,
                out=tmp_path / amp,
                overrides=overrides,
                evaluate=False,
                progress=False,
            )
            losses[amp] = [row["loss"] for row in read_history(run.path)]
    finally:
        hook.remove()
    assert torch.bfloat16 in seen and torch.float32 in seen
    for fp32, bf16 in zip(losses["none"], losses["bf16"], strict=True):
        assert abs(bf16 - fp32) <= 0.05 * abs(fp32) + 0.02, (losses["none"], losses["bf16"])


def test_channels_last_on_cuda_follows_the_default_layout(tmp_path):
    from ebmlab.config import merge
    from tests.test_speed import IMAGES, assert_close_weights, trained_weights

    """One step, weights only: the replay buffer's scattered writes of duplicate indices are
    unordered on a GPU, so from the second step on two runs differ in either layout."""
    cuda = merge(IMAGES, {"train": {"device": "cuda"}})
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # fp32 in both layouts
        plain = trained_weights(tmp_path, "plain", "digits", cuda, steps=1)
        nhwc = trained_weights(
            tmp_path, "nhwc", "digits", merge(cuda, {"train": {"channels_last": True}}), steps=1
        )
    weights = [k for k in plain if k.startswith("energy_net.")]
    assert_close_weights({k: nhwc[k] for k in weights}, {k: plain[k] for k in weights}, 1e-5)
