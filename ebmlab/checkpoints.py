"""Checkpoint files that survive crashes, full disks and bit rot, and never run code on load.

A run keeps its last `keep` checkpoints as `checkpoints/step_<step>.pt`. Each file is a
`torch.save` of a small envelope::

    {"format": "ebmlab-checkpoint", "version": 1, "sha256": <hex digest>, "payload": <bytes>}

where `payload` is the `torch.save` of the Trainer's state and `sha256` its digest. Writing goes
to a temporary file that is flushed, fsynced and renamed over the final name, and the folder is
fsynced too, so a crash or a kill leaves the old file or the new one, never a torn one. Reading
checks the envelope and the digest, then unpickles with `weights_only=True`: tensors and plain
Python data only, so a file someone crafted cannot execute code. A truncated or corrupted file
is reported in one line and the next older one is used.

Inspect a checkpoint with `ebmlab.checkpoints.read(path)`.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ebmlab.errors import EbmlabError

FOLDER = "checkpoints"
FORMAT = "ebmlab-checkpoint"
VERSION = 1


class CorruptCheckpoint(EbmlabError):
    """A checkpoint file that is truncated, altered, or not an ebmlab checkpoint."""


class UnsafeCheckpoint(EbmlabError):
    """A checkpoint file that holds objects whose unpickling could run code."""


def path_for(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / FOLDER / f"step_{step:09d}.pt"


def paths(run_dir: Path) -> list[Path]:
    """The run's checkpoint files, newest (highest step) first."""
    return sorted((Path(run_dir) / FOLDER).glob("step_*.pt"), reverse=True)


def write(payload: dict[str, Any], run_dir: Path, step: int, keep: int) -> Path:
    """Save `payload` as the checkpoint of `step`, then delete all but the newest `keep`."""
    inner = io.BytesIO()
    torch.save(payload, inner)
    body = inner.getvalue()
    envelope = {
        "format": FORMAT,
        "version": VERSION,
        "sha256": hashlib.sha256(body).hexdigest(),
        "payload": body,
    }
    path = path_for(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        torch.save(envelope, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_folder(path.parent)
    for old in paths(run_dir)[keep:]:
        old.unlink()
    return path


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (a no-op where folders cannot be opened, as on Windows)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The payload of one checkpoint file, its envelope and digest verified.

    Raises:
        CorruptCheckpoint: The file is truncated, altered or not an ebmlab checkpoint.
        UnsafeCheckpoint: It holds objects other than tensors and plain data.
    """
    path = Path(path)
    envelope = _safe_load(path, path.read_bytes(), "cpu")
    if not (isinstance(envelope, dict) and envelope.get("format") == FORMAT):
        raise CorruptCheckpoint(f"{path} is not an ebmlab checkpoint")
    body = envelope.get("payload")
    if not isinstance(body, bytes) or hashlib.sha256(body).hexdigest() != envelope.get("sha256"):
        raise CorruptCheckpoint(f"{path} is corrupted: its checksum does not match its contents")
    return _safe_load(path, body, map_location)


def _safe_load(path: Path, data: bytes, map_location: str | torch.device) -> Any:
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "global" in str(err).lower():  # a class or function to call: what runs code
            raise UnsafeCheckpoint(
                f"{path} holds objects other than tensors and plain data; refusing to load it, "
                "since unpickling them could run code"
            ) from None
        raise CorruptCheckpoint(f"{path} is damaged ({_first_line(err)})") from None
    except Exception as err:  # noqa: BLE001 - damaged bytes make the unpickler raise anything
        raise CorruptCheckpoint(f"{path} is truncated or damaged ({_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def warn(message: str) -> None:
    print(f"ebmlab: warning: {message}", file=sys.stderr)


def read_latest(
    run_dir: Path,
    map_location: str | torch.device = "cpu",
    report: Callable[[str], None] = warn,
) -> tuple[dict[str, Any], Path]:
    """The newest checkpoint of a run that reads back intact, and its path.

    A corrupted one is `report`ed in one line and the next older one tried; a file that could
    run code is never skipped over but refused.

    Raises:
        EbmlabError: The run has no checkpoint, or none that is intact.
        UnsafeCheckpoint: The newest readable candidate holds more than tensors and plain data.
    """
    candidates = paths(run_dir)
    if not candidates:
        raise EbmlabError(f"{Path(run_dir)} has no checkpoint ({FOLDER}/step_*.pt)")
    for index, path in enumerate(candidates):
        try:
            return read(path, map_location), path
        except CorruptCheckpoint as err:
            older = candidates[index + 1 : index + 2]
            report(f"{err}; " + (f"falling back to {older[0].name}" if older else "no older one"))
    raise EbmlabError(f"every checkpoint of {Path(run_dir)} is corrupted; the run must restart")
