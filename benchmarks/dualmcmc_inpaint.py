"""Inpainting with a trained `dualmcmc` run: the supplement's three stages on the test split.

    python benchmarks/dualmcmc_inpaint.py RUN [--n 500] [--seed 0] [--figure PNG]

For each of the supplement's masks (M20, M30, M40 centre squares scaled from 64 px to the
image's side, R20, R30, R40 random blocks hiding that share of the pixels; see
`ebmlab.tasks.inpaint`) the first n test images
are recovered by (i) the inference model then the generator, (ii) + Langevin on the generator's
posterior of the observed pixels, (iii) + Langevin on the EBM with the observed pixels clamped,
and scored by PSNR / SSIM on the whole image in [0, 1]. `--figure` draws, per mask, a test
image, its occluded version and the three recoveries. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import platform

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import ebmlab  # noqa: E402
from ebmlab.api import dataset_of  # noqa: E402
from ebmlab.report import image_grid  # noqa: E402
from ebmlab.tasks import inpainting_scores, standard_masks  # noqa: E402

STAGES = {
    "inference": "(i) Inf + Gen",
    "z_langevin": "(ii) + T^z",
    "x_langevin": "(iii) + T^x",
}


def draw(method, x, masks, path: str, per_mask: int = 4) -> None:
    """Rows: test, occluded, (i), (ii), (iii); one block of columns per mask."""
    rows = {"test": [], "occluded": [], **{label: [] for label in STAGES.values()}}
    for mask in masks.values():
        images, m = x[:per_mask], mask[:per_mask].to(x.device)
        recoveries = method.inpaint(images, m)
        rows["test"].append(images)
        rows["occluded"].append(images * m - (1 - m))  # hidden pixels black
        for stage, label in STAGES.items():
            rows[label].append(recoveries[stage])
    fig, axes = plt.subplots(len(rows), 1, figsize=(1.0 * per_mask * len(masks), 1.3 * len(rows)))
    for ax, (label, parts) in zip(axes, rows.items(), strict=True):
        grid = image_grid(torch.cat(parts).cpu(), ncol=per_mask * len(masks))
        ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_ylabel(label, rotation=0, ha="right", va="center")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].set_title("   ".join(masks), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure")
    args = parser.parse_args()
    run = ebmlab.load(args.run)
    method = run.method
    x = dataset_of(run).test[: args.n].to(method.device)
    masks = standard_masks(len(x), x.shape[-1], seed=args.seed)
    torch.manual_seed(args.seed)
    table = inpainting_scores(method, x, masks)
    print(
        f"\n{args.run}: {len(x)} test images, seed {args.seed}; torch {torch.__version__}, "
        f"python {platform.python_version()}\n"
    )
    print("| PSNR / SSIM | " + " | ".join(masks) + " |")
    print("|---|" + "---|" * len(masks))
    for stage, label in STAGES.items():
        cells = [f"{table[m][stage]['psnr']:.2f} / {table[m][stage]['ssim']:.3f}" for m in masks]
        print(f"| {label} | " + " | ".join(cells) + " |")
    if args.figure:
        torch.manual_seed(args.seed)
        draw(method, x, masks, args.figure)
        print(f"\nfigure: {args.figure}")


if __name__ == "__main__":
    main()
