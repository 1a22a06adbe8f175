"""Issue 20's table of one-line breaks of a paper, each applied to a copy of the tree.

    python tools/paper_breaks.py        # one row per break: KILLED (a fast test failed) or SURVIVED

Each row of BREAKS is a line of a method file, the break the review found passing every fast
test, and the test files that must now fail on it. The copy lives in a temporary directory and
the tests import it through PYTHONPATH, so the checkout is never touched. Exits 1 if any break
survives. `make mutants` (tools/mutants.py) covers the same files mutant by mutant; this keeps
the review's own breaks, several of which no single-token mutation produces, checked by name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ICD_TESTS = ("test_icd.py", "test_methods.py")
BREAKS = [
    (
        "icd.py: outer energy not frozen for L_opt",
        "with frozen_params(self.energy_net):\n            loss_opt",
        "if True:\n            loss_opt",
        ICD_TESTS,
    ),
    ("icd.py: negatives not detached", "x_neg = x_kl.detach()", "x_neg = x_kl", ICD_TESTS),
    (
        "icd.py: buffer chains not augmented (Alg. 1 l. 6)",
        "x0 = augmented if cfg.augment_fresh else torch.where(_rows(fresh, x0), x0, augmented)",
        "pass",
        ICD_TESTS,
    ),
    (
        "icd.py: chains never read from the buffer",
        "x0, idx, fresh = self.buffer.sample(x.shape[0])",
        "x0, idx, fresh = self.buffer.sample(x.shape[0])\n"
        "        x0 = self.buffer.initial(x.shape[0])",
        ICD_TESTS,
    ),
    (
        "icd.py: chains never written back to the buffer",
        "self.buffer.update(idx, x_neg)",
        "pass",
        ICD_TESTS,
    ),
    (
        "dualmcmc.py: sign of the EBM loss flipped",
        "gap = e_data.mean() - e_sample.mean()",
        "gap = e_sample.mean() - e_data.mean()",
        ("test_dualmcmc.py", "test_methods.py"),
    ),
    (
        "dualmcmc.py: inference model's (z, x~) term dropped",
        "inf_data + cfg.inference_sample_weight * inf_sample",
        "inf_data",
        ("test_dualmcmc.py", "test_methods.py"),
    ),
    (
        "bounds.py: sign of grad h flipped in b",
        "return (-z - grad_h).detach()",
        "return (-z + grad_h).detach()",
        ("test_bounds.py", "test_methods.py"),
    ),
    (
        "gebm.py: gradient penalty replaced by WGAN's (norm - 1)^2",
        "return grad.flatten(1).pow(2).sum(1).mean()",
        "return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()",
        ("test_gebm.py",),
    ),
    (
        "shortrun.py: loss sign flipped",
        "loss = e_pos.mean() - e_neg.mean()",
        "loss = e_neg.mean() - e_pos.mean()",
        ("test_shortrun.py", "test_methods.py"),
    ),
    (
        "cd.py: alpha tripled",
        "loss_reg = self.cfg.alpha *",
        "loss_reg = 3 * self.cfg.alpha *",
        ("test_cd.py", "test_methods.py"),
    ),
    (
        "dsm.py: the loss halved",
        "loss = 0.5 * per_example.mean()",
        "loss = 0.25 * per_example.mean()",
        ("test_dsm.py", "test_methods.py", "test_tasks.py"),
    ),
]


def broken_tree(root: Path, method_file: str, line: str, broken: str) -> None:
    """A copy of ebmlab/, tests/ and pyproject.toml under `root` with the one break applied."""
    shutil.copytree(ROOT / "ebmlab", root / "ebmlab")
    shutil.copytree(ROOT / "tests", root / "tests")
    shutil.copy(ROOT / "pyproject.toml", root)
    source = root / "ebmlab" / "methods" / method_file
    text = source.read_text()
    if text.count(line) != 1:
        raise SystemExit(f"{method_file}: the line to break is not there once: {line!r}")
    source.write_text(text.replace(line, broken))


def killed(root: Path, tests: tuple[str, ...]) -> tuple[bool, str]:
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-rf", "-p", "no:cacheprovider"]
    command += ["-m", "not slow and not network", *(f"tests/{t}" for t in tests)]
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    failed = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("FAILED")]
    return result.returncode == 1, ", ".join(failed) or "no test failed"


def main() -> int:
    survivors = 0
    for name, line, broken, tests in BREAKS:
        with tempfile.TemporaryDirectory() as tmp:
            broken_tree(Path(tmp), name.split(":")[0], line, broken)
            was_killed, summary = killed(Path(tmp), tests)
        survivors += not was_killed
        print(f"{'KILLED  ' if was_killed else 'SURVIVED'} {name}: {summary}", flush=True)
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
