"""The weight of Bounds' upper-bound penalty: sample quality against density estimation.

    python benchmarks/bounds_penalty.py [--data 8gaussians] [--weights 0 0.001 0.01 0.1 1]
                                        [--steps N] [--seed 0] [--out DIR]

The supplement (Sec. C) sets M / s_1^2 = 0.001 / z_dim for generation and 0.1 / z_dim for OOD
detection and density estimation, "because if we increase this value, it will help the density
estimation of the energy function". Each row trains `ebmlab train bounds` with the data's preset
and `penalty_weight` = w (the penalty is w / z_dim times E(u J v)^2) and reports, for 2D data,
the exact KL(data || exp(-E)/Z) on a grid (density estimation) beside the MMD^2 of generator
samples to the test points (sample quality); for images, the Fréchet distance of generator
samples in ebmlab's classifier features; for both, the AUROC of -E against the standard OOD
sets for the data (`ebmlab eval --ood standard`).
Runs go to DIR/w_<w>; a finished row is read back. With `--figure PNG` (2D data), each
weight's density exp(-E)/Z above its generator's samples. Asserts nothing.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch
from _rows import train_and_evaluate

import ebmlab


def train_row(weight: float, args: argparse.Namespace, root: Path) -> dict:
    out = root / f"w_{weight:g}"
    return train_and_evaluate(
        out / "study.json",
        ["standard"],
        method="bounds",
        data=args.data,
        steps=args.steps,
        seed=args.seed,
        out=out,
        overrides={"method": {"penalty_weight": weight}},
        progress=not args.quiet,
    )


def columns(results: dict[float, dict]) -> list[str]:
    finished = [r for r in results.values() if not r["diverged"]]
    keys = {k for r in finished for k in r}
    quality = ["kl", "nll", "mmd2"] if "kl" in keys else ["fd_classifier"]
    return quality + sorted(k for k in keys if k.startswith("auroc/"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="8gaussians")
    parser.add_argument("--weights", nargs="+", type=float, default=[0, 0.001, 0.01, 0.1, 1])
    parser.add_argument("--steps", type=int, help="default: the preset's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bounds_penalty")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--figure", help="PNG path for the densities and samples (2D data)")
    args = parser.parse_args()
    root = Path(args.out) / f"{args.data}_{args.steps or 'preset'}_seed{args.seed}"
    results = {w: train_row(w, args, root) for w in args.weights}
    device = "cuda" if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"\nbounds on {args.data}, {args.steps or 'preset'} steps, seed {args.seed}; "
        f"torch {torch.__version__}, {device}, python {platform.python_version()}\n"
    )
    keys = columns(results)
    print("| weight w (M/s_1^2 = w/z_dim) | " + " | ".join(keys) + " | train s |")
    print("|---|" + "---|" * (len(keys) + 1))
    for weight, r in results.items():
        cells = ["diverged"] * len(keys) if r["diverged"] else [f"{r[k]:.4g}" for k in keys]
        print(f"| {weight:g} | " + " | ".join(cells) + f" | {r['seconds']:.0f} |")
    if args.figure:
        draw(args, root, [w for w, r in results.items() if not r["diverged"]])


def draw(args: argparse.Namespace, root: Path, weights: list[float]) -> None:
    from ebmlab.data import load_dataset
    from ebmlab.report import save_density_comparison

    torch.manual_seed(args.seed)
    runs = {f"w = {w:g}": ebmlab.load(root / f"w_{w:g}").method for w in weights}
    save_density_comparison(runs, load_dataset(args.data), Path(args.figure))
    print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
