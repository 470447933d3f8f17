"""The data layer: the standard formats, where it looks, and what it says when data is missing."""
import gzip

import numpy as np
import pytest
import torch

from conftest import make_cifar_batches_dir, make_cifar_npz_dir, make_mnist_dir, real_data_dir, write_idx
from reference.data import (DATA_DIR_ENV, DataFormatError, DataNotFoundError, load_cifar10, load_dataset,
                            load_mnist, read_idx, resolve_data_dir)


@pytest.mark.parametrize("layout", ["mnist", "torchvision", "flat"])
@pytest.mark.parametrize("compress", [True, False])
def test_mnist_layouts_and_compression(tmp_path, layout, compress):
    make_mnist_dir(tmp_path, 40, 10, layout, compress)
    data = load_mnist(tmp_path)
    assert data.train_images.shape == (40, 1, 28, 28) and data.train_images.dtype == torch.uint8
    assert data.test_labels.shape == (10,) and data.test_labels.dtype == torch.int64
    assert data.num_classes == 10 and data.image_shape == (1, 28, 28)


def test_idx_roundtrip(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "x-idx3-ubyte", array)), array)


@pytest.mark.parametrize("payload,message", [
    (b"\x01\x02\x03\x04", "magic"),
    (bytes([0, 0, 0x0D, 1]) + (2).to_bytes(4, "big") + b"\0" * 8, "unsigned byte"),
    (bytes([0, 0, 8, 1]) + (5).to_bytes(4, "big") + b"\0\0", "truncated"),
])
def test_idx_format_errors(tmp_path, payload, message):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(payload)
    with pytest.raises(DataFormatError, match=message):
        read_idx(path)


def test_idx_corrupt_gzip(tmp_path):
    path = tmp_path / "bad-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(b"\0\0\x08\x01\0\0\0\x05abcde")[:-6])
    with pytest.raises(DataFormatError, match="cannot read"):
        read_idx(path)


def test_missing_mnist_names_every_path_and_the_fix(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        load_mnist(tmp_path)
    message = str(err.value)
    assert str(tmp_path / "mnist" / "train-images-idx3-ubyte.gz") in message
    assert str(tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte") in message
    assert "--data-dir" in message and DATA_DIR_ENV in message


def test_cifar_npz(tmp_path):
    make_cifar_npz_dir(tmp_path, 30, 12)
    data = load_cifar10(tmp_path)
    assert data.train_images.shape == (30, 3, 32, 32) and data.test_images.shape == (12, 3, 32, 32)
    raw = np.load(tmp_path / "cifar10" / "train.npz")["images"]
    # HWC on disk -> CHW in memory, pixel for pixel.
    np.testing.assert_array_equal(data.train_images[3].permute(1, 2, 0).numpy(), raw[3])


def test_cifar_python_batches(tmp_path):
    make_cifar_batches_dir(tmp_path, per_batch=8)
    data = load_dataset("cifar10", tmp_path)
    assert data.train_images.shape == (40, 3, 32, 32) and data.test_images.shape == (8, 3, 32, 32)
    assert data.classes[0] == "airplane"


def test_cifar_bad_npz(tmp_path):
    (tmp_path / "cifar10").mkdir()
    np.savez(tmp_path / "cifar10" / "train.npz", x=np.zeros(3))
    np.savez(tmp_path / "cifar10" / "test.npz", x=np.zeros(3))
    with pytest.raises(DataFormatError, match="images"):
        load_cifar10(tmp_path)


def test_missing_cifar(tmp_path):
    with pytest.raises(DataNotFoundError, match="cifar-10-batches-py"):
        load_cifar10(tmp_path)


def test_data_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv(DATA_DIR_ENV)
    assert str(resolve_data_dir()) == "data"


def test_unknown_dataset():
    with pytest.raises(ValueError, match="mnist, cifar10"):
        load_dataset("imagenet")


REAL = real_data_dir()
needs_real = pytest.mark.skipif(REAL is None, reason=f"real data absent: set {DATA_DIR_ENV} (CI: ../shared/data)")


@needs_real
def test_real_mnist():
    data = load_mnist(REAL)
    assert data.train_images.shape == (60000, 1, 28, 28) and data.test_images.shape == (10000, 1, 28, 28)
    assert torch.bincount(data.train_labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert abs(data.train_images.float().mean().item() / 255 - 0.1307) < 1e-3


@needs_real
def test_real_cifar10():
    data = load_cifar10(REAL)
    assert data.train_images.shape == (50000, 3, 32, 32) and data.test_images.shape == (10000, 3, 32, 32)
    assert data.train_labels[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    mean = data.train_images.float().mean(dim=(0, 2, 3)) / 255
    torch.testing.assert_close(mean, torch.tensor(data.mean), atol=1e-3, rtol=0)
