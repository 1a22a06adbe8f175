"""Bad input, fuzzed: malformed data, bad configs and paths each give one line and exit code 2.

Every case drives `ebmlab.cli.main` in-process and checks that stderr is exactly one line
`ebmlab: error: ...` naming the problem, that no warning or traceback escaped, and that no file
was written: neither in the working folder (no new run directory, no file made by a YAML tag)
nor in an existing, finished run the command points at, whose every file stays byte-identical.
A few cases run again through `python -m ebmlab`, the real entry point.

Odd but valid tables (one column, constant columns, duplicated rows, more columns than rows,
integer columns, the fewest rows accepted, a huge offset) are fuzzed the other way: each trains
a few steps end to end, through the CLI (training, metrics, report) and through the estimator,
and scores every row finite; a column float32 cannot hold (1e9 + noise of 1) is a bad case of
the CLI, while the estimator, which standardises in float64, fits it.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import ebmlab
from ebmlab import EnergyOutlierDetector, checkpoints
from ebmlab.cli import main
from tests.helpers import TINY, tiny_run_overrides

PYTHON_TAG = '!!python/object/apply:os.system ["touch PWNED"]'
ROWS = [f"{i % 7}.5,{i % 3}" for i in range(20)]  # 20 rows, 2 columns: a valid table


def csv_with(row: str, header: str = "a,b") -> str:
    """A valid table whose sixth row is replaced by `row`."""
    return "\n".join([header, *ROWS[:5], row, *ROWS[6:]]) + "\n"


def save(array: np.ndarray):
    return lambda path, run: np.save(path, array)


def save_csv(table: np.ndarray, path: Path) -> None:
    """`table` as a CSV with a header row, integers written as integers."""
    fmt = "%d" if np.issubdtype(table.dtype, np.integer) else "%.17g"
    header = ",".join(f"c{j}" for j in range(table.shape[1]))
    np.savetxt(path, table, fmt=fmt, delimiter=",", header=header, comments="")


def huge_offset(n: int) -> np.ndarray:
    """Two columns, the first at 1e9 with noise of std 1: float32 steps by 64 there."""
    table = np.random.default_rng(3).normal(size=(n, 2))
    table[:, 0] += 1e9
    return table


def write(text: str | bytes):
    def make(path: Path, run: Path) -> None:
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)

    return make


def folder(*files: tuple[str, bytes]):
    def make(path: Path, run: Path) -> None:
        path.mkdir()
        for name, content in files:
            (path / name).write_bytes(content)

    return make


def png(seed: int) -> bytes:
    """An 8x8 greyscale PNG of noise."""
    import io

    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def unreadable(path: Path, run: Path) -> None:
    """A file whose every read fails (EIO). chmod 000 would not do: the tests may run as root,
    whom file modes do not stop from reading."""
    path.symlink_to("/proc/self/mem")


def run_copy(change):
    """A copy of the finished run, changed by `change(copy)`."""

    def make(path: Path, run: Path) -> None:
        shutil.copytree(run, path)
        change(path)

    return make


def without_checkpoint(path: Path) -> None:
    shutil.rmtree(path / "checkpoints")


def tagged_config(path: Path) -> None:
    (path / "config.yaml").write_text(f"method: {PYTHON_TAG}\n")


# inputs a case names as TMP/<name>, made in its working folder before it runs
INPUTS = {
    "nan.csv": write(csv_with("nan,1")),
    "inf.csv": write(csv_with("1,inf")),
    "empty.csv": write(""),
    "header.csv": write("a,b\n"),
    "one_row.csv": write("1.5,2\n"),
    "ragged.csv": write(csv_with("1,2,3")),
    "strings.csv": write(csv_with("1,abc")),
    "huge.csv": write(csv_with("1e300,1")),  # beyond float32
    "huge_offset.csv": lambda path, run: save_csv(huge_offset(20), path),
    "binary.csv": write(b"\xff\xfe\x00\x81" * 64),
    "unreadable.csv": unreadable,
    "object.npy": save(np.array([[1, "a"]] * 20, dtype=object)),
    "str.npy": save(np.array([["1", "2"]] * 20)),
    "complex.npy": save(np.ones((20, 2), dtype=complex)),
    "bool.npy": save(np.ones((20, 2), dtype=bool)),
    "rank1.npy": save(np.zeros(50)),
    "rank5.npy": save(np.zeros((20, 2, 2, 2, 2))),
    "zero_rows.npy": save(np.zeros((0, 2))),
    "nan.npy": save(np.array([[0.0, np.nan]] * 20)),
    "channels.npy": save(np.zeros((20, 8, 8, 5))),
    "huge_images.npy": save(np.full((20, 8, 8), 1e300)),
    "huge_offset.npy": save(huge_offset(20)),
    "corrupt.npy": write(b"\x93NUMPY not really"),
    "unreadable.npy": unreadable,
    "no_arrays.npz": lambda path, run: np.savez(path),
    "two_arrays.npz": lambda path, run: np.savez(path, a=np.zeros((20, 2)), b=np.zeros((20, 2))),
    "bad_labels.npz": lambda path, run: np.savez(path, x=np.zeros((20, 8, 8)), y=np.zeros(3)),
    "no_images": folder(("notes.txt", b"no pictures here")),
    "corrupt_png": folder(*[(f"{i}.png", png(i)) for i in range(12)], ("bad.png", png(0)[:70])),
    "plain_file": write("a file where a folder or a data file was meant"),
    "a_folder": folder(),
    "a_folder.npy": folder(),
    "unknown_section.yaml": write("model: {hidden: 32}\n"),
    "method_key.yaml": write("method: {nosuch: 1}\n"),
    "data_key.yaml": write("data: {nosuch: 1}\n"),
    "train_key.yaml": write("train: {nosuch: 1}\n"),
    "steps_abc.yaml": write("train: {steps: abc}\n"),
    "batch_float.yaml": write("data: {batch_size: 1.5}\n"),
    "lr_fast.yaml": write("method: {lr: fast}\n"),
    "not_mapping.yaml": write("- method\n- data\n"),
    "section_list.yaml": write("data: [1, 2]\n"),
    "invalid.yaml": write("train: {steps: [1,\n"),
    "python_tag.yaml": write(f"train: {PYTHON_TAG}\n"),
    "binary.yaml": write(b"\xff\xfe\x00\x81" * 64),
    "unreadable.yaml": unreadable,
    "stale_run": run_copy(without_checkpoint),
    "tagged_run": run_copy(tagged_config),
}

TRAIN = ["train", "cd", "--quiet", "--no-eval"]


def new(method: str) -> list[str]:
    """Train into a fresh run directory, which must not appear; should a case wrongly train, it
    stops after a second."""
    return ["train", method, "--quiet", "--no-eval", "--out", "TMP/out", "--train.max_seconds=1"]


NEW = new("cd")
RESUME = [*TRAIN, "--resume", "--out", "RUN"]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")


def case(id_: str, argv: list[str], word: str, marks=()):
    return pytest.param(argv, word, id=id_, marks=marks)


CASES = [
    # data files
    case("csv-nan", [*NEW, "--data", "TMP/nan.csv"], "NaN"),
    case("csv-inf", [*NEW, "--data", "TMP/inf.csv"], "infinite"),
    case("csv-empty", [*NEW, "--data", "TMP/empty.csv"], "empty"),
    case("csv-header-only", [*NEW, "--data", "TMP/header.csv"], "only a header"),
    case("csv-one-row", [*NEW, "--data", "TMP/one_row.csv"], "at least 10"),
    case("csv-ragged", [*NEW, "--data", "TMP/ragged.csv"], "3 column(s)"),
    case("csv-strings", [*NEW, "--data", "TMP/strings.csv"], "abc"),
    case("csv-huge", [*NEW, "--data", "TMP/huge.csv"], "float32"),
    case("csv-huge-offset", [*NEW, "--data", "TMP/huge_offset.csv"], "subtract 1000000000"),
    case("csv-binary", [*NEW, "--data", "TMP/binary.csv"], "not a text file"),
    case("csv-unreadable", [*NEW, "--data", "TMP/unreadable.csv"], "cannot read"),
    case("npy-object", [*NEW, "--data", "TMP/object.npy"], "Python objects"),
    case("npy-str", [*NEW, "--data", "TMP/str.npy"], "real numbers"),
    case("npy-complex", [*NEW, "--data", "TMP/complex.npy"], "real numbers"),
    case("npy-bool", [*NEW, "--data", "TMP/bool.npy"], "real numbers"),
    case("npy-rank1", [*NEW, "--data", "TMP/rank1.npy"], "(50,)"),
    case("npy-rank5", [*NEW, "--data", "TMP/rank5.npy"], "(20, 2, 2, 2, 2)"),
    case("npy-zero-rows", [*NEW, "--data", "TMP/zero_rows.npy"], "empty"),
    case("npy-nan", [*NEW, "--data", "TMP/nan.npy"], "NaN"),
    case("npy-channels", [*NEW, "--data", "TMP/channels.npy"], "C = 1 or 3"),
    case("npy-huge-images", [*NEW, "--data", "TMP/huge_images.npy"], "float32"),
    case("npy-huge-offset", [*NEW, "--data", "TMP/huge_offset.npy"], "steps of 64"),
    case("npy-corrupt", [*NEW, "--data", "TMP/corrupt.npy"], "cannot read"),
    case("npy-unreadable", [*NEW, "--data", "TMP/unreadable.npy"], "cannot read"),
    case("npz-no-arrays", [*NEW, "--data", "TMP/no_arrays.npz"], "no arrays"),
    case("npz-two-arrays", [*NEW, "--data", "TMP/two_arrays.npz"], "'x'"),
    case("npz-bad-labels", [*NEW, "--data", "TMP/bad_labels.npz"], "labels"),
    case("folder-no-images", [*NEW, "--data", "TMP/no_images"], "no .png"),
    case("folder-corrupt-png", [*NEW, "--data", "TMP/corrupt_png"], "bad.png"),
    case("data-plain-file", [*NEW, "--data", "TMP/plain_file"], "unsupported file type"),
    case("data-npy-is-folder", [*NEW, "--data", "TMP/a_folder.npy"], "no .png"),
    case("data-missing", [*NEW, "--data", "TMP/missing.csv"], "does not exist"),
    case("data-unknown-name", [*NEW, "--data", "nosuchset"], "unknown dataset"),
    case("data-classes-absent", [*NEW, "--data.classes=[99]"], "99"),
    case("data-classes-not-ints", [*NEW, "--data.classes=abc"], "data.classes"),
    case("data-n-train-zero", [*NEW, "--data.n_train=0"], "n_train"),
    # config files
    case("config-missing", [*NEW, "--config", "TMP/missing.yaml"], "neither a file"),
    case("config-is-folder", [*NEW, "--config", "TMP/a_folder"], "neither a file"),
    case("config-unknown-section", [*NEW, "--config", "TMP/unknown_section.yaml"], "model"),
    case("config-unknown-method-key", [*NEW, "--config", "TMP/method_key.yaml"], "nosuch"),
    case("config-unknown-data-key", [*NEW, "--config", "TMP/data_key.yaml"], "nosuch"),
    case("config-unknown-train-key", [*NEW, "--config", "TMP/train_key.yaml"], "nosuch"),
    case("config-steps-abc", [*NEW, "--config", "TMP/steps_abc.yaml"], "train.steps"),
    case("config-batch-float", [*NEW, "--config", "TMP/batch_float.yaml"], "data.batch_size"),
    case("config-lr-fast", [*NEW, "--config", "TMP/lr_fast.yaml"], "method.lr"),
    case("config-not-mapping", [*NEW, "--config", "TMP/not_mapping.yaml"], "mapping"),
    case("config-section-list", [*NEW, "--config", "TMP/section_list.yaml"], "data"),
    case("config-invalid-yaml", [*NEW, "--config", "TMP/invalid.yaml"], "not valid YAML"),
    case("config-python-tag", [*NEW, "--config", "TMP/python_tag.yaml"], "python/object"),
    case("config-binary", [*NEW, "--config", "TMP/binary.yaml"], "not a text file"),
    case("config-unreadable", [*NEW, "--config", "TMP/unreadable.yaml"], "cannot read"),
    # overrides and flags
    case("steps-negative", [*NEW, "--train.steps=-5"], "train.steps"),
    case("steps-zero", [*NEW, "--train.steps=0"], "train.steps"),
    case("steps-flag-negative", [*NEW, "--steps", "-5"], "train.steps"),
    case("steps-flag-abc", [*NEW, "--steps", "abc"], "--steps"),
    case("steps-fraction", [*NEW, "--train.steps=1.5"], "integer"),
    case("steps-overflow", [*NEW, "--train.steps=1e400"], "train.steps"),
    case("batch-size-zero", [*NEW, "--data.batch_size=0"], "data.batch_size"),
    case("batch-size-negative", [*NEW, "--data.batch_size=-3"], "data.batch_size"),
    case("batch-size-bool", [*NEW, "--data.batch_size=yes"], "data.batch_size"),
    case("log-every-zero", [*NEW, "--train.log_every=0"], "train.log_every"),
    case("ckpt-every-zero", [*NEW, "--train.ckpt_every=-1"], "train.ckpt_every"),
    case("sample-every-negative", [*NEW, "--train.sample_every=-1"], "train.sample_every"),
    case("seed-negative", [*NEW, "--seed", "-1"], "train.seed"),
    case("data-seed-negative", [*NEW, "--data.seed=-1"], "data.seed"),
    case("ema-decay-one", [*NEW, "--train.ema_decay=1.5"], "train.ema_decay"),
    case("ema-modules-unknown", [*NEW, "--train.ema_modules=[generator]"], "train.ema_modules"),
    case("max-seconds-zero", [*NEW, "--train.max_seconds=0"], "train.max_seconds"),
    case("eval-samples-zero", [*NEW, "--train.eval_samples=0"], "train.eval_samples"),
    case("compile-not-bool", [*NEW, "--train.compile=maybe"], "train.compile"),
    case("amp-unknown", [*NEW, "--amp", "fp16"], "--amp"),
    case("amp-on-cpu", [*NEW, "--amp", "bf16", "--device", "cpu"], "CUDA"),
    case("train-unknown-key", [*NEW, "--train.nosuch=1"], "nosuch"),
    case("data-unknown-key", [*NEW, "--data.nosuch=1"], "nosuch"),
    case("method-unknown-key", [*NEW, "--method.nosuch=1"], "nosuch"),
    case("net-unknown-key", [*NEW, "--method.energy_net.nosuch=1"], "nosuch"),
    case("net-not-mapping", [*NEW, "--method.energy_net=5"], "energy_net"),
    case("override-python-tag", [*NEW, f"--train.steps={PYTHON_TAG}"], "python/object"),
    case("override-invalid-yaml", [*NEW, "--method.energy_net={kind: mlp"], "YAML"),
    case("cd-langevin-steps", [*NEW, "--method.langevin_steps=-1"], "langevin_steps"),
    case("cd-step-size", [*NEW, "--method.step_size=-0.1"], "step_size"),
    case("cd-noise", [*NEW, "--method.noise=-1"], "noise"),
    case(
        "shortrun-langevin-steps",
        [*new("shortrun"), "--method.langevin_steps=-2"],
        "langevin_steps",
    ),
    case("icd-step-size", [*new("icd"), "--method.step_size=0"], "step_size"),
    case("dsm-sigma", [*new("dsm"), "--method.sigma=-0.1"], "sigma"),
    case("dsm-sample-steps", [*new("dsm"), "--method.sample_steps=-1"], "sample_steps"),
    case(
        "gebm-latent-steps",
        [*new("gebm"), "--method.latent_steps=-1"],
        "latent_steps",
    ),
    case(
        "gebm-latent-step-size",
        [*new("gebm"), "--method.latent_step_size=-1"],
        "latent_step_size",
    ),
    case("dualmcmc-x-steps", [*new("dualmcmc"), "--method.x_steps=-1"], "x_steps"),
    case(
        "dualmcmc-z-step-size",
        [*new("dualmcmc"), "--method.z_step_size=0"],
        "z_step_size",
    ),
    case(
        "bidvl-sample-steps",
        [*new("bidvl"), "--method.sample_langevin_steps=-1"],
        "sample_langevin_steps",
    ),
    case("method-unknown", [*new("nosuch")], "unknown method"),
    case("device-cuda", [*NEW, "--device", "cuda"], "GPU", marks=NO_CUDA),
    case("device-cuda-99", [*NEW, "--device", "cuda:99"], "cuda:99"),
    case("device-unknown", [*NEW, "--device", "tpu"], "tpu"),
    # an existing run: never overwritten, never touched by a refused resume
    case("out-existing-run", [*TRAIN, "--out", "RUN"], "--resume"),
    case("resume-no-out", [*TRAIN, "--resume"], "--out"),
    case("resume-missing", [*TRAIN, "--resume", "--out", "TMP/missing"], "nothing to resume"),
    case("resume-not-a-run", [*TRAIN, "--resume", "--out", "TMP/a_folder"], "nothing to resume"),
    case(
        "resume-no-checkpoint",
        [*TRAIN, "--resume", "--out", "TMP/stale_run", "--steps", "8"],
        "nothing to resume",
    ),
    case("resume-tagged-config", [*TRAIN, "--resume", "--out", "TMP/tagged_run"], "python/object"),
    case(
        "resume-other-method", ["train", "dsm", "--quiet", "--resume", "--out", "RUN"], "'cd' run"
    ),
    case("resume-steps-negative", [*RESUME, "--train.steps=-5"], "train.steps"),
    case("resume-unknown-key", [*RESUME, "--train.nosuch=1"], "nosuch"),
    case("resume-bad-method-option", [*RESUME, "--method.langevin_steps=-1"], "langevin_steps"),
    case("resume-batch-size-zero", [*RESUME, "--data.batch_size=0"], "data.batch_size"),
    case("resume-python-tag", [*RESUME, f"--train.steps={PYTHON_TAG}"], "python/object"),
    # sample, eval, compose
    case("sample-not-a-run", ["sample", "TMP/a_folder"], "not a trained run"),
    case("sample-missing", ["sample", "TMP/missing"], "not a trained run"),
    case(
        "sample-tagged-config", ["sample", "TMP/tagged_run", "--out", "TMP/s.npy"], "python/object"
    ),
    case("sample-bad-suffix", ["sample", "RUN", "--out", "TMP/s.jpg"], ".png or .npy"),
    case("sample-n-zero", ["sample", "RUN", "--n", "0", "--out", "TMP/s.npy"], "--n"),
    case("sample-n-negative", ["sample", "RUN", "--n", "-3", "--out", "TMP/s.npy"], "--n"),
    case("sample-out-folder", ["sample", "RUN", "--out", "TMP/a_folder.npy"], "folder"),
    case("sample-out-no-parent", ["sample", "RUN", "--out", "TMP/nowhere/s.npy"], "nowhere"),
    case("sample-override", ["sample", "RUN", "--train.steps=5"], "only apply to train"),
    case("eval-not-a-run", ["eval", "TMP/a_folder"], "not a trained run"),
    case("eval-unknown-ood", ["eval", "RUN", "--ood", "nosuchset"], "nosuchset"),
    case("eval-ood-for-images", ["eval", "RUN", "--ood", "textures"], "image"),
    case("eval-nan-data", ["eval", "RUN", "--data", "TMP/nan.csv"], "NaN"),
    case("eval-other-shape", ["eval", "RUN", "--data", "digits"], "shape"),
    case("eval-n-zero", ["eval", "RUN", "--n", "0"], "--n"),
    case("compose-not-a-run", ["compose", "RUN", "TMP/a_folder"], "not a trained run"),
    case("compose-weights", ["compose", "RUN", "RUN", "--weights", "1"], "1 weights"),
    case("compose-nan-weight", ["compose", "RUN", "RUN", "--weights", "1", "nan"], "weights"),
    case("compose-bad-suffix", ["compose", "RUN", "--out", "TMP/c.gif"], ".png or .npy"),
    case("compose-n-negative", ["compose", "RUN", "--n", "-1", "--out", "TMP/c.npy"], "--n"),
]
N_CASES = 127


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A tiny finished cd run on 8gaussians (4 steps, no evaluation)."""
    root = tmp_path_factory.mktemp("fuzz_run")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_run_overrides("cd", n_train=200)))
    args = ["train", "cd", "--steps", "4", "--no-eval", "--quiet", "--config", str(config)]
    assert main([*args, "--out", str(root / "run")]) == 0
    assert checkpoints.paths(root / "run")
    return root / "run"


def tree(root: Path) -> dict[str, str]:
    """Everything under root: relative path -> sha256 of a file's bytes, '/' for a folder."""
    return {str(p.relative_to(root)): digest(p) for p in sorted(root.rglob("*"))}


def digest(path: Path) -> str:
    if path.is_symlink():  # the unreadable inputs: their target, never their bytes
        return f"-> {path.readlink()}"
    return "/" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()


def prepare(argv: list[str], tmp: Path, run: Path) -> list[str]:
    """argv with TMP/ and RUN resolved, and the inputs it names made under tmp."""
    resolved = []
    for arg in argv:
        if arg.startswith("TMP/"):
            name = arg.removeprefix("TMP/").split("/")[0]
            if name in INPUTS and not (tmp / name).exists():
                INPUTS[name](tmp / name, run)
            arg = str(tmp / arg.removeprefix("TMP/"))
        resolved.append(str(run) if arg == "RUN" else arg)
    return resolved


def one_error_line(stderr: str, word: str) -> None:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("ebmlab: error: "), stderr
    assert "Traceback" not in stderr
    assert word in lines[0], lines[0]


def test_the_table_counts_its_cases():
    ids = [param.id for param in CASES]
    assert len(ids) == len(set(ids)) == N_CASES


@pytest.mark.parametrize(("argv", "word"), CASES)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    argv, word, finished_run, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # anything a case wrongly writes by default would land here
    argv = prepare(argv, tmp_path, finished_run)
    before, run_before = tree(tmp_path), tree(finished_run)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, err
    one_error_line(err, word)
    assert out == ""
    assert [str(w.message) for w in caught] == []  # a warning would be a second line
    assert tree(tmp_path) == before  # no run directory, no half-written output, no PWNED
    assert tree(finished_run) == run_before


@pytest.mark.parametrize(
    "name", ["csv-ragged", "config-python-tag", "steps-flag-abc", "resume-steps-negative"]
)
def test_the_real_entry_point_agrees(name, finished_run, tmp_path):
    (argv, word), _, _ = next(p for p in CASES if p.id == name)
    argv = prepare(argv, tmp_path, finished_run)
    before, run_before = tree(tmp_path), tree(finished_run)
    result = subprocess.run(
        [sys.executable, "-m", "ebmlab", *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    one_error_line(result.stderr, word)
    assert tree(tmp_path) == before and tree(finished_run) == run_before


RNG = np.random.default_rng(0)
CONSTANT_COLUMN = RNG.normal(size=(200, 3))
CONSTANT_COLUMN[:, 1] = 7.0
ROUNDED_COLUMN = RNG.normal(size=(100, 2))
ROUNDED_COLUMN[:, 1] = [0.3, 0.1 + 0.2] * 50  # 0.3 and 0.30000000000000004: float64 rounding
# odd tables that must train: (name, table); the CLI reads each as .npy, some also as .csv
ODD_TABLES = {
    "one-column": RNG.normal(size=(200, 1)),
    "constant-column": CONSTANT_COLUMN,
    "every-column-constant": np.full((50, 3), 2.5),
    "constant-but-for-rounding": ROUNDED_COLUMN,
    "duplicated-rows": np.repeat(RNG.normal(size=(10, 2)), 20, axis=0),
    "more-columns-than-rows": RNG.normal(size=(12, 40)),
    "integer-columns": RNG.integers(0, 5, size=(200, 3)),
    "fewest-rows": RNG.normal(size=(10, 2)),  # the loader's minimum: 8 to train, 2 to test
}
ODD_FILES = [f"{name}.npy" for name in ODD_TABLES] + ["one-column.csv", "integer-columns.csv"]
TINY_TABLE_RUN = {
    "method": {"energy_net": {"kind": "mlp", "hidden": 16, "depth": 2}, **TINY["cd"]},
    "data": {"batch_size": 64},
    "train": {"sample_every": 0, "eval_samples": 100, "device": "cpu"},
}


@pytest.mark.parametrize("file", ODD_FILES)
def test_odd_tables_train_end_to_end_through_the_cli(file, tmp_path, capsys):
    name, suffix = file.rsplit(".", 1)
    table, path = ODD_TABLES[name], tmp_path / file
    np.save(path, table) if suffix == "npy" else save_csv(table, path)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_TABLE_RUN))
    argv = ["train", "cd", "--quiet", "--steps", "4", "--data", str(path), "--config", str(config)]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0, capsys.readouterr().err
    run = ebmlab.load(tmp_path / "run", device="cpu")
    assert run.model.energy(table).isfinite().all()
    assert run.model.sample(8, seed=0).isfinite().all()
    assert all(np.isfinite(value) for value in run.metrics.values()) and "mmd2" in run.metrics
    assert (tmp_path / "run" / "report.md").is_file()


@pytest.mark.parametrize("name", [*ODD_TABLES, "huge-offset"])
def test_odd_tables_fit_the_estimator(name):
    table = huge_offset(200) if name == "huge-offset" else ODD_TABLES[name]
    settings = {"net": {"hidden": 16, "depth": 2}, "method_params": TINY["cd"]}
    detector = EnergyOutlierDetector(steps=4, random_state=0, **settings).fit(table)
    assert np.isfinite(detector.score_samples(table)).all()
    assert np.isfinite(detector.sample(8, random_state=0)).all()


def test_a_huge_offset_keeps_its_spread_in_the_estimator():
    """Standardised in float64, the column at 1e9 keeps its noise: rows 1 apart score apart."""
    table = huge_offset(500)
    detector = EnergyOutlierDetector("dsm", steps=100, random_state=0).fit(table)
    assert detector.scaler_.scale_[0] == pytest.approx(1, abs=0.1)
    scores = detector.score_samples([[1e9, 0.0], [1e9 + 4, 0.0]])
    assert scores[0] - scores[1] > 2  # 4 standard deviations out; float32 would read both as 1e9
