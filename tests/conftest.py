import os

import pytest
import torch


def pytest_configure(config):
    """Under pytest-xdist (`make test` runs `-n auto`) each worker gets its share of the cores:
    two workers each on torch's default of every core would oversubscribe them."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        cores = len(usable) if usable else os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // workers))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
