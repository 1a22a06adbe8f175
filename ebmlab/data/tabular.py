"""Tabular data: .csv files (numeric, optional header row), and the check that a table's columns
survive the cast to float32, the models' precision."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ebmlab.errors import EbmlabError

DELIMITERS = (",", ";", "\t")
#: float32 must step by at most this share of a column's standard deviation where it lies
FLOAT32_RESOLUTION = 0.01
#: a spread below this many float64 roundings of the column's magnitude is rounding, not data
FLOAT64_ROUNDINGS = 100


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


def as_float32(x: np.ndarray, source: str) -> np.ndarray:
    """The table in float32, the models' precision, once each column's spread survives the cast.

    Models compute in float32, which steps by 64 near 1e9: a column 1e9 + noise of std 1 would
    read as constant once cast, and 1e9 + noise of std 1000 as a lattice. Such a column gets a
    clear error naming the offset to subtract, rather than being quietly flattened. A column
    whose spread is at the level of float64's own rounding (0.3 and 0.30000000000000004) is
    constant, as scikit-learn's StandardScaler treats it, and passes.

    Raises:
        EbmlabError: Naming the first such column, its offset and float32's step there.
    """
    x = np.asarray(x, dtype=np.float64)
    spread, magnitude = x.std(axis=0), np.abs(x).max(axis=0)
    step = np.spacing(magnitude.astype(np.float32)).astype(np.float64)
    is_data = spread > FLOAT64_ROUNDINGS * np.finfo(np.float64).eps * magnitude
    lost = is_data & (step > FLOAT32_RESOLUTION * spread)
    if lost.any():
        column = int(np.argmax(lost))
        digits = int(np.floor(np.log10(spread[column]))) + 1  # the offset, to the spread's order
        offset = float(np.round(np.median(x[:, column]), -digits))
        raise EbmlabError(
            f"{source}: column {column} varies by {spread[column]:.3g} around {offset:.15g}, "
            f"finer than float32, the models' precision, holds there (steps of "
            f"{step[column]:.3g}); subtract {offset:.15g} from it first, or fit "
            "ebmlab.EnergyDensity, which standardises in float64"
        )
    return x.astype(np.float32)
