"""Tabular data from .csv files (numeric, optional header row); rank-2 arrays need no reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ebmlab.errors import EbmlabError

DELIMITERS = (",", ";", "\t")


def read_csv(path: Path) -> np.ndarray:
    """A numeric table (N, D) from a comma-, semicolon- or tab-separated file.

    A first row that does not parse as numbers is taken as the header and skipped.

    Raises:
        EbmlabError: If the file is empty, not text, or holds anything but numbers after the
            header row (including rows of different lengths).
    """
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise EbmlabError(f"{path} is not a text file; save the table as plain CSV") from None
    if not lines:
        raise EbmlabError(f"{path} is empty; it needs a table of numbers")
    delimiter = max(DELIMITERS, key=lines[0].count)
    rows = lines[1:] if _is_header(lines[0], delimiter) else lines
    try:
        return np.loadtxt(rows, delimiter=delimiter, ndmin=2, dtype=np.float64)
    except ValueError as err:
        reason = str(err).splitlines()[0]
        raise EbmlabError(f"{path} must hold numbers only (after a header row): {reason}") from None


def _is_header(line: str, delimiter: str) -> bool:
    try:
        [float(value) for value in line.split(delimiter)]
    except ValueError:
        return True
    return False
