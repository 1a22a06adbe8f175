"""Tabular data from .csv files (numeric, optional header row) and rank-2 arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ebmlab.errors import EbmlabError


def read_csv(path: Path) -> np.ndarray:
    """A numeric table; a first row that does not parse as numbers is taken as the header."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise EbmlabError(f"{path} is empty")
    delimiter = ";" if lines[0].count(";") > lines[0].count(",") else ","
    try:
        [float(v) for v in lines[0].split(delimiter)]
        skip = 0
    except ValueError:
        skip = 1
    try:
        table = np.loadtxt(path, delimiter=delimiter, skiprows=skip, ndmin=2, dtype=np.float64)
    except ValueError as err:
        reason = str(err).splitlines()[0]
        raise EbmlabError(f"{path} must hold numbers only (after a header row): {reason}") from None
    return table
