"""Augmentations: identities at zero strength, exact flips, crop geometry, luma, blur mass."""

import pytest
import torch

from ebmlab.data.augment import (
    Augment,
    color_jitter,
    gaussian_blur,
    grayscale,
    hflip,
    random_resized_crop,
)


def images(n=64, c=3, size=16, seed=0):
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_flip_is_exact_and_happens_at_rate_p():
    x = images()
    assert torch.equal(hflip(x, p=1.0), x.flip(-1))
    assert torch.equal(hflip(x, p=0.0), x)
    flipped = (hflip(images(4000, 1, 4), p=0.5) != images(4000, 1, 4)).flatten(1).any(1)
    assert float(flipped.float().mean()) == pytest.approx(0.5, abs=0.04)


def test_full_size_crop_is_the_identity_and_small_crops_zoom():
    x = images()
    same = random_resized_crop(x, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.allclose(same, x, atol=1e-5)
    ramp = torch.linspace(-1, 1, 32).expand(8, 1, 32, 32).contiguous()  # brightness = column
    zoomed = random_resized_crop(ramp, scale=(0.25, 0.25), ratio=(1.0, 1.0))
    span = zoomed[..., 0, -1] - zoomed[..., 0, 0]  # the ramp's range seen across the crop
    assert torch.allclose(span, torch.full_like(span, 2 * 0.5 * 31 / 32), atol=0.1)


def test_jitter_with_zero_strength_is_the_identity():
    x = images()
    assert torch.allclose(color_jitter(x, 0, 0, 0, 0, p=1.0), x, atol=1e-5)


def test_brightness_scales_pixels_within_its_range():
    x01 = torch.full((500, 1, 4, 4), 0.5)
    out = (
        color_jitter(x01 * 2 - 1, brightness=0.4, contrast=0, saturation=0, hue=0, p=1.0) + 1
    ) / 2
    factors = out[:, 0, 0, 0] / 0.5
    assert factors.min() >= 0.6 - 1e-5 and factors.max() <= 1.4 + 1e-5
    assert float(factors.mean()) == pytest.approx(1.0, abs=0.03)


def test_hue_and_saturation_leave_grey_images_grey():
    grey = images(16, 1).expand(-1, 3, -1, -1).contiguous()
    out = color_jitter(grey, brightness=0, contrast=0, saturation=0.8, hue=0.4, p=1.0)
    assert torch.allclose(out, grey, atol=1e-5)


def test_hue_rotation_keeps_luma():
    x = images(16)
    out = color_jitter(x, brightness=0, contrast=0, saturation=0, hue=0.4, p=1.0)
    luma = lambda t: ((t + 1) / 2 * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)  # noqa: E731
    inside = ((out > -1) & (out < 1)).all(1)  # where no channel was clipped
    assert torch.allclose(luma(out)[inside], luma(x)[inside], atol=1e-4)
    assert not torch.allclose(out, x, atol=1e-2)


def test_grayscale_gives_equal_channels_at_the_luma():
    x = images(8)
    out = grayscale(x, p=1.0)
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 1], out[:, 2])
    expected = ((x + 1) / 2 * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1) * 2 - 1
    assert torch.allclose(out[:, 0], expected, atol=1e-6)


def test_blur_keeps_constants_and_smooths_noise():
    constant = torch.full((4, 3, 12, 12), 0.3)
    assert torch.allclose(gaussian_blur(constant, p=1.0), constant, atol=1e-6)
    noise = images(16, 1, 24)
    blurred = gaussian_blur(noise, sigma=(1.5, 1.5), p=1.0)
    assert float(blurred.var()) < 0.3 * float(noise.var())
    assert float(blurred.mean()) == pytest.approx(float(noise.mean()), abs=0.01)


def test_augment_keeps_shape_and_box_and_repeats_per_seed():
    x = images(32)
    a = Augment(blur=True, generator=torch.Generator().manual_seed(1))(x)
    b = Augment(blur=True, generator=torch.Generator().manual_seed(1))(x)
    assert a.shape == x.shape and torch.equal(a, b)
    assert a.min() >= -1 and a.max() <= 1
    grey = Augment()(images(8, 1))  # greyscale images skip the colour-only parts
    assert grey.shape == (8, 1, 16, 16)


def test_augment_serves_as_a_langevin_transition():
    from ebmlab.samplers import Langevin

    calls = []

    def counting(x):
        calls.append(x.shape)
        return Augment(jitter=None)(x)

    x, _ = Langevin(6, 0.01, clamp=(-1, 1), transition=counting, every=3)(
        lambda v: v.pow(2).flatten(1).sum(1), images(4)
    )
    assert len(calls) == 2 and x.shape == (4, 3, 16, 16)
