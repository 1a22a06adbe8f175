"""What one bench run is: its budget and its spec, shared by the bench and its worker."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ebmlab.errors import EbmlabError

#: the step limit of a run whose budget is wall-clock time
UNLIMITED_STEPS = 10**9


@dataclass(frozen=True)
class Budget:
    """Training steps or wall-clock seconds of training, per run, or each preset's own steps."""

    unit: str  # "steps" | "seconds" | "preset"
    amount: float

    @classmethod
    def parse(cls, text: str) -> Budget:
        """ "90s" -> 90 seconds, "2000" -> 2000 steps, "preset" -> the preset's train.steps."""
        if str(text).strip() == "preset":
            return cls("preset", 0)
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|steps)?\s*", str(text))
        if match is None or float(match[1]) <= 0:
            raise EbmlabError(
                f"budget {text!r} is neither seconds nor steps; write e.g. 90s, 2000 or preset"
            )
        if match[2] == "s":
            return cls("seconds", float(match[1]))
        if "." in match[1]:
            raise EbmlabError(f"a step budget is a whole number, got {text!r}")
        return cls("steps", int(match[1]))

    def limits(self, share: float) -> dict[str, Any]:
        """train-section options that stop a run at `share` of the budget."""
        if self.unit == "preset":
            if share != 1:
                raise EbmlabError("a preset budget has no fixed length to score part-way through")
            return {"max_seconds": None}
        if self.unit == "steps":
            return {"steps": max(1, round(self.amount * share)), "max_seconds": None}
        return {"steps": UNLIMITED_STEPS, "max_seconds": self.amount * share}

    def __str__(self) -> str:
        if self.unit == "preset":
            return "preset"
        return f"{self.amount:g}s" if self.unit == "seconds" else f"{int(self.amount)} steps"


@dataclass(frozen=True)
class RunSpec:
    """One (method, dataset, seed) of a bench."""

    method: str
    data: str
    seed: int
    budget: str
    run_dir: str
    curve_points: int = 1
    device: str = "auto"
    eval_samples: int | None = None  # samples for the sample-based metrics; None: per data kind
    fid: bool = False  # also the standard Inception FID (images)
