"""Networks: output shapes, no BatchNorm where sampling runs, spectral norm, EMA arithmetic."""

import copy

import pytest
import torch
from torch import nn

from ebmlab.errors import EbmlabError
from ebmlab.nets import (
    EMA,
    ConvEncoder,
    MLPEncoder,
    ResNetEnergy,
    SelfAttention,
    build_encoder,
    build_energy,
    build_generator,
    eval_mode,
    reparameterise,
)

SHAPES = [(2,), (1, 8, 8), (1, 28, 28), (3, 32, 32)]
KINDS = {
    (2,): ["mlp"],
    (1, 8, 8): ["mlp", "conv", "resnet"],
    (1, 28, 28): ["conv", "resnet"],
    (3, 32, 32): ["conv", "resnet"],
}


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_energy_nets_give_one_finite_differentiable_energy_per_example(shape):
    for kind in KINDS[shape]:
        extra = {"widths": (8, 16)} if kind == "resnet" else {}
        net = build_energy(shape, kind, **extra)
        x = torch.randn(3, *shape, requires_grad=True)
        energy = net(x)
        assert energy.shape == (3,), kind
        assert torch.isfinite(energy).all()
        (grad,) = torch.autograd.grad(energy.sum(), x)
        assert grad.shape == x.shape and grad.abs().sum() > 0
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


def test_auto_picks_mlp_conv_resnet_by_shape():
    assert type(build_energy((5,))).__name__ == "MLPEnergy"
    assert type(build_energy((1, 8, 8))).__name__ == "ConvEnergy"
    assert type(build_energy((1, 28, 28))).__name__ == "ConvEnergy"
    assert type(build_energy((3, 32, 32))).__name__ == "ResNetEnergy"


def test_resnet_options_group_norm_attention_spectral_norm():
    net = ResNetEnergy(3, widths=(8, 16), norm="group", self_attention=True, spectral_norm=True)
    names = {type(m).__name__ for m in net.modules()}
    assert {"GroupNorm", "SelfAttention"} <= names
    assert any("parametrizations" in name for name, _ in net.named_parameters())
    assert net(torch.randn(2, 3, 16, 16)).shape == (2,)


def test_spectral_norm_bounds_each_layer():
    net = build_energy((2,), "mlp", hidden=64, spectral_norm=True)
    for _ in range(20):  # power iterations converge during forward passes in train mode
        net(torch.randn(4, 2))
    for module in net.modules():
        if isinstance(module, nn.Linear):
            sigma = float(torch.linalg.matrix_norm(module.weight.detach(), ord=2))
            assert sigma == pytest.approx(1.0, abs=0.05)


def test_bad_net_choices_are_user_errors():
    with pytest.raises(EbmlabError, match="needs image data"):
        build_energy((2,), "conv")
    with pytest.raises(EbmlabError, match="unknown energy_net kind"):
        build_energy((2,), "transformer")
    with pytest.raises(EbmlabError, match="its options are .*hidden"):
        build_energy((2,), "mlp", width=3)
    with pytest.raises(EbmlabError, match="unknown activation"):
        build_energy((2,), "mlp", activation="gelu2")


@pytest.mark.parametrize("shape", [(2,), (1, 8, 8), (1, 28, 28), (3, 32, 32)], ids=str)
def test_generators_and_encoders_shapes(shape):
    generator = build_generator(4, shape)
    x = generator(torch.randn(5, 4))
    assert x.shape == (5, *shape)
    mu, log_var = build_encoder(shape, 4)(x)
    assert mu.shape == log_var.shape == (5, 4)


def test_bounded_log_var_keeps_variance_below_one():
    for encoder in (
        MLPEncoder((2,), 3, bounded_log_var=True),
        ConvEncoder((1, 8, 8), 3, bounded_log_var=True),
    ):
        x = torch.randn(64, *encoder_input_shape(encoder)) * 10
        _, log_var = encoder(x)
        assert (log_var.exp() < 1).all() and (log_var.exp() > 0).all()


def encoder_input_shape(encoder):
    return (2,) if isinstance(encoder, MLPEncoder) else (1, 8, 8)


def test_reparameterise_moments():
    mu, log_var = (
        torch.full((20000, 1), 2.0),
        torch.full((20000, 1), 2 * torch.log(torch.tensor(3.0))),
    )
    z = reparameterise(mu, log_var, torch.Generator().manual_seed(0))
    assert float(z.mean()) == pytest.approx(2.0, abs=0.06)
    assert float(z.std()) == pytest.approx(3.0, rel=0.02)


def test_ema_update_is_exact_and_swapped_restores_live_weights():
    net = nn.Linear(3, 1)
    ema = EMA(net, decay=0.9)
    old = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net)  # the first update's decay is the warm-up's 2 / 11, not 0.9
    assert torch.allclose(ema.averaged.weight, 2 / 11 * old + 9 / 11 * net.weight)
    ema.updates = 1000
    assert ema.current_decay == 0.9
    before = ema.averaged.weight.detach().clone()
    ema.update(net)
    assert torch.allclose(ema.averaged.weight, 0.9 * before + 0.1 * net.weight)
    clone = EMA(net, decay=0.9)
    clone.load_state_dict(ema.state_dict())
    assert clone.updates == 1001 and torch.equal(clone.averaged.weight, ema.averaged.weight)
    live = net.weight.detach().clone()
    with ema.swapped(net):
        assert torch.equal(net.weight, ema.averaged.weight)
    assert torch.equal(net.weight, live)


def test_ema_gives_the_averaged_weights_batch_norm_statistics_of_their_own():
    def net():
        return nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))

    torch.manual_seed(0)
    live = net()
    ema = EMA(live, decay=0.5)
    batches = [torch.randn(16, 2) + 3 for _ in range(10)]
    for batch in batches:
        live(batch)
        live(batch + 100)  # a second call in the same step is not recorded
        with torch.no_grad():
            live[0].weight.add_(0.5)  # the live weights move away from their average
        ema.update(live)
    with eval_mode(live):
        live(torch.randn(4, 2))  # moves no statistics, so is not recorded
    saved = copy.deepcopy(ema.state_dict())  # as a checkpoint holds it, between updates
    recent = batches[-EMA.CALIBRATION_BATCHES :]
    assert len(ema.calibration) == len(recent)
    assert all(torch.equal(a, b) for a, b in zip(ema.calibration, recent, strict=True))
    used = net()
    ema.copy_to(used)
    with torch.no_grad():
        hidden = [ema.averaged[0](batch) for batch in recent]
    # SWA's update_bn: the running statistics are the mean of the batches' statistics
    assert torch.allclose(used[1].running_mean, torch.cat(hidden).mean(0), atol=1e-5)
    expected_var = torch.stack([h.var(0) for h in hidden]).mean(0)
    assert torch.allclose(used[1].running_var, expected_var, rtol=1e-4)
    assert (used[1].running_mean - live[1].running_mean).abs().min() > 0.1
    restored = EMA(net(), decay=0.5, record_inputs=False)
    restored.load_state_dict(saved)
    again = net()
    restored.copy_to(again)
    assert torch.equal(again[1].running_mean, used[1].running_mean)


def test_ema_forgets_the_initial_weights_within_a_short_run():
    """At decay 0.999 a plain EMA would still hold 37% of the initial weights after 1,000
    updates; the warm-up leaves a negligible share."""
    net = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(net.weight)
    ema = EMA(net, decay=0.999)
    with torch.no_grad():
        net.weight.fill_(1.0)
    for _ in range(1000):
        ema.update(net)
    assert float(ema.averaged.weight) == pytest.approx(1.0, abs=1e-6)


def test_multiscale_energy_sums_one_net_per_resolution():
    import torch.nn.functional as F

    net = build_energy((3, 16, 16), "conv", multiscale=[1, 2, 4], width=4)
    x = torch.randn(5, 3, 16, 16, requires_grad=True)
    expected = sum(
        sub(F.avg_pool2d(x, f) if f > 1 else x) for f, sub in zip((1, 2, 4), net.nets, strict=True)
    )
    assert torch.allclose(net(x), expected)
    assert [sub.features[0].in_channels for sub in net.nets] == [3, 3, 3]
    (grad,) = torch.autograd.grad(net(x).sum(), x)
    assert grad.abs().sum() > 0
    with pytest.raises(EbmlabError, match="divide the images"):
        build_energy((1, 10, 10), "conv", multiscale=[1, 4])
    with pytest.raises(EbmlabError, match="powers of two"):
        build_energy((1, 12, 12), "conv", multiscale=[1, 3])


ICD_TABLE5 = {
    "kind": "resnet",
    "widths": (64, 64, 128, 256),
    "blocks_per_stage": 2,
    "norm": "group",
    "self_attention": True,
    "attention_stage": 1,
    "pool": "mean",
}


def layer_plan(net):
    """(kind, channels out, downsamples?) of each layer after the first conv."""
    plan = []
    for layer in list(net.features)[1:-1]:
        if isinstance(layer, SelfAttention):
            plan.append(("attention", layer.qkv.in_channels, False))
        else:
            downsamples = not isinstance(layer.pool, nn.Identity)
            plan.append(("block", layer.body[-1].out_channels, downsamples))
    return plan


def test_icd_table5_resnet_layer_by_layer():
    net = build_energy((3, 32, 32), **ICD_TABLE5)
    assert net.features[0].out_channels == 64  # 3x3 conv2d, 64
    assert layer_plan(net) == [
        ("block", 64, False),
        ("block", 64, True),
        ("block", 64, False),
        ("block", 64, True),
        ("attention", 64, False),
        ("block", 128, False),
        ("block", 128, True),
        ("block", 256, False),
        ("block", 256, True),
    ]
    groups = {m.num_groups for m in net.modules() if isinstance(m, nn.GroupNorm)}
    assert groups == {32}  # GroupNorm(32) in every block
    x = torch.randn(2, 3, 32, 32)
    pooled = net.features(x).mean(dim=(2, 3))  # global mean pooling, then dense -> 1
    assert torch.allclose(net(x), net.head(pooled).squeeze(-1))


def test_icd_multiscale_resnet_drops_the_first_down_blocks_per_scale():
    net = build_energy((3, 32, 32), multiscale=[1, 2, 4], **ICD_TABLE5)
    downs = [sum(d for _, _, d in layer_plan(sub)) for sub in net.nets]
    assert downs == [4, 3, 2]  # full, half (first down block removed), quarter (two removed)
    final_sides = [
        sub.features(torch.zeros(1, 3, 32 // f, 32 // f)).shape[-1]
        for f, sub in zip((1, 2, 4), net.nets, strict=True)
    ]
    assert final_sides == [2, 2, 2]  # every scale ends on the same 2x2 grid
    assert net(torch.randn(2, 3, 32, 32)).shape == (2,)


def test_per_layer_widths_prelu_and_tanh_output():
    energy = build_energy((1, 28, 28), kind="mlp", widths=[2000, 1000, 500], activation="prelu")
    linears = [m for m in energy.modules() if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [2000, 1000, 500, 1]
    assert any(isinstance(m, nn.PReLU) for m in energy.modules())
    gen = build_generator(8, (1, 8, 8), kind="mlp", widths=[16, 32], tanh_output=True)
    assert [m.out_features for m in gen.modules() if isinstance(m, nn.Linear)] == [16, 32, 64]
    assert gen(100 * torch.randn(5, 8)).abs().max() <= 1


def test_dcgan_energy_is_the_bounds_table_3_net():
    """3x3/1 and 4x4/2 convolutions in turn, 64 to 512 channels, then Linear(8192, 1)."""
    net = build_energy((3, 32, 32), kind="dcgan")
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
        (64, 3, 1), (64, 4, 2), (128, 3, 1), (128, 4, 2), (256, 3, 1), (256, 4, 2), (512, 3, 1)
    ]  # fmt: skip
    assert net.head.in_features == 8192 and net(torch.randn(2, 3, 32, 32)).shape == (2,)
    with pytest.raises(EbmlabError):
        build_energy((1, 28, 28), kind="dcgan")


@pytest.mark.parametrize("size", [8, 32, 64])
def test_resnet_generator_upsamples_a_4x4_seed_to_the_image(size):
    gen = build_generator(16, (3, size, size), kind="resnet", width=8)
    assert gen(torch.randn(2, 16)).shape == (2, 3, size, size)
    assert gen.c0 == 8 * size // 4


@pytest.mark.parametrize("kind", ["dcgan", "resnet"])
@pytest.mark.parametrize("shape", [(3, 10, 12), (1, 28, 28), (1, 5, 5)])
def test_image_generators_draw_images_of_any_size_in_the_unit_box(kind, shape):
    from ebmlab.nets.generator import build_generator, fit_size

    generator = build_generator(4, shape, kind, width=8)
    images = generator(torch.randn(6, 4))
    assert images.shape == (6, *shape)
    assert images.abs().max() <= 1.0
    drawn = torch.randn(2, 1, 16, 16)
    assert fit_size(drawn, (16, 16)) is drawn  # the supported sizes are left as drawn
