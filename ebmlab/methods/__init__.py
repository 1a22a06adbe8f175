"""The registry of training methods: name -> class. One line per method."""

from __future__ import annotations

from ebmlab.errors import EbmlabError
from ebmlab.methods.base import Method
from ebmlab.methods.bidvl import BiDVL
from ebmlab.methods.bounds import Bounds
from ebmlab.methods.cd import CD
from ebmlab.methods.dsm import DSM
from ebmlab.methods.dualmcmc import DualMCMC
from ebmlab.methods.gebm import GEBM
from ebmlab.methods.icd import ICD
from ebmlab.methods.shortrun import ShortRun

METHODS: dict[str, type[Method]] = {
    "cd": CD,
    "shortrun": ShortRun,
    "dsm": DSM,
    "icd": ICD,
    "gebm": GEBM,
    "bidvl": BiDVL,
    "bounds": Bounds,
    "dualmcmc": DualMCMC,
}


def get_method(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise EbmlabError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}") from None


__all__ = ["METHODS", "Method", "get_method"]
