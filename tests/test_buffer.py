"""The replay buffer: re-initialisation share, write-back, and checkpoint round trip."""

import pytest
import torch

from ebmlab.samplers import ReplayBuffer


def test_reinit_share_matches_probability():
    buffer = ReplayBuffer(1000, (2,), reinit_prob=0.2, low=5.0, high=6.0)
    buffer.storage.zero_()  # chains at 0, fresh draws in [5, 6]: tell them apart
    draws = [buffer.sample(500) for _ in range(40)]
    share = sum(int((x0[:, 0] >= 5).sum()) for x0, _, _ in draws) / 20_000
    assert share == pytest.approx(0.2, abs=4 * (0.2 * 0.8 / 20_000) ** 0.5)
    for x0, _, fresh in draws:  # the mask names exactly the fresh rows
        assert torch.equal(fresh, x0[:, 0] >= 5)


def test_initial_distribution_is_uniform_on_the_box():
    x = ReplayBuffer(20_000, (2,), low=-3.0, high=1.0).storage
    assert x.min() >= -3 and x.max() <= 1
    assert float(x.mean()) == pytest.approx(-1.0, abs=0.03)
    assert float(x.var()) == pytest.approx(16 / 12, rel=0.03)


def test_update_writes_back_exactly():
    buffer = ReplayBuffer(50, (1, 4, 4), reinit_prob=0.0)
    x0, idx, fresh = buffer.sample(8)
    assert torch.equal(x0, buffer.storage[idx]) and not fresh.any()
    moved = torch.randn_like(x0)
    buffer.update(idx, moved)
    last_write = {int(i): k for k, i in enumerate(idx)}  # a repeated slot keeps the last write
    for slot, k in last_write.items():
        assert torch.equal(buffer.storage[slot], moved[k])


def test_state_dict_round_trip_and_dtype_move():
    buffer = ReplayBuffer(30, (2,))
    clone = ReplayBuffer(30, (2,))
    clone.load_state_dict(buffer.state_dict())
    assert torch.equal(clone.storage, buffer.storage)
    assert buffer.to(torch.float64).storage.dtype == torch.float64


def test_custom_and_gaussian_init():
    buffer = ReplayBuffer(10, (3,), init=lambda n, g: torch.full((n, 3), 7.0))
    assert torch.equal(buffer.storage, torch.full((10, 3), 7.0))
    gaussian = ReplayBuffer(20_000, (1,), init="gaussian").storage
    assert float(gaussian.std()) == pytest.approx(1.0, rel=0.03)


def test_past_reads_only_written_slots():
    buffer = ReplayBuffer(100, (2,), reinit_prob=0.0)
    assert buffer.past(5).shape == (5, 2)  # nothing written yet: any slot
    idx = torch.tensor([3, 7])
    buffer.update(idx, torch.tensor([[10.0, 10.0], [20.0, 20.0]]))
    past = buffer.past(400)
    assert set(past[:, 0].tolist()) == {10.0, 20.0}
    share = float((past[:, 0] == 10).float().mean())
    assert share == pytest.approx(0.5, abs=4 * (0.25 / 400) ** 0.5)
    clone = ReplayBuffer(100, (2,))
    clone.load_state_dict(buffer.state_dict())  # the written mask travels with checkpoints
    assert torch.equal(clone.written, buffer.written) and int(clone.written.sum()) == 2


def test_defaults_are_igebms_box_and_five_percent_reinitialisation():
    """Without options: chains start uniform on [-1, 1] (images' model units) and 5% of the
    rows read are fresh draws, IGEBM's rate."""
    buffer = ReplayBuffer(20_000, (1,))
    x = buffer.storage
    assert float(x.min()) == pytest.approx(-1.0, abs=1e-3)
    assert float(x.max()) == pytest.approx(1.0, abs=1e-3)
    assert float(x.mean()) == pytest.approx(0.0, abs=0.02)
    buffer.storage.fill_(5.0)  # fresh rows are the ones inside [-1, 1]
    fresh = torch.cat([buffer.sample(1000)[2] for _ in range(20)])
    assert float(fresh.float().mean()) == pytest.approx(0.05, abs=4 * (0.05 * 0.95 / 20_000) ** 0.5)


def test_sample_reads_every_slot_and_nothing_else():
    """Slots are drawn uniformly over the whole capacity (64 slots, 2 columns: an index over
    the columns instead would read two slots)."""
    buffer = ReplayBuffer(64, (2,), reinit_prob=0.0)
    assert buffer.capacity == 64
    buffer.storage.copy_(torch.arange(64.0).repeat_interleave(2).view(64, 2))
    read = torch.cat([buffer.sample(256)[1] for _ in range(20)])
    counts = torch.bincount(read, minlength=64)
    assert len(counts) == 64 and int(counts.min()) > 40  # about 80 reads each
