"""ICD's Table 2 ablation at small scale, beside the `cd` baseline at the same budget.

    python benchmarks/icd_ablation.py [--data mnist] [--steps 1000] [--seed 0] [--out DIR]
                                      [--rows SLUG ...]

Rows, as in Du et al. (2021), Table 2, each adding one part to the one above:

    CD only         use_opt=false use_ent=false augment=false, energy_net.multiscale=null
    + data aug      augment=true (the preset's augmentation transitions)
    + multiscale    the preset's multiscale energy (sum of full, half, quarter resolution)
    + L_opt         use_opt=true (the KL term through the last Langevin step)
    + L_ent         use_ent=true: the full method, what `ebmlab train icd` runs

and `cd` (IGEBM, its own preset) trained for the same number of steps with the same energy
net, batch size and chain length. Every row is `ebmlab train` with the data's preset and the
overrides shown; runs go to DIR/<row> and a finished row is skipped when the script is run
again; `--rows cd_only cd` trains only those rows (e.g. one process per row on a GPU), and a
later call without it prints the whole table. Prints one markdown table: the Fréchet distance
in ebmlab's classifier features (lower is better; the data-vs-data floor beside it), KID, the
stability the paper tabulates (did training diverge, and the largest |E(x+) - E(x-)| logged
after the first 10% of steps), and wall seconds. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import time
from pathlib import Path

import torch

import ebmlab
from ebmlab.errors import EbmlabError

ONE_SCALE = {"energy_net": {"multiscale": None}}
ROWS = {  # the data's icd preset (for mnist: augmentation and multiscale on), minus these
    "CD only": {"use_opt": False, "use_ent": False, "augment": False, **ONE_SCALE},
    "+ data aug": {"use_opt": False, "use_ent": False, **ONE_SCALE},
    "+ multiscale": {"use_opt": False, "use_ent": False},
    "+ L_opt": {"use_ent": False},
    "+ L_ent (full ICD)": {},
}


def slug(row: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", row.lower()).strip("_")


def largest_gap(run_dir: Path, steps: int) -> float:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return max(abs(r["loss_cd"]) for r in rows if r["step"] > steps // 10 and "loss_cd" in r)


def train_row(method: str, overrides: dict, args: argparse.Namespace, out: Path) -> dict:
    """Train one row (or read it back if it finished before); its metrics and stability."""
    result_file = out / "ablation.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    start = time.perf_counter()
    try:
        run = ebmlab.train(
            method,
            args.data,
            steps=args.steps,
            seed=args.seed,
            out=out,
            overrides={"method": overrides},
            progress=not args.quiet,
        )
        result = {**run.metrics, "diverged": False}
    except EbmlabError as err:  # TrainingDiverged: the paper's "not stable"
        result = {"diverged": True, "error": str(err)}
    result["seconds"] = time.perf_counter() - start
    if method == "icd" and (out / "metrics.jsonl").is_file():
        result["largest_gap"] = largest_gap(out, args.steps)
    result_file.write_text(json.dumps(result, indent=2))
    return result


def table_line(row: str, result: dict) -> str:
    if result["diverged"]:
        return f"| {row} | diverged | - | - | yes | - | {result['seconds']:.0f} |"
    gap = f"{result['largest_gap']:.3f}" if "largest_gap" in result else "-"
    return (
        f"| {row} | {result['fd_classifier']:.2f} | {result['fd_classifier_floor']:.2f} | "
        f"{result['kid']:.3f} | no | {gap} | {result['seconds']:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/icd_ablation")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--rows", nargs="+", help=f"only these: {', '.join(map(slug, ROWS))}, cd")
    args = parser.parse_args()
    root = Path(args.out) / f"{args.data}_{args.steps}_seed{args.seed}"
    plan = {row: ("icd", extra) for row, extra in ROWS.items()}
    plan["cd (IGEBM), same budget"] = ("cd", {})
    folders = {row: "cd" if method == "cd" else slug(row) for row, (method, _) in plan.items()}
    if args.rows:
        unknown = set(args.rows) - set(folders.values())
        if unknown:
            parser.error(f"unknown rows {sorted(unknown)}")
        plan = {row: job for row, job in plan.items() if folders[row] in args.rows}
    results = {
        row: train_row(method, extra, args, root / folders[row])
        for row, (method, extra) in plan.items()
    }
    device = "cuda" if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"\n{args.data}, {args.steps} steps, seed {args.seed}; torch {torch.__version__}, "
        f"{device}, python {platform.python_version()}\n"
    )
    print("| row | FD (classifier features) | floor | KID | diverged | max abs E+ - E- | s |")
    print("|---|---|---|---|---|---|---|")
    for row, result in results.items():
        print(table_line(row, result))


if __name__ == "__main__":
    main()
