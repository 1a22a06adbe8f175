"""GEBM's headline (Arbel et al., ICLR 2021): samples of the GEBM beat samples of its base alone.

    python benchmarks/gebm_relative.py RUN [--samplers ula mala hmc] [--n N] [--repeats R]
                                           [--latent-steps K] [--chains-figure PATH]

For a trained `gebm` run, draws n samples from the base alone (x = G(z), z ~ N(0, I)) and n by
each latent sampler on nu(z) ∝ N(z; 0, I) exp(-E(G(z))), with the run's own settings, and
compares each set with the test split: MMD (the square root of the unbiased MMD^2, clipped at 0)
for 2D and tabular data, the Fréchet distance in ebmlab's classifier features for images. Prints
one markdown table with the mean over `repeats` seeds, the ratio to the base (the talk's
"relative FID" < 1) and the samplers' acceptance rates and seconds. The row `resampled` is the
re-weighting without MCMC: importance resampling of 20,000 base draws by exp(-T E), a check of
the energy itself (if it is worse than the base, the energy is not the density ratio).

With `--chains-figure`, also draws a few latent chains of ULA and HMC mapped to data space over
the data, and counts how often each chain changes mode (the nearest training point's label),
for 2D data with labels such as 8gaussians: the talk's "jumping between modes". Asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch
from torch import Tensor

import ebmlab
from ebmlab.api import dataset_of
from ebmlab.metrics import classifier_features, frechet_distance, mmd2
from ebmlab.metrics._common import seeded


def distance(dataset, samples: Tensor, test: Tensor) -> float:
    """MMD for points, classifier Fréchet distance for images."""
    if dataset.kind != "image":
        return max(mmd2(samples, test), 0.0) ** 0.5
    features = classifier_features(dataset, device=samples.device)
    return frechet_distance(features(samples), features(test))


def draw(method, n: int, sampler: str | None, seed: int) -> tuple[Tensor, float, float]:
    """(samples, mean acceptance or nan, seconds): from the base when `sampler` is None."""
    start, rates, parts = time.perf_counter(), [], []
    with seeded(seed, method.device):
        for size in [500] * (n // 500) + ([n % 500] if n % 500 else []):
            z = method.prior(size)
            if sampler is not None:
                z, info = method.sample_latent(z, sampler=sampler)
                rates.append(info.get("accept_rate", float("nan")))
            parts.append(method.decode(z))
    rate = sum(rates) / len(rates) if rates else float("nan")
    return torch.cat(parts), rate, time.perf_counter() - start


def resampled(method, n: int, seed: int, pool: int = 20_000) -> Tensor:
    """n draws by importance resampling of `pool` base draws with weights exp(-E): the exact
    re-weighting the energy defines, without MCMC (a diagnostic of the energy itself)."""
    with seeded(seed, method.device), torch.no_grad():
        x = torch.cat([method.decode(method.prior(500)) for _ in range(pool // 500)])
        weights = torch.softmax(-method.cfg.sample_temperature * method.energy(x), 0)
        return x[torch.multinomial(weights, n, replacement=True)]


def relative_table(run, samplers: list[str], n: int, repeats: int) -> str:
    dataset = dataset_of(run)
    method = run.method
    name = "MMD" if dataset.kind != "image" else "FD (classifier)"
    rows = {}
    for sampler in [None, "resampled", *samplers]:
        scores, rates, seconds = [], [], 0.0
        for seed in range(repeats):
            if sampler == "resampled":
                start = time.perf_counter()
                samples, rate, took = resampled(method, n, seed), float("nan"), 0.0
                took = time.perf_counter() - start
            else:
                samples, rate, took = draw(method, n, sampler, seed)
            order = torch.randperm(len(dataset.test), generator=torch.Generator().manual_seed(seed))
            test = dataset.test[order[:n]].to(method.device)
            scores.append(distance(dataset, samples, test))
            rates.append(rate)
            seconds += took
        rows[sampler or "base"] = (sum(scores) / repeats, sum(rates) / repeats, seconds / repeats)
    base = rows["base"][0]
    lines = [
        f"| samples | {name} | ratio to base | accept rate | seconds |",
        "|---|---|---|---|---|",
    ]
    for label, (score, rate, seconds) in rows.items():
        accept = "-" if rate != rate else f"{rate:.2f}"
        lines.append(f"| {label} | {score:.4f} | {score / base:.3f} | {accept} | {seconds:.1f} |")
    return "\n".join(lines)


def mode_of(points: Tensor, dataset) -> Tensor:
    """Label of each point's nearest training point."""
    train = dataset.train.to(points.device)
    nearest = torch.cdist(points, train).argmin(1)
    return dataset.train_labels.to(points.device)[nearest]


def chains_figure(run, path: Path, chains: int, seed: int) -> str:
    """Latent chains of ULA and HMC in data space; returns a table of mode changes per chain."""
    from ebmlab.report import save_latent_chains_figure

    dataset, method = dataset_of(run), run.method
    paths, lines = {}, ["| sampler | mode changes per chain (mean) | chains |", "|---|---|---|"]
    for sampler in ("ula", "hmc"):
        with seeded(seed, method.device):
            _, info = method.sample_latent(method.prior(chains), sampler=sampler, record=True)
        steps, n, d = info["path"].shape
        x_path = method.decode(info["path"].reshape(steps * n, d)).reshape(steps, n, -1)
        paths[sampler.upper()] = x_path.cpu()
        if dataset.train_labels is not None:
            modes = mode_of(x_path.reshape(steps * n, -1), dataset).reshape(steps, n)
            changes = (modes[1:] != modes[:-1]).float().sum(0).mean()
            lines.append(f"| {sampler.upper()} | {float(changes):.2f} | {n} |")
    save_latent_chains_figure(paths, dataset.train, path)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a gebm run directory")
    parser.add_argument("--samplers", nargs="+", default=["ula", "mala", "hmc"])
    parser.add_argument("--n", type=int, default=2000, help="samples per set")
    parser.add_argument("--repeats", type=int, default=3, help="seeds averaged over")
    parser.add_argument("--chains-figure", type=Path, help="also draw latent chains (2D data)")
    parser.add_argument("--chains", type=int, default=8)
    parser.add_argument("--latent-steps", type=int, help="chain length (default: the run's)")
    args = parser.parse_args()
    run = ebmlab.load(args.run)
    if run.config.method != "gebm":
        parser.error(f"{args.run} is a {run.config.method} run, not gebm")
    if args.latent_steps:
        run.method.cfg = dataclasses.replace(run.method.cfg, latent_steps=args.latent_steps)
    print(relative_table(run, args.samplers, args.n, args.repeats))
    if args.chains_figure:
        print()
        print(chains_figure(run, args.chains_figure, args.chains, seed=0))
        print(f"\nfigure: {args.chains_figure}")


if __name__ == "__main__":
    main()
