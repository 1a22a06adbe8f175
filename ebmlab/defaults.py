"""Defaults derived from the data: the preset says `auto`, the loaded data says how much.

A preset is a starting point for a kind of data, not for one data set (design.md). Whatever
depends on the data's scale or size is written `auto` in a preset and resolved here, once the
data is loaded and before the method is built; the resolved numbers go into the run's
config.yaml, so `ebmlab info`, the report and a resume all see them.

The rules, in model units (tables standardised, images in [-1, 1]):

- `step_size`, `x_step_size`, `sample_step_size`: r^2 / (2 D), with r the median distance of
  a training point to its `NEIGHBOURS`-th nearest of `SUBSAMPLE` others and D the data's
  dimension. A Langevin step of eps moves about sqrt(2 eps D) = r, so the first step fits the
  narrowest scale the data show; MALA's dual averaging (`target_accept`) then adapts it. (In D
  dimensions r grows like the spread itself, so r^2 / 2 would be D times too large a step.)
- `z_dim`: min(`z_dim_max`, D), `z_dim_max` from the preset (default 128). A generator's latent
  cannot usefully exceed the data's dimension (bounds' entropy needs z_dim <= D).
- `init_low`, `init_high`: the training range, widened by `BOX_MARGIN` of its width on each
  side, so chains start where the data could be, for any offset or outliers.

A value the user sets (in a `--config` file or an override) is never replaced, and a user's
own step switches adaptation off (`target_accept: null`) unless they also set `target_accept`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ebmlab.errors import EbmlabError

AUTO = "auto"
NEIGHBOURS = 10
SUBSAMPLE = 2000
BOX_MARGIN = 0.1
STEP_KEYS = ("step_size", "x_step_size", "sample_step_size")
#: option -> its rule, as `ebmlab info` prints it
AUTO_RULES = {
    ", ".join(STEP_KEYS): "r^2 / (2 D) (MALA chains then adapt it toward target_accept)",
    "z_dim": "min(z_dim_max, D)",
    "init_low, init_high": f"training range widened by {BOX_MARGIN:.0%} of its width per side",
}
#: (step option, the adaptation option it switches off when the user sets the step)
ADAPTED_STEPS = (("step_size", "target_accept"), ("x_step_size", "x_target_accept"))


def local_scale(train: Tensor, neighbours: int = NEIGHBOURS, seed: int = 0) -> float:
    """The median distance of a training point to its `neighbours`-th nearest other point,
    among a seeded subsample of at most `SUBSAMPLE` points (duplicates counted as distinct)."""
    flat = train.flatten(1).double()
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(flat), generator=generator)[:SUBSAMPLE]
    points = flat[order]
    k = min(neighbours, len(points) - 1)
    if k < 1:
        raise EbmlabError("deriving defaults needs at least two training examples")
    distances = torch.cdist(points, points)
    kth = distances.topk(k + 1, dim=1, largest=False).values[:, -1]
    positive = kth[kth > 0]
    if len(positive) == 0:  # every point duplicated: fall back on the spread itself
        return float(flat.std(0).mean().clamp_min(1e-6))
    return float(positive.median())


def derived_values(train: Tensor, z_dim_max: int) -> dict[str, float | int]:
    """Every auto value for this training split (model units)."""
    scale = local_scale(train)
    low, high = float(train.min()), float(train.max())
    margin = BOX_MARGIN * max(high - low, 1e-6)
    dim = math.prod(train.shape[1:])
    values: dict[str, float | int] = {key: scale**2 / (2 * dim) for key in STEP_KEYS}
    values |= {
        "z_dim": max(1, min(z_dim_max, dim)),
        "init_low": low - margin,
        "init_high": high + margin,
    }
    return values


def resolve_auto(
    method_params: Mapping[str, Any], user_params: Mapping[str, Any], train: Tensor
) -> dict[str, Any]:
    """The method options with every `auto` replaced by its derived value.

    Args:
        method_params: The merged method section (defaults < preset < user layers).
        user_params: The method options the user set (config file and overrides), which keep
            their values and decide whether a step is adapted.
        train: The training split in model units.
    """
    params = dict(method_params)
    z_dim_max = int(params.pop("z_dim_max", 128))
    auto_keys = [key for key, value in params.items() if value == AUTO]
    if auto_keys:
        values = derived_values(train, z_dim_max)
        unknown = [key for key in auto_keys if key not in values]
        if unknown:
            raise EbmlabError(
                f"method option(s) {unknown} cannot be auto; auto works for {sorted(values)}"
            )
        params |= {key: values[key] for key in auto_keys}
    for step_key, adapt_key in ADAPTED_STEPS:
        if step_key in user_params and adapt_key not in user_params and adapt_key in params:
            params[adapt_key] = None  # the user fixed the step
    return params
