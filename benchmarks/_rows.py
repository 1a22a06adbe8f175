"""What the row-per-run benchmarks share: train a row once, evaluate it, and keep its result."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import ebmlab
from ebmlab.errors import EbmlabError


def train_and_evaluate(result_file: Path, ood: list[str], **train: Any) -> dict:
    """`ebmlab.train(**train)` (without its own evaluation), then `ebmlab.evaluate` with the
    OOD sets `ood`; the metrics, `diverged` and the training `seconds` are written to
    `result_file` and read back from it on a later call instead of training again."""
    if result_file.is_file():
        return json.loads(result_file.read_text())
    start = time.perf_counter()
    try:
        run = ebmlab.train(evaluate=False, **train)
        seconds = time.perf_counter() - start
        result = {**ebmlab.evaluate(run, ood=ood), "diverged": False}
    except EbmlabError as err:  # TrainingDiverged
        seconds, result = time.perf_counter() - start, {"diverged": True, "error": str(err)}
    result["seconds"] = seconds
    result_file.parent.mkdir(parents=True, exist_ok=True)
    result_file.write_text(json.dumps(result, indent=2))
    return result
