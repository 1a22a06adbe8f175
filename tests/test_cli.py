"""The CLI as a user meets it: subprocess runs, and one clear line with exit code 2 on bad input."""

import subprocess
import sys

import numpy as np
import pytest

TINY = [
    "--method.energy_net={kind: mlp, hidden: 32, depth: 2}",
    "--method.langevin_steps=5",
    "--method.sample_steps=10",
    "--data.n_train=1000",
    "--train.sample_every=0",
]


def ebmlab(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "ebmlab", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    result = ebmlab(
        "train",
        "cd",
        "--data",
        "8gaussians",
        "--steps",
        20,
        "--out",
        "runs/x",
        "--quiet",
        *TINY,
        cwd=root,
    )
    assert result.returncode == 0, result.stderr
    return root


def test_train_writes_a_complete_run(trained):
    run = trained / "runs/x"
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "checkpoints/step_000000020.pt",
        "report.md",
        "eval.json",
        "density.png",
        "loss.png",
    ):
        assert (run / name).is_file(), name
    assert "hidden: 32" in (run / "config.yaml").read_text()
    assert "| kl |" in (run / "report.md").read_text()


def test_sample_to_png_and_npy(trained):
    assert ebmlab("sample", "runs/x", "--n", 50, "--out", "s.npy", cwd=trained).returncode == 0
    samples = np.load(trained / "s.npy")
    assert samples.shape == (50, 2) and np.isfinite(samples).all()
    assert ebmlab("sample", "runs/x", "--n", 50, "--out", "s.png", cwd=trained).returncode == 0
    assert (trained / "s.png").stat().st_size > 1000


def test_eval_prints_metrics(trained):
    result = ebmlab("eval", "runs/x", "--n", 200, cwd=trained)
    assert result.returncode == 0, result.stderr
    assert "kl" in result.stdout and "mmd2" in result.stdout


def test_info_lists_methods_datasets_presets():
    result = ebmlab("info", cwd=".")
    assert result.returncode == 0, result.stderr
    for word in ("cd", "shortrun", "dsm", "8gaussians", "digits", "mnist", "cd_toy2d", "torch"):
        assert word in result.stdout, word
    assert "toy2d -> <method>_tabular" in result.stdout


def bad_npy(tmp_path):
    path = tmp_path / "nan.npy"
    np.save(path, np.array([[0.0, np.nan]] * 50))
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "nosuch"], "unknown method 'nosuch'"),
        (["train", "cd", "--data", "missing.npy"], "missing.npy"),
        (["train", "cd", "--data", "nosuchset"], "nosuchset"),
        (["train", "cd", "--data", "NAN"], "NaN"),
        (["train", "cd", "--method.lrr=1"], "unknown method option"),
        (["train", "cd", "--train.steps=many"], "train.steps must be int"),
        (["sample", "no/run"], "no/run"),
        (["sample", "--n", "3", "RUN", "--out", "x.jpg"], "must end in .png or .npy"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, trained):
    args = [str(bad_npy(tmp_path)) if a == "NAN" else a for a in args]
    args = [str(trained / "runs/x") if a == "RUN" else a for a in args]
    result = ebmlab(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert message in lines[0]


def test_existing_run_needs_resume(trained):
    result = ebmlab("train", "cd", "--out", "runs/x", "--steps", 5, "--quiet", *TINY, cwd=trained)
    assert result.returncode == 2 and "--resume" in result.stderr


TINY_ICD = [
    "--method.energy_net={kind: mlp, hidden: 32, depth: 2}",
    "--method.langevin_steps=5",
    "--method.sample_rounds=2",
    "--method.sample_round_steps=5",
    "--data.n_train=1000",
    "--train.sample_every=0",
    "--quiet",
]


@pytest.fixture(scope="module")
def conditional(tmp_path_factory):
    """Two class-conditional icd runs on 8gaussians: components {0, 2, 4} and {2, 4, 6}."""
    root = tmp_path_factory.mktemp("compose")
    for name, classes in (("a", "[0,2,4]"), ("b", "[2,4,6]")):
        args = ["train", "icd", "--steps", 20, "--out", f"runs/{name}", *TINY_ICD]
        result = ebmlab(*args, f"--data.classes={classes}", "--no-eval", cwd=root)
        assert result.returncode == 0, result.stderr
    return root


def test_compose_writes_a_figure_and_samples(conditional):
    result = ebmlab("compose", "runs/a", "runs/b", "--out", "both.png", cwd=conditional)
    assert result.returncode == 0, result.stderr
    assert "product of 2 models" in result.stdout
    assert (conditional / "both.png").stat().st_size > 5000
    args = ["compose", "runs/a", "runs/b", "--weights", 1, 2, "--n", 30, "--out", "both.npy"]
    assert ebmlab(*args, cwd=conditional).returncode == 0
    samples = np.load(conditional / "both.npy")
    assert samples.shape == (30, 2) and np.isfinite(samples).all()
    result = ebmlab("compose", "runs/a", "runs/b", "--weights", 1, cwd=conditional)
    assert result.returncode == 2 and "1 weights for 2 models" in result.stderr


def test_eval_scores_the_standard_ood_sets(conditional):
    result = ebmlab("eval", "runs/a", "--n", 100, "--ood", "standard", cwd=conditional)
    assert result.returncode == 0, result.stderr
    assert "auroc/off-data" in result.stdout and "auroc/noise" in result.stdout
    assert (conditional / "runs/a/ood.png").stat().st_size > 5000
    assert "Energies of test data and OOD sets" in (conditional / "runs/a/report.md").read_text()
    result = ebmlab("eval", "runs/a", "--ood", "textures", cwd=conditional)
    assert result.returncode == 2 and "made for image data" in result.stderr
