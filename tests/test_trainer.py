"""Trainer: exact resume, checkpoint contents, divergence guard, batch order, EMA wiring."""

import json
import sys

import pytest
import torch

import ebmlab
from ebmlab import checkpoints
from ebmlab.train import TrainingDiverged
from tests.helpers import TINY_CD, tiny_run_overrides
from tests.helpers import quick_cd as quick


def checkpoint(run_dir):
    return checkpoints.read_latest(run_dir)[0]


def test_resumed_run_equals_uninterrupted_bit_for_bit(tmp_path):
    quick(tmp_path / "whole", 30)
    quick(tmp_path / "split", 20)
    quick(tmp_path / "split", 30, resume=True)
    whole, split = checkpoint(tmp_path / "whole"), checkpoint(tmp_path / "split")
    assert whole["step"] == split["step"] == 30
    for key, value in whole["method"].items():  # weights and the replay buffer's chains
        assert torch.equal(value, split["method"][key]), key
    for key, value in whole["ema"]["energy_net"]["weights"].items():
        assert torch.equal(value, split["ema"]["energy_net"]["weights"][key]), key
    assert whole["ema"]["energy_net"]["updates"] == split["ema"]["energy_net"]["updates"] == 30
    assert torch.equal(whole["rng"]["torch"], split["rng"]["torch"])
    rows = [json.loads(line) for line in (tmp_path / "whole/metrics.jsonl").open()]
    rows_split = [json.loads(line) for line in (tmp_path / "split/metrics.jsonl").open()]
    assert [r["step"] for r in rows] == [r["step"] for r in rows_split] == [5, 10, 15, 20, 25, 30]
    assert [r["loss"] for r in rows] == [r["loss"] for r in rows_split]


def test_resume_drops_log_rows_past_the_checkpoint(tmp_path):
    quick(tmp_path / "run", 20)
    log = tmp_path / "run/metrics.jsonl"
    log.write_text(log.read_text() + json.dumps({"step": 25, "loss": 0.0}) + "\n")
    quick(tmp_path / "run", 20, resume=True)
    assert [json.loads(line)["step"] for line in log.open()] == [5, 10, 15, 20]


def test_checkpoint_is_complete_and_atomic(tmp_path):
    quick(tmp_path / "run", 10)
    payload = checkpoint(tmp_path / "run")
    assert set(payload) >= {"step", "config", "method", "optimizers", "ema", "rng", "scaler"}
    assert "buffer.storage" in payload["method"]
    assert payload["optimizers"]["energy"]["state"]  # Adam moments were saved
    assert not list((tmp_path / "run/checkpoints").glob(".*tmp"))


def test_an_existing_run_is_never_overwritten(tmp_path):
    quick(tmp_path / "run", 5)
    with pytest.raises(ebmlab.EbmlabError, match="already holds a run"):
        quick(tmp_path / "run", 5)


def spoil(monkeypatch, at_steps, name="loss", factor=float("nan"), times=1):
    """Make cd's logged `name` bad (times `factor`) at `at_steps`, the first `times` visits."""
    from ebmlab.methods.cd import CD

    real_step, visits = CD.train_step, []

    def spoiled_step(self, x, step):
        logs = real_step(self, x, step)
        if step in at_steps and visits.count(step) < times:
            visits.append(step)
            logs[name] = logs[name] * factor
        return logs

    monkeypatch.setattr(CD, "train_step", spoiled_step)
    return visits


@pytest.mark.parametrize(
    ("name", "factor", "at", "back_to"),
    [("loss", float("nan"), 12, 10), ("e_pos", 1e9, 12, 10), ("loss", float("inf"), 3, 0)],
)
def test_a_first_divergence_rolls_back_and_lowers_the_learning_rate(
    tmp_path, monkeypatch, name, factor, at, back_to
):
    visits = spoil(monkeypatch, {at}, name, factor)
    run = quick(tmp_path / "run", 30)
    assert visits == [at]  # the bad step happened once, and was trained again after the rollback
    payload = checkpoint(run.path)
    assert payload["step"] == 30 and payload["divergences"] == 1
    assert payload["optimizers"]["energy"]["param_groups"][0]["lr"] == pytest.approx(0.5e-3)
    assert all(torch.isfinite(v).all() for v in payload["method"].values())
    rows = ebmlab.api.read_history(run.path)
    assert [row["step"] for row in rows] == [5, 10, 15, 20, 25, 30]  # the diverged rows dropped
    assert all(abs(row["e_pos"]) < 1e6 and row["loss"] == row["loss"] for row in rows)
    log = (run.path / "train.log").read_text()
    assert f"rolled back to step {back_to}" in log and "learning rate by 0.5" in log


def test_a_second_divergence_stops_with_a_message_and_keeps_the_last_good_checkpoint(
    tmp_path, monkeypatch
):
    spoil(monkeypatch, set(range(12, 30)), times=30)
    with pytest.raises(TrainingDiverged, match="diverged again by step 15.*step_000000010.pt"):
        quick(tmp_path / "run", 30)
    assert checkpoint(tmp_path / "run")["step"] == 10
    assert (tmp_path / "run/train.log").read_text().count("rolled back to step 10") == 1


def test_an_energy_bound_of_none_lets_large_energies_pass(tmp_path, monkeypatch):
    spoil(monkeypatch, {12}, "e_pos", 1e9)
    unbounded = ebmlab.config.merge(TINY_CD, {"train": {"energy_bound": None}})
    run = quick(tmp_path / "run", 20, overrides=unbounded)
    assert checkpoint(run.path)["divergences"] == 0 and not (run.path / "train.log").exists()


def test_batches_cover_each_epoch_once_and_repeat_per_seed(tmp_path):
    run = quick(
        tmp_path / "run", 1, overrides={**TINY_CD, "data": {"n_train": 256, "batch_size": 64}}
    )
    from ebmlab.data import load_dataset
    from ebmlab.train import Trainer

    dataset = load_dataset("8gaussians", n_train=256)
    trainer = Trainer(
        run.method, dataset, run.config, tmp_path / "t", torch.device("cpu"), progress=False
    )
    epoch = torch.cat([trainer.batch(step) for step in range(4)])
    assert torch.equal(epoch.sort(dim=0).values, dataset.train.sort(dim=0).values)
    assert torch.equal(trainer.batch(5), trainer.batch(5))
    assert not torch.equal(trainer.batch(0), trainer.batch(4))  # a new permutation per epoch


def test_loaded_run_uses_ema_weights(tmp_path):
    run = quick(tmp_path / "run", 10)
    loaded = ebmlab.load(tmp_path / "run", device="cpu")
    payload = checkpoint(tmp_path / "run")
    for key, value in payload["ema"]["energy_net"]["weights"].items():
        if key in dict(loaded.method.energy_net.named_parameters()):
            assert torch.equal(dict(loaded.method.energy_net.named_parameters())[key], value)
    x = torch.randn(6, 2)
    assert torch.allclose(loaded.model.energy(x), run.model.energy(x))


def test_ema_of_chosen_modules_only_keeps_the_others_live(tmp_path):
    overrides = ebmlab.config.merge(
        tiny_run_overrides("bounds", n_train=500), {"train": {"ema_modules": ["generator"]}}
    )
    ebmlab.train(
        "bounds",
        "8gaussians",
        steps=10,
        out=tmp_path / "run",
        overrides=overrides,
        evaluate=False,
        progress=False,
    )
    payload = checkpoint(tmp_path / "run")
    assert set(payload["ema"]) == {"generator"}
    loaded = ebmlab.load(tmp_path / "run", device="cpu").method
    for key, value in loaded.energy_net.state_dict().items():  # the energy: live weights
        assert torch.equal(value, payload["method"][f"energy_net.{key}"]), key
    averaged = payload["ema"]["generator"]["weights"]
    live = dict(loaded.generator.named_parameters())
    assert all(torch.equal(live[key], averaged[key]) for key in live)
    assert not all(torch.equal(averaged[k], payload["method"][f"generator.{k}"]) for k in live)


def test_ema_of_a_module_the_method_lacks_is_refused(tmp_path):
    overrides = ebmlab.config.merge(TINY_CD, {"train": {"ema_modules": ["generator"]}})
    with pytest.raises(ebmlab.EbmlabError, match="choose among energy_net"):
        quick(tmp_path / "run", 5, overrides=overrides)


def test_time_budget_stops_early_and_spans_a_resume(tmp_path, monkeypatch):
    clock = iter(range(10_000))  # a fake clock: one second per reading
    monkeypatch.setattr(sys.modules["ebmlab.train"], "clock", lambda: float(next(clock)))
    budget = {"train": {**TINY_CD["train"], "max_seconds": 12.0}}
    run = quick(tmp_path / "run", 1000, overrides=ebmlab.config.merge(TINY_CD, budget))
    rows = ebmlab.api.read_history(run.path)
    first_stop = rows[-1]["step"]
    assert 5 <= first_stop < 20 and checkpoint(run.path)["step"] == first_stop
    assert rows[-1]["wall_s"] >= 12.0
    quick(tmp_path / "run", 1000, resume=True)  # the budget is already spent: nothing runs
    assert checkpoint(run.path)["step"] == first_stop
    more = {"train": {"max_seconds": 30.0}}
    quick(tmp_path / "run", 1000, resume=True, overrides=more)
    rows = ebmlab.api.read_history(run.path)
    assert first_stop < rows[-1]["step"] < 1000 and 30.0 <= rows[-1]["wall_s"] < 40.0


SCHEDULED = TINY_CD | {"train": TINY_CD["train"] | {"lr_schedule": "exponential", "lr_decay": 0.5}}


def test_an_exponential_schedule_decays_every_lr_once_per_epoch_and_resumes_exactly(tmp_path):
    """2,000 points in batches of 64: 31 steps an epoch. After 70 steps (2 epochs) every lr is
    lr_0 x 0.5^2; a run stopped mid-epoch and resumed ends with the same lr and weights."""
    quick(tmp_path / "whole", 70, overrides=SCHEDULED)
    quick(tmp_path / "split", 40, overrides=SCHEDULED)
    quick(tmp_path / "split", 70, resume=True, overrides=SCHEDULED)
    whole, split = checkpoint(tmp_path / "whole"), checkpoint(tmp_path / "split")
    quick(tmp_path / "constant", 70)
    constant = checkpoint(tmp_path / "constant")
    (group,) = constant["optimizers"]["energy"]["param_groups"]
    lr_0 = group["lr"]  # the preset's, never decayed
    assert constant["schedulers"] == {}
    for payload in (whole, split):
        (group,) = payload["optimizers"]["energy"]["param_groups"]
        assert group["lr"] == pytest.approx(lr_0 * 0.25)
        assert payload["schedulers"]["energy"]["last_epoch"] == 2
    for key, value in whole["method"].items():
        assert torch.equal(value, split["method"][key]), key


@pytest.mark.parametrize("method", ["dualmcmc", "bidvl"])
@pytest.mark.parametrize("data", ["digits", "cifar10"])
def test_dual_mcmc_and_bidvl_image_presets_decay_as_the_authors_code(method, data):
    from types import SimpleNamespace

    from ebmlab.api import resolve_config

    shape = (1, 8, 8) if data == "digits" else (3, 32, 32)
    dataset = SimpleNamespace(name=data, kind="image", train=torch.randn(64, *shape))
    train = resolve_config(method, dataset, data, None, {}).train
    assert (train.lr_schedule, train.lr_decay) == ("exponential", 0.998)
