"""MNIST and CIFAR-10 as whole uint8 tensors, read from a data directory.

Where the data directory comes from, first match wins: the ``data_dir`` argument (``--data-dir``
on the command line), the environment variable ``VITKIT_DATA``, then ``./data``.

Formats read:
- MNIST: the four IDX files, gzipped or not, in ``<dir>/mnist/``, ``<dir>/MNIST/raw/``
  (torchvision's layout) or ``<dir>/``.
- CIFAR-10: ``<dir>/cifar10/{train,test}.npz`` (arrays ``images`` N x 32 x 32 x 3 uint8 and
  ``labels``), or the standard python batches ``<dir>/cifar-10-batches-py/`` (also under
  ``<dir>/cifar10/``).

With ``download=True`` and a network, torchvision fetches the files it knows into the data
directory first; nothing is ever downloaded unless asked.
"""
from __future__ import annotations

import gzip
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

DATA_DIR_ENV = "VITKIT_DATA"
DATASETS = ("mnist", "cifar10")


class DataNotFoundError(FileNotFoundError):
    """The dataset is not in the data directory; the message lists where it looked."""


class DataFormatError(ValueError):
    """A data file exists but is not in the expected format."""


@dataclass
class ImageDataset:
    """A labelled image classification dataset held as whole tensors.

    Images are uint8 (N, C, H, W); labels int64 (N,). ``mean`` and ``std`` are per-channel
    statistics on the 0-1 scale, used to normalise batches on the device.
    """

    name: str
    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.train_images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def stats(self, device: str | torch.device = "cpu") -> tuple[Tensor, Tensor]:
        """Per-channel mean and std as (1, C, 1, 1) tensors on ``device``, to normalise batches."""
        return (torch.tensor(self.mean, device=device).view(1, -1, 1, 1),
                torch.tensor(self.std, device=device).view(1, -1, 1, 1))

    def normalized_test_image(self, index: int = 0, device: str | torch.device = "cpu") -> Tensor:
        """Test image ``index`` as the model sees it: float (C, H, W), standardised per channel."""
        mean, std = self.stats(device)
        return ((self.test_images[index:index + 1].to(device).float() / 255 - mean) / std)[0]

    def subset(self, train: int | None = None, test: int | None = None) -> "ImageDataset":
        """The first ``train`` training and ``test`` test images (all when None)."""
        return ImageDataset(
            self.name,
            self.train_images[:train], self.train_labels[:train],
            self.test_images[:test], self.test_labels[:test],
            self.classes, self.mean, self.std,
        )


MNIST_CLASSES = tuple(str(i) for i in range(10))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MNIST_STATS = ((0.1307,), (0.3081,))
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))

_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_UBYTE = 0x08  # the only IDX element type MNIST uses


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data directory: the argument, else ``$VITKIT_DATA``, else ``./data``."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else Path("data")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzipped when the name ends in .gz)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # gzip raises BadGzipFile (an OSError) or EOFError
        raise DataFormatError(f"{path}: cannot read ({e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataFormatError(f"{path}: not an IDX file (bad magic number)")
    if raw[2] != _IDX_UBYTE:
        raise DataFormatError(f"{path}: IDX element type {raw[2]:#x} is not unsigned byte")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(shape)):
        raise DataFormatError(f"{path}: size does not match its header shape {shape} (truncated file?)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(candidates: list[Path]) -> Path | None:
    return next((p for p in candidates if p.is_file()), None)


def _missing(name: str, root: Path, looked: list[Path]) -> DataNotFoundError:
    where = "\n  ".join(str(p) for p in looked)
    return DataNotFoundError(
        f"{name} not found under data directory '{root}'. Looked for:\n  {where}\n"
        f"Point the kit at the data with --data-dir DIR (make ... DATA_DIR=DIR) or ${DATA_DIR_ENV}=DIR, "
        f"or pass download=True (--download) on a machine with a network."
    )


def mnist_files(data_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """The four MNIST files found under the data directory, by role ("train_images", ...);
    DataNotFoundError, listing every place looked at, when one is missing."""
    root = resolve_data_dir(data_dir)
    found, looked = {}, []
    for key, stem in _MNIST_FILES.items():
        candidates = [d / (stem + ext) for d in (root / "mnist", root / "MNIST" / "raw", root) for ext in (".gz", "")]
        path = _find(candidates)
        if path is None:
            looked += candidates
        else:
            found[key] = path
    if looked:
        raise _missing("MNIST", root, looked)
    return found


def load_mnist(data_dir: str | os.PathLike | None = None, download: bool = False) -> ImageDataset:
    """MNIST: 60,000 training and 10,000 test images, (N, 1, 28, 28) uint8."""
    root = resolve_data_dir(data_dir)
    if download:
        _torchvision_download("MNIST", root)
    arrays = {key: read_idx(path) for key, path in mnist_files(root).items()}
    for split in ("train", "test"):
        if len(arrays[f"{split}_images"]) != len(arrays[f"{split}_labels"]):
            raise DataFormatError(f"MNIST {split}: image and label counts differ")
    return ImageDataset(
        "mnist",
        torch.from_numpy(arrays["train_images"].copy()).unsqueeze(1),
        torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        torch.from_numpy(arrays["test_images"].copy()).unsqueeze(1),
        torch.from_numpy(arrays["test_labels"].astype(np.int64)),
        MNIST_CLASSES, *MNIST_STATS,
    )


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path) as d:
            images, labels = d["images"], d["labels"]
    except (OSError, ValueError, KeyError) as e:
        raise DataFormatError(f"{path}: expected an .npz with arrays 'images' and 'labels' ({e})") from e
    if images.ndim != 4 or images.shape[1:] != (32, 32, 3) or len(images) != len(labels):
        raise DataFormatError(f"{path}: images must be N x 32 x 32 x 3 with N labels, got {images.shape}")
    return images.transpose(0, 3, 1, 2), labels  # HWC -> CHW


def _read_python_batches(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for path in files:
        try:
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="bytes")  # the official CIFAR-10 distribution format
            images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(batch[b"labels"]))
        except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError) as e:
            raise DataFormatError(f"{path}: not a CIFAR-10 python batch ({e})") from e
    return np.concatenate(images), np.concatenate(labels)


def cifar10_files(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """CIFAR-10's files: ``cifar10/{train,test}.npz``, else the official python batches (the five
    training batches, then the test batch); DataNotFoundError, listing every place looked at."""
    root = resolve_data_dir(data_dir)
    npz = [root / "cifar10" / "train.npz", root / "cifar10" / "test.npz"]
    if all(p.is_file() for p in npz):
        return npz
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    batch_dirs = [root / "cifar-10-batches-py", root / "cifar10" / "cifar-10-batches-py"]
    batch_dir = next((d for d in batch_dirs if all((d / n).is_file() for n in names)), None)
    if batch_dir is None:
        raise _missing("CIFAR-10", root, npz + [d / "{data_batch_1..5,test_batch}" for d in batch_dirs])
    return [batch_dir / n for n in names]


def dataset_files(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The files of dataset ``name`` without reading them; DataNotFoundError when one is missing."""
    if name == "mnist":
        return list(mnist_files(data_dir).values())
    if name == "cifar10":
        return cifar10_files(data_dir)
    raise ValueError(f"unknown dataset {name!r}; expected 'mnist' or 'cifar10'")


def load_cifar10(data_dir: str | os.PathLike | None = None, download: bool = False) -> ImageDataset:
    """CIFAR-10: 50,000 training and 10,000 test images, (N, 3, 32, 32) uint8."""
    root = resolve_data_dir(data_dir)
    if download:
        _torchvision_download("CIFAR10", root)
    files = cifar10_files(root)
    if files[0].suffix == ".npz":
        (xtr, ytr), (xte, yte) = _read_npz(files[0]), _read_npz(files[1])
    else:
        xtr, ytr = _read_python_batches(files[:5])
        xte, yte = _read_python_batches(files[5:])
    return ImageDataset(
        "cifar10",
        torch.from_numpy(np.ascontiguousarray(xtr)), torch.from_numpy(ytr.astype(np.int64)),
        torch.from_numpy(np.ascontiguousarray(xte)), torch.from_numpy(yte.astype(np.int64)),
        CIFAR10_CLASSES, *CIFAR10_STATS,
    )


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, download: bool = False) -> ImageDataset:
    """Load ``"mnist"`` or ``"cifar10"``."""
    loaders = {"mnist": load_mnist, "cifar10": load_cifar10}
    if name not in loaders:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(loaders)}")
    return loaders[name](data_dir, download)


def _torchvision_download(cls_name: str, root: Path) -> None:
    try:
        import torchvision.datasets  # optional: only needed to download
    except ImportError as e:
        raise RuntimeError(
            "download=True needs torchvision (pip install 'vit-homework-kit[download]'); "
            "or place the files in the data directory yourself"
        ) from e
    root.mkdir(parents=True, exist_ok=True)
    dataset_cls = getattr(torchvision.datasets, cls_name)
    for train in (True, False):
        dataset_cls(root=str(root), train=train, download=True)
