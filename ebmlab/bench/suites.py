"""The bench suites: which data, how many seeds, and the budget of each run.

Every registered method takes part unless `--methods` says otherwise, so a method that lands
later joins by being registered. A dataset joins a suite with one line: its name and budget.
A budget is wall-clock seconds of training ("90s"), training steps ("2000") or each preset's own
`train.steps` ("preset").

"unseen" trains every method on the 12 random densities of `ebmlab.data.unseen.UNSEEN_SUITE`,
loaded as users' tables (`unseen-<seed>`), for 3,000 steps each: the issue-19 test of defaults
that fit data no preset was tuned on. Its leaderboard's "Across datasets" table gives each
method's median and worst KL (and mode coverage and weight TV, which GEBM is judged by).

"long" trains every method for its own preset's steps on MNIST and Fashion-MNIST (where
methods end, not how fast they start) and scores 2,000 samples with the standard Inception FID
beside the classifier's FD, KID, confident labels, the OOD AUROCs and inpainting. At this n FID
is biased upwards; the data's own train-vs-test FID at the same n is in each row
(`fid_inception_floor`). On 2 CPU cores it takes many hours: an interrupted bench continues
with `--resume`, and a run cut off mid-training continues from its last checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

from ebmlab.data.unseen import PREFIX, UNSEEN_SUITE


@dataclass(frozen=True)
class Suite:
    """Datasets with their per-run budgets, seeds per (method, dataset), how many times each
    run is scored on the way (the quality-vs-time curve; the last point is the end), and for
    images the samples drawn to score a model, the scored points and whether the Inception
    FID is measured (`fid`). Scoring an image model
    runs its sampler's chains over hundreds of images, which for the MCMC methods on a CPU
    costs more than a minute of training: image runs are scored at the end only."""

    budgets: dict[str, str]
    seeds: int
    curve_points: int
    image_samples: int = 200
    image_curve_points: int = 1
    fid: bool = False


SUITES = {
    "quick": Suite(
        budgets={
            "8gaussians": "10s",
            "rings": "10s",
        },
        seeds=1,
        curve_points=2,
    ),
    "standard": Suite(
        budgets={
            "8gaussians": "8s",
            "25gaussians": "8s",
            "checkerboard": "8s",
            "rings": "8s",
            "thinrings": "8s",
            "2spirals": "8s",
            "pinwheel": "8s",
            "swissroll": "8s",
            "moons": "8s",
            "mnist": "60s",
        },
        seeds=3,
        curve_points=2,
    ),
    "unseen": Suite(
        budgets={f"{PREFIX}{seed}": "3000" for seed in UNSEEN_SUITE},
        seeds=1,
        curve_points=1,
    ),
    "long": Suite(
        budgets={"mnist": "preset", "fashion-mnist": "preset"},
        seeds=1,
        curve_points=1,
        image_samples=2000,
        fid=True,
    ),
}
