"""Composition of class-conditional EBMs (ICD, Sec. 3.4), measured by a classifier.

    python benchmarks/compose_classes.py [--method icd] [--data mnist] [--a 1 4 7] [--b 2 7 9]
                                         [--steps 1000] [--n 500] [--out DIR]

Trains one model on the classes `--a` and one on `--b` (`ebmlab train --data.classes=...`;
a finished run is reused), samples each alone and their product (`ebmlab.compose`), and labels
every sample with the classifier ebmlab trains for the dataset's Fréchet distance. The product
should put its samples in the classes both models share (the paper measures its compositions
the same way, with an attribute classifier, Table 4). Prints one markdown table: the share of
samples per predicted class, for each model alone and for the product. Asserts nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import ebmlab
from ebmlab import checkpoints
from ebmlab.data import load_dataset
from ebmlab.metrics import classifier_features


def train_conditional(args: argparse.Namespace, classes: list[int], out: Path) -> ebmlab.Run:
    if checkpoints.paths(out):
        return ebmlab.load(out)
    overrides = {"data": {"classes": classes}}
    return ebmlab.train(
        args.method, args.data, steps=args.steps, out=out, overrides=overrides, evaluate=False
    )


def class_shares(classifier, samples: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Share of samples (model units) that the classifier assigns to each class."""
    device = next(classifier.net.parameters()).device
    with torch.no_grad():
        predicted = classifier.net(samples.to(device)).argmax(1).cpu()
    return torch.bincount(predicted, minlength=n_classes).float() / len(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="icd")
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--a", type=int, nargs="+", default=[1, 4, 7])
    parser.add_argument("--b", type=int, nargs="+", default=[2, 7, 9])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/compose_classes")
    args = parser.parse_args()
    root = Path(args.out) / f"{args.method}_{args.data}_{args.steps}"
    runs = [
        train_conditional(args, args.a, root / "a"),
        train_conditional(args, args.b, root / "b"),
    ]
    dataset = load_dataset(args.data)
    classifier = classifier_features(dataset, device=runs[0].method.device)
    n_classes = int(dataset.train_labels.max()) + 1
    product = ebmlab.compose(runs)
    torch.manual_seed(args.seed)
    rows = {
        f"model a, classes {args.a}": runs[0].method.sample(args.n),
        f"model b, classes {args.b}": runs[1].method.sample(args.n),
        "product a x b": product.sample_model_units(args.n),
    }
    shared = sorted(set(args.a) & set(args.b))
    print(f"\n{args.method} on {args.data}, {args.steps} steps per model, {args.n} samples each")
    print(f"classifier test accuracy {classifier.test_accuracy:.3f}; shared classes {shared}\n")
    print("| samples | " + " | ".join(str(c) for c in range(n_classes)) + " | in shared |")
    print("|---" * (n_classes + 2) + "|")
    for name, samples in rows.items():
        shares = class_shares(classifier, samples.detach(), n_classes)
        cells = " | ".join(f"{s:.2f}" for s in shares.tolist())
        print(f"| {name} | {cells} | {float(shares[shared].sum()):.2f} |")
    from ebmlab.report import save_composition_figure

    save_composition_figure(product, rows["product a x b"][:64].cpu(), root / "product.png")
    print(f"\nproduct samples: {root / 'product.png'}")


if __name__ == "__main__":
    main()
