"""One bench run, in its own process: train under the budget, score on the way and at the end.

`ebmlab.bench` starts `python -m ebmlab.bench.worker SPEC RESULT` once per (method, dataset,
seed), so a crash, a hang or a divergence is recorded for that run alone and the rest go on.
SPEC is a JSON `RunSpec`; RESULT receives a JSON object with `status` (ok, diverged or failed),
`steps`, `wall_s`, `it_per_s`, `peak_mem_mb`, `device`, `metrics` and the quality `curve`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import resource
import sys
import traceback
from pathlib import Path
from typing import Any

import torch

from ebmlab.bench.spec import Budget, RunSpec

#: test images inpainted per mask for `inpaint_psnr`
INPAINT_IMAGES = 200


def run(spec: RunSpec) -> dict[str, Any]:
    """Train and score one run; every outcome is returned, never raised."""
    from ebmlab.train import TrainingDiverged

    result: dict[str, Any] = {"status": "ok", "metrics": {}, "curve": []}
    try:
        trained = train_with_curve(spec, result["curve"])
        result |= training_figures(trained)
        result["metrics"] = final_metrics(trained, fid=spec.fid)
    except TrainingDiverged as err:
        result |= {"status": "diverged", "error": str(err)}
        result |= training_figures_from_log(Path(spec.run_dir))
    except Exception as err:  # noqa: BLE001 - any failure is this run's result, not the bench's
        traceback.print_exc()
        result |= {"status": "failed", "error": f"{type(err).__name__}: {err}"}
        result |= training_figures_from_log(Path(spec.run_dir))
    return result


def train_with_curve(spec: RunSpec, curve: list[dict[str, float]]):
    """Train in `curve_points` equal shares of the budget, resuming between them (a resumed
    run continues exactly), and score the model after each share but the last. A run directory
    that already has a checkpoint (an interrupted bench's) is continued from it."""
    import ebmlab
    from ebmlab import checkpoints
    from ebmlab.api import read_history
    from ebmlab.metrics import evaluate

    budget = Budget.parse(spec.budget)
    interrupted = bool(checkpoints.paths(Path(spec.run_dir)))
    for point in range(1, spec.curve_points + 1):
        limits = budget.limits(point / spec.curve_points)
        trained = ebmlab.train(
            spec.method,
            spec.data,
            out=spec.run_dir,
            seed=spec.seed,
            device=spec.device,
            resume=point > 1 or interrupted,
            evaluate=False,
            progress=False,
            overrides={"train": {**limits, "sample_every": 0, "eval_samples": spec.eval_samples}},
        )
        if point < spec.curve_points:
            dataset = ebmlab.api.dataset_of(trained)
            n = trained.config.train.eval_samples
            metrics = evaluate(trained.method, dataset, n_samples=n, seed=spec.seed)
            last = read_history(trained.path)[-1]
            curve.append({"step": last["step"], "wall_s": last["wall_s"], **metrics})
    return trained


def final_metrics(trained, fid: bool = False) -> dict[str, float]:
    """`ebmlab.evaluate` with the standard OOD sets (and the Inception FID if `fid`), and
    inpainting PSNR where the method inpaints. The run's report is left to `ebmlab eval RUN`:
    the bench draws its own figures."""
    import ebmlab

    dataset = ebmlab.api.dataset_of(trained)
    metrics = ebmlab.evaluate(trained, dataset, ood=["standard"], fid=fid, report=False)
    if dataset.kind == "image" and callable(getattr(trained.method, "inpaint", None)):
        metrics["inpaint_psnr"] = inpaint_psnr(trained.method, dataset)
    return metrics


def inpaint_psnr(method, dataset) -> float:
    """PSNR of the method's final inpainting stage, averaged over the standard masks."""
    from ebmlab.tasks import inpainting_scores, standard_masks

    test = dataset.test[:INPAINT_IMAGES].to(method.device)
    masks = standard_masks(len(test), dataset.shape[-1], seed=0)
    table = inpainting_scores(method, test, masks)
    finals = [list(stages.values())[-1]["psnr"] for stages in table.values()]
    return float(sum(finals) / len(finals))


def training_figures(trained) -> dict[str, Any]:
    """Steps, time, speed and memory of the training (the final evaluation not yet run)."""
    return training_figures_from_log(trained.path) | {"device": str(trained.method.device)}


def training_figures_from_log(run_dir: Path) -> dict[str, Any]:
    from ebmlab.api import read_history

    history = read_history(run_dir) if run_dir.is_dir() else []
    figures: dict[str, Any] = {"peak_mem_mb": peak_memory_mb()}
    if history:
        steps, seconds = history[-1]["step"], history[-1]["wall_s"]
        figures |= {"steps": int(steps), "wall_s": seconds, "it_per_s": steps / seconds}
    return figures


def peak_memory_mb() -> float:
    """Peak GPU memory allocated when CUDA was used, else this process's peak resident memory.

    On Linux the peak is VmHWM of /proc/self/status: getrusage's ru_maxrss would also count the
    bench process this one was forked from, as exec keeps the larger of the two peaks."""
    if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        return torch.cuda.max_memory_allocated() / 2**20
    status = Path("/proc/self/status")
    if status.is_file():
        match = re.search(r"VmHWM:\s*(\d+)\s*kB", status.read_text())
        if match:
            return int(match[1]) / 2**10
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, else KiB


def main(argv: list[str]) -> int:
    spec_path, result_path = map(Path, argv)
    spec = RunSpec(**json.loads(spec_path.read_text()))
    result = {**dataclasses.asdict(spec), **run(spec)}
    result_path.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
