"""A run loses nothing: checksummed rotating checkpoints, safe loading, kills and signals."""

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import ebmlab
from ebmlab import checkpoints
from ebmlab.cli import main as cli
from tests.helpers import TINY_CD
from tests.helpers import quick_cd as quick

STEPS = 200  # long enough that a signal sent after step 20's checkpoint lands mid-run


def final_state(run_dir: Path) -> dict:
    payload, path = checkpoints.read_latest(run_dir)
    return {"step": payload["step"], **payload["method"], "rng": payload["rng"]["torch"]}


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        same = value == b[key] if key == "step" else torch.equal(value, b[key])
        assert same, key


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: what every interrupted run below must end equal to."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    quick(run_dir, STEPS)
    return final_state(run_dir)


def test_the_newest_k_are_kept_and_no_temporary_file_is_left(tmp_path):
    quick(tmp_path / "run", 50)
    names = sorted(p.name for p in (tmp_path / "run/checkpoints").iterdir())
    assert names == [f"step_{s:09d}.pt" for s in (30, 40, 50)]  # keep_checkpoints: 3


def damage_by_truncation(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def damage_by_a_flipped_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the payload: only the checksum can tell
    path.write_bytes(bytes(data))


def damage_by_garbage(path: Path) -> None:
    path.write_bytes(garbage(path.stat().st_size, seed=0))


def garbage(size: int, seed: int, prefix: bytes = b"") -> bytes:
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randint(0, 256, (size,), dtype=torch.uint8, generator=generator)
    return prefix + bytes(noise.tolist())


@pytest.mark.parametrize("prefix", [b"", b"\x80\x02", b"PK\x03\x04"])  # raw, pickle, zip heads
def test_any_garbage_is_reported_as_a_corrupt_checkpoint(tmp_path, prefix):
    path = tmp_path / "step_000000001.pt"
    for seed in range(300):  # whatever the unpickler trips on, the caller sees one error type
        path.write_bytes(garbage(64 + seed, seed, prefix))
        with pytest.raises(checkpoints.CorruptCheckpoint):
            checkpoints.read(path)


@pytest.mark.parametrize(
    "damage", [damage_by_truncation, damage_by_a_flipped_byte, damage_by_garbage]
)
def test_a_damaged_checkpoint_is_reported_and_resume_falls_back(
    tmp_path, capsys, reference, damage
):
    quick(tmp_path / "run", 30)
    damage(checkpoints.path_for(tmp_path / "run", 30))
    capsys.readouterr()
    quick(tmp_path / "run", STEPS, resume=True)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "step_000000030.pt" in lines[0]
    assert "falling back to step_000000020.pt" in lines[0]
    assert any(word in lines[0] for word in ("truncated", "checksum", "damaged"))
    assert_same_state(final_state(tmp_path / "run"), reference)  # from step 20, exactly
    assert "falling back" in (tmp_path / "run/train.log").read_text()


def test_load_falls_back_and_a_run_with_only_damaged_checkpoints_is_refused(tmp_path, capsys):
    run = quick(tmp_path / "run", 20)
    damage_by_a_flipped_byte(checkpoints.path_for(run.path, 20))
    x = torch.randn(5, 2)
    loaded = ebmlab.load(run.path, device="cpu")
    assert "falling back to step_000000010.pt" in capsys.readouterr().err
    assert not torch.allclose(loaded.model.energy(x), run.model.energy(x))  # step 10's weights
    for path in checkpoints.paths(run.path):
        damage_by_truncation(path)
    with pytest.raises(ebmlab.EbmlabError, match="every checkpoint .* is corrupted"):
        ebmlab.load(run.path, device="cpu")


@pytest.mark.parametrize("case", ["every checkpoint damaged", "fewer steps than done"])
def test_a_refused_resume_leaves_the_run_as_it_was(tmp_path, case):
    run = quick(tmp_path / "run", 20)
    if case == "every checkpoint damaged":
        for path in checkpoints.paths(run.path):
            damage_by_truncation(path)
    before = {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file()}
    message = "every checkpoint" if case == "every checkpoint damaged" else "at step 20, past"
    with pytest.raises(ebmlab.EbmlabError, match=message):
        quick(tmp_path / "run", 40 if case == "every checkpoint damaged" else 10, resume=True)
    after = {
        p: p.read_bytes() for p in run.path.rglob("*") if p.is_file() and p.name != "train.log"
    }
    assert after == {p: data for p, data in before.items() if p.name != "train.log"}


class Payload:
    """Unpickling this runs `touch <marker>`: what a crafted checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def crafted_envelope(body: bytes) -> dict:
    import hashlib

    return {
        "format": checkpoints.FORMAT,
        "version": checkpoints.VERSION,
        "sha256": hashlib.sha256(body).hexdigest(),
        "payload": body,
    }


@pytest.mark.parametrize("wrapped", [True, False], ids=["valid-checksum", "bare-pickle"])
def test_a_malicious_pickle_is_refused_and_never_runs(tmp_path, capsys, wrapped):
    run = quick(tmp_path / "run", 10)
    marker = tmp_path / "PWNED"
    inner = io.BytesIO()
    torch.save({"step": 10, "method": Payload(marker)}, inner)
    newest = checkpoints.path_for(run.path, 10)
    if wrapped:
        torch.save(crafted_envelope(inner.getvalue()), newest)
    else:
        newest.write_bytes(inner.getvalue())
    with pytest.raises(checkpoints.UnsafeCheckpoint, match="refusing to load"):
        ebmlab.load(run.path, device="cpu")
    with pytest.raises(checkpoints.UnsafeCheckpoint):
        quick(tmp_path / "run", 20, resume=True)
    capsys.readouterr()
    assert cli(["sample", str(run.path), "--out", str(tmp_path / "s.npy")]) == 2
    assert "refusing to load" in capsys.readouterr().err
    assert not marker.exists()


def launch(tmp_path: Path, run_dir: Path, steps: int, resume: bool = False) -> subprocess.Popen:
    """`ebmlab train` of the tiny cd run in a child process (its config in a YAML file)."""
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_CD))
    args = ["train", "cd", "--data", "8gaussians", "--steps", str(steps), "--out", str(run_dir)]
    args += ["--config", str(config), "--quiet", "--no-eval"] + (["--resume"] if resume else [])
    return subprocess.Popen(
        [sys.executable, "-m", "ebmlab", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )


def newest_step(run_dir: Path) -> int:
    names = checkpoints.paths(run_dir)
    return int(names[0].stem.removeprefix("step_")) if names else -1


def wait_for_checkpoint(run_dir: Path, process: subprocess.Popen, step: int) -> None:
    """Until a checkpoint of `step` or later exists (older ones rotate away quickly)."""
    deadline = time.monotonic() + 120
    while newest_step(run_dir) < step:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint within two minutes"
        time.sleep(0.01)


def test_a_run_killed_mid_flight_resumes_to_the_same_parameters(tmp_path, reference):
    run_dir = tmp_path / "run"
    child = launch(tmp_path, run_dir, STEPS)
    wait_for_checkpoint(run_dir, child, 20)
    child.kill()  # SIGKILL: no handler runs, whatever the child was doing
    child.wait()
    assert child.returncode == -signal.SIGKILL
    killed_at = checkpoints.read_latest(run_dir)[0]["step"]
    assert 20 <= killed_at < STEPS
    resumed = launch(tmp_path, run_dir, STEPS, resume=True)
    assert resumed.wait() == 0, resumed.communicate()
    assert_same_state(final_state(run_dir), reference)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_writes_a_checkpoint_and_exits_cleanly(tmp_path, reference, signum):
    run_dir = tmp_path / "run"
    child = launch(tmp_path, run_dir, STEPS)
    wait_for_checkpoint(run_dir, child, 20)
    child.send_signal(signum)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 128 + signum, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    stopped_at = checkpoints.read_latest(run_dir)[0]["step"]
    assert f"stopped training at step {stopped_at}; checkpoint" in line
    assert signal.Signals(signum).name in line and "--resume" in line
    assert 20 <= stopped_at < STEPS
    resumed = launch(tmp_path, run_dir, STEPS, resume=True)
    assert resumed.wait() == 0, resumed.communicate()
    assert_same_state(final_state(run_dir), reference)
