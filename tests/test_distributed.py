"""Multi-process training: `torchrun --nproc_per_node=2` on CPU (gloo), as the README shows.

Each launch costs seconds (every process imports torch), so module fixtures train the runs
that several tests read: a 2-process ICD run of 20 steps, and one of 10 steps resumed to 20.
ICD is the method DDP cannot train: its KL term differentiates through the last Langevin step.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import ebmlab
from ebmlab import checkpoints, cli, distributed
from ebmlab.data import load_dataset
from ebmlab.methods import METHODS
from ebmlab.train import Trainer
from tests.distributed_worker import TABLE_RUN, Probe, probe_updates
from tests.helpers import tiny_run_overrides

REPO = Path(__file__).resolve().parents[1]

TINY_ICD = tiny_run_overrides("icd", n_train=512)
PER_PROCESS = {"buffer.storage", "buffer.written"}  # ICD's state that is not a weight


def torchrun(module: str, *args) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node=2 -m module args` from the repository root."""
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        + ["-m", module, *map(str, args)],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # one thread per process: 2 CI cores
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def train_icd(out: Path, steps: int) -> list:
    """`ebmlab train` arguments for TINY_ICD on 8gaussians."""
    config = out.parent / "tiny_icd.yaml"
    config.write_text(yaml.safe_dump(TINY_ICD))
    return ["icd", "--data", "8gaussians", "--steps", steps, "--out", out, "--config", config]


def checkpoint(run_dir: Path) -> dict:
    return checkpoints.read_latest(run_dir)[0]


def history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """20 steps on 2 processes; each process saved its final state to dump/rank<r>.pt."""
    root = tmp_path_factory.mktemp("ddp")
    (root / "dump").mkdir()
    args = train_icd(root / "whole", 20)
    result = torchrun("tests.distributed_worker", "train", root / "dump", "train", *args)
    ranks = [torch.load(root / f"dump/rank{r}.pt") for r in range(2)]
    return root / "whole", ranks, result.stdout


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """10 steps on 2 processes, then resumed there to 20."""
    out = tmp_path_factory.mktemp("ddp_split") / "split"
    torchrun("ebmlab", "train", *train_icd(out, 10), "--quiet", "--no-eval")
    torchrun("ebmlab", "train", *train_icd(out, 20), "--resume", "--quiet", "--no-eval")
    return out


def test_ranks_keep_identical_weights_and_their_own_buffers(whole):
    """The weights each rank ends with (the EMA's, as `ebmlab.train` returns them, which
    repeat the live weights' equality step by step) are bit-identical; the chains differ."""
    run_dir, (rank0, rank1), stdout = whole
    assert set(rank0) > PER_PROCESS
    for key in set(rank0) - PER_PROCESS:  # every weight, bit for bit
        assert torch.equal(rank0[key], rank1[key]), key
    assert not torch.equal(rank0["buffer.storage"], rank1["buffer.storage"])
    # rank 0 alone wrote the checkpoint; it carries rank 1's chains and RNG state too
    saved = checkpoint(run_dir)
    assert saved["step"] == 20 and saved["processes"] == 2
    assert torch.equal(saved["method"]["buffer.storage"], rank0["buffer.storage"])
    (other,) = saved["other_processes"]
    assert set(other["buffers"]) == PER_PROCESS
    assert torch.equal(other["buffers"]["buffer.storage"], rank1["buffer.storage"])
    assert not torch.equal(other["rng"]["torch"], saved["rng"]["torch"])  # own noise each
    for key, value in saved["ema"]["energy_net"]["weights"].items():  # the returned weights
        assert torch.equal(value, rank1[f"energy_net.{key}"]), key
    # one writer: one row per log step, one summary line, one report
    rows = history(run_dir)
    assert [row["step"] for row in rows] == [5, 10, 15, 20]
    assert stdout.count("run written to") == 1
    assert (run_dir / "report.md").is_file() and (run_dir / "eval.json").is_file()


def test_icd_kl_term_trains_through_the_double_backward(whole):
    """ICD's L_opt differentiates through the last Langevin step (create_graph=True): the
    averaged gradient of that part is nonzero and finite at every logged step."""
    rows = history(whole[0])
    assert all(0 < row["grad_norm/kl"] < float("inf") for row in rows)
    assert all(abs(row["loss"]) < float("inf") for row in rows)


def test_every_method_keeps_the_ranks_weights_identical(tmp_path):
    """Four steps of each registered method on 2 processes (GEBM's log-partition c is a weight
    it sets from random draws before its first step: from every process's draws at once)."""
    torchrun("tests.distributed_worker", "methods", tmp_path)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert set(rank0) == set(rank1) == set(METHODS) | {TABLE_RUN}  # and cd's adapted step
    for method, weights in rank0.items():
        for key, value in weights.items():
            assert torch.equal(value, rank1[method][key]), f"{method}: {key}"


def test_update_averages_gradients_to_the_one_process_batch(tmp_path):
    """Two processes each run `Method.update` on half of one fixed batch, with losses that
    use no randomness; the averaged gradients must give the weights and the per-part norms of
    one process on the whole batch (up to float rounding: a mean of two half-batch means is
    not summed in the one-batch order). A parameter that only rank 1 uses gets the average
    on rank 0 too; one used nowhere keeps `.grad = None` on both, as in one process."""
    torchrun("tests.distributed_worker", "update", tmp_path)
    one_process = probe_updates(rank=0, world_size=1)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert set(ranks[0]) == set(one_process) > {"grad_norm", "grad_norm/positive"}
    for key, expected in one_process.items():
        assert torch.equal(ranks[0][key], ranks[1][key]), key
        torch.testing.assert_close(ranks[0][key], expected, rtol=0, atol=1e-6, msg=key)
    assert ranks[0]["sometimes_has_grad"] and not ranks[0]["never_has_grad"]
    torch.manual_seed(0)
    assert not torch.equal(ranks[0]["always.weight"], Probe().always.weight)  # it did move


def test_resume_with_two_processes_equals_the_uninterrupted_run(whole, split):
    run_dir = whole[0]
    """Bit for bit on CPU: each process gets back its own chains and RNG state."""
    a, b = checkpoint(run_dir), checkpoint(split)
    assert a["step"] == b["step"] == 20
    for key, value in a["method"].items():
        assert torch.equal(value, b["method"][key]), key
    for key, value in a["other_processes"][0]["buffers"].items():
        assert torch.equal(value, b["other_processes"][0]["buffers"][key]), key
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert torch.equal(
        a["other_processes"][0]["rng"]["torch"], b["other_processes"][0]["rng"]["torch"]
    )
    for key, value in a["ema"]["energy_net"]["weights"].items():
        assert torch.equal(value, b["ema"]["energy_net"]["weights"][key]), key
    for param, state in a["optimizers"]["energy"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizers"]["energy"]["state"][param][name]), name
    assert [r["loss"] for r in history(run_dir)] == [r["loss"] for r in history(split)]


def test_resume_with_another_number_of_processes_is_refused(split, tmp_path, capsys):
    """One process cannot continue two processes' chains: one clear line, exit code 2."""
    copy = tmp_path / "copy"
    shutil.copytree(split, copy)
    argv = ["train", "icd", "--out", str(copy), "--resume", "--steps", "30", "--quiet"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "written by 2 process(es)" in err and "resume it with 2" in err
    assert checkpoint(copy)["step"] == 20


def test_each_process_trains_on_its_own_rows_of_the_global_batch(tmp_path, monkeypatch):
    """data.batch_size is the global batch: two ranks' shards are its two halves."""
    run = ebmlab.train(
        "icd", steps=1, out=tmp_path / "run", overrides=TINY_ICD, evaluate=False, progress=False
    )
    dataset = load_dataset("8gaussians", n_train=512)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    trainer = Trainer(run.method, dataset, run.config, tmp_path, torch.device("cpu"))
    shards = []
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        shards.append(trainer.shard(3))
    assert [len(s) for s in shards] == [32, 32]
    assert torch.equal(torch.cat(shards), trainer.batch(3))
    odd = ebmlab.config.RunConfig.from_dict(
        ebmlab.config.merge(run.config.to_dict(), {"data": {"batch_size": 63}})
    )
    with pytest.raises(ebmlab.EbmlabError, match="multiple of the 2 processes"):
        Trainer(run.method, dataset, odd, tmp_path, torch.device("cpu"))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL between processes needs 2 GPUs")
def test_two_gpu_processes_keep_identical_weights_over_nccl(tmp_path):
    """The launch the README shows for one machine with GPUs: each process on cuda:LOCAL_RANK,
    gradients averaged by NCCL, the weights equal on both ranks and their chains their own."""
    (tmp_path / "dump").mkdir()
    args = [*train_icd(tmp_path / "run", 10), "--device", "cuda", "--no-eval"]
    torchrun("tests.distributed_worker", "train", tmp_path / "dump", "train", *args)
    rank0, rank1 = (torch.load(tmp_path / f"dump/rank{r}.pt", map_location="cpu") for r in (0, 1))
    for key in set(rank0) - PER_PROCESS:
        assert torch.equal(rank0[key], rank1[key]), key
    assert not torch.equal(rank0["buffer.storage"], rank1["buffer.storage"])
    saved = checkpoint(tmp_path / "run")
    assert saved["step"] == 10 and saved["processes"] == 2
