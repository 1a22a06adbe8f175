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
        EbmlabError: If the file cannot be read, is empty, is not text, holds rows of different
            lengths, or holds anything but numbers after the header row.
    """
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise EbmlabError(f"{path} is not a text file; save the table as plain CSV") from None
    except OSError as err:
        raise EbmlabError(f"cannot read {path}: {err.strerror}") from None
    if not lines:
        raise EbmlabError(f"{path} is empty; it needs a table of numbers")
    delimiter = max(DELIMITERS, key=lines[0].count)
    rows = lines[1:] if _is_header(lines[0], delimiter) else lines
    if not rows:
        raise EbmlabError(f"{path} holds only a header row; it needs a table of numbers")
    widths = [row.count(delimiter) + 1 for row in rows]
    for number, width in enumerate(widths, 1):
        if width != widths[0]:
            raise EbmlabError(
                f"{path}: data row {number} has {width} column(s), the first {widths[0]}; "
                "give every row the same columns"
            )
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
