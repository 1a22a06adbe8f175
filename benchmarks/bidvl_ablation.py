"""BiDVL's ablations (Kan et al., 2022, Tables 5 and 6) at small scale, on MNIST by default.

    python benchmarks/bidvl_ablation.py [--table 5 6] [--data mnist] [--steps N] [--seed 0]
                                        [--out DIR] [--rows SLUG ...]

Table 5 sweeps the basic importance ratio r' over {0.01, 0.05, 0.1, 0.5, 1.0}; Table 6 compares
the handling of the opposite terms: without them ("w/o", `opposite_terms=none`), offset
(Eqs. 13-14, the default) and not offset (Eqs. 11-12 as Sec. 4.4). Every row is `ebmlab train
bidvl` with the data's preset and the override shown (the two tables share the row r' = 0.05,
offset, which is trained once); runs go to DIR/<row>, and a finished row is read back, not
trained again. `--rows r_0_5 not_offset` trains only those rows (one process per row on a
machine with cores to spare); a later call without it prints the tables.

Each row reports the Fréchet distance of 1,000 generator samples to the test split in
ebmlab's classifier features (lower is better; the paper's FID is the same statistic in
Inception features), the test-set reconstruction RMSE in [0, 1] pixels (encode to the posterior
mean, decode), the AUROC of -E(v) against each of ebmlab's standard OOD sets for the data, and
wall seconds. Asserts nothing.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch
from _rows import train_and_evaluate

RATIOS = (0.01, 0.05, 0.1, 0.5, 1.0)
TERMS = {"w/o": "none", "offset": "offset", "not offset": "not_offset"}
SHARED = "r_0_05"  # r' = 0.05, offset: the preset itself


def ratio_slug(ratio: float) -> str:
    return "r_" + f"{ratio:g}".replace(".", "_")


def term_slug(terms: str) -> str:
    return SHARED if terms == "offset" else terms


ROWS = {ratio_slug(r): {"basic_ratio": r} for r in RATIOS} | {
    term_slug(t): {"opposite_terms": t} for t in TERMS.values()
}


def train_row(slug: str, args: argparse.Namespace, root: Path) -> dict:
    """Train one row (or read it back if it finished before) and evaluate it."""
    return train_and_evaluate(
        root / slug / "ablation.json",
        ["standard"],
        method="bidvl",
        data=args.data,
        steps=args.steps,
        seed=args.seed,
        out=root / slug,
        overrides={"method": ROWS[slug]},
        progress=not args.quiet,
    )


def print_table(title: str, rows: dict[str, str], results: dict[str, dict]) -> None:
    done = {label: results[slug] for label, slug in rows.items() if slug in results}
    if not done:
        return
    ood = sorted({k for r in done.values() for k in r if k.startswith("auroc/")})
    print(f"\n{title}\n")
    print("| row | FD (classifier features) | recon RMSE | " + " | ".join(ood) + " | train s |")
    print("|---|---|---|" + "---|" * len(ood) + "---|")
    for label, r in done.items():
        if r["diverged"]:
            print(f"| {label} | diverged | - | " + "- | " * len(ood) + f"{r['seconds']:.0f} |")
            continue
        aurocs = " | ".join(f"{r.get(k, float('nan')):.3f}" for k in ood)
        print(
            f"| {label} | {r['fd_classifier']:.2f} | {r['recon_rmse_test']:.4f} | {aurocs} | "
            f"{r['seconds']:.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", nargs="+", type=int, choices=(5, 6), default=[5, 6])
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--steps", type=int, help="default: the preset's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bidvl_ablation")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--rows", nargs="+", help=f"only these: {', '.join(ROWS)}")
    args = parser.parse_args()
    table5 = {f"r' = {r:g}": ratio_slug(r) for r in RATIOS}
    table6 = {label: term_slug(t) for label, t in TERMS.items()}
    wanted = {**(table5 if 5 in args.table else {}), **(table6 if 6 in args.table else {})}
    slugs = list(dict.fromkeys(wanted.values()))
    if args.rows:
        unknown = set(args.rows) - set(ROWS)
        if unknown:
            parser.error(f"unknown rows {sorted(unknown)}")
        slugs = [s for s in slugs if s in args.rows]
    root = Path(args.out) / f"{args.data}_{args.steps or 'preset'}_seed{args.seed}"
    results = {slug: train_row(slug, args, root) for slug in slugs}
    device = "cuda" if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"\nbidvl on {args.data}, {args.steps or 'preset'} steps, seed {args.seed}; "
        f"torch {torch.__version__}, {device}, python {platform.python_version()}"
    )
    if 5 in args.table:
        print_table("Table 5: the basic ratio r' (offset)", table5, results)
    if 6 in args.table:
        print_table("Table 6: the opposite terms (r' = 0.05)", table6, results)


if __name__ == "__main__":
    main()
