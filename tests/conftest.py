"""Shared fixtures: tiny datasets written in the real on-disk formats, and where the real data is."""
from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


def _jail_or_waiver() -> str:
    """The grader refuses to grade where it cannot jail the student's code. On a machine without
    bubblewrap the tests grade anyway, as an instructor who accepted the risk would; the tests of
    the jail itself skip there, and the tests of the refusal clear the waiver."""
    from grader import jail

    isolation = jail.detect()
    if isolation.complete:
        return "the jail: on"
    os.environ.setdefault(jail.ALLOW_ENV, "1")
    return f"the jail: OFF, graded with {jail.ALLOW_ENV}=1 ({isolation.layers[0]})"


JAIL = _jail_or_waiver()


def pytest_report_header() -> str:
    return JAIL


# The tiers (README, "Tests"): `make test-fast` runs the unit tier, `-m "not slow and not
# integration"`, which starts none of the grader's children. A test that starts one says so with
# the `integration` marker (on the test or its module): one that does not is stopped here, so that
# the unit tier stays fast wherever it runs.
@pytest.fixture(autouse=True)
def _the_unit_tier_starts_no_child(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("integration") or request.node.get_closest_marker("slow"):
        return
    from grader.sandbox import Sandbox

    def refused(self: Sandbox) -> None:
        raise AssertionError(f"{request.node.nodeid} starts a grader child: mark it (or its module) "
                             "pytest.mark.integration, the tier `make test-fast` leaves out")

    monkeypatch.setattr(Sandbox, "_launch", refused)


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """Write a uint8 array as an IDX file (the MNIST format), gzipped when ``compress``."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    raw = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    return path


def labelled_blobs(n: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class is easy to learn from any patch: class c is vertical stripes of period
    c + 2 pixels (a texture, which pre-LayerNorm keeps, unlike plain brightness), plus noise;
    uint8 N x shape ((H, W) or (H, W, C))."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    cols = np.arange(shape[1])
    stripes = np.stack([np.cos(2 * np.pi * cols / (c + 2)) for c in range(10)])  # (10, W)
    pattern = stripes[labels][:, None, :]  # (N, 1, W), broadcast over rows
    if len(shape) == 3:
        pattern = pattern[..., None]  # and over channels
    images = np.clip(128 + 100 * pattern + rng.normal(0, 10, (n, *shape)), 0, 255).astype(np.uint8)
    return images, labels


def make_mnist_dir(root: Path, n_train: int = 512, n_test: int = 128, layout: str = "mnist", compress: bool = True) -> Path:
    """Write a small learnable MNIST look-alike: ``layout`` is "mnist" (<root>/mnist/), "torchvision"
    (<root>/MNIST/raw/) or "flat" (<root>/)."""
    sub = {"mnist": root / "mnist", "torchvision": root / "MNIST" / "raw", "flat": root}[layout]
    xtr, ytr = labelled_blobs(n_train, (28, 28), 0)
    xte, yte = labelled_blobs(n_test, (28, 28), 1)
    write_idx(sub / "train-images-idx3-ubyte", xtr, compress)
    write_idx(sub / "train-labels-idx1-ubyte", ytr, compress)
    write_idx(sub / "t10k-images-idx3-ubyte", xte, compress)
    write_idx(sub / "t10k-labels-idx1-ubyte", yte, compress)
    return root


def make_cifar_npz_dir(root: Path, n_train: int = 256, n_test: int = 64) -> Path:
    """<root>/cifar10/{train,test}.npz with images N x 32 x 32 x 3 (HWC)."""
    (root / "cifar10").mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        images, labels = labelled_blobs(n, (32, 32, 3), seed)
        np.savez_compressed(root / "cifar10" / f"{name}.npz", images=images, labels=labels)
    return root


def make_cifar_batches_dir(root: Path, per_batch: int = 20) -> Path:
    """<root>/cifar-10-batches-py/ in the official python pickle format (rows of 3072 CHW bytes)."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        images, labels = labelled_blobs(per_batch, (32, 32, 3), i)
        batch = {b"data": images.transpose(0, 3, 1, 2).reshape(per_batch, -1), b"labels": labels.tolist()}
        (d / name).write_bytes(pickle.dumps(batch))
    return root


def real_data_dir() -> Path | None:
    """The real datasets, when $VITKIT_DATA (CI: ../shared/data) points at them."""
    env = os.environ.get("VITKIT_DATA")
    return Path(env) if env and Path(env).is_dir() else None


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    return make_mnist_dir(tmp_path / "data")


def check_gradescope_results(results: dict) -> dict:
    """``results`` validated against the schema written from Gradescope's specification."""
    import json

    import jsonschema

    schema = json.loads((REPO / "grader" / "results.schema.json").read_text())
    jsonschema.validate(results, schema)
    return results


# The executed notebooks, as the tests read them (nbformat nodes or the same JSON as dicts).
TRAINING_BUDGET = "TIME_LIMIT = 20 * 60"  # the training notebook's budget line, as shipped


def with_time_limit(nb: dict, seconds: float) -> dict:
    """``nb`` with its training budget set to ``seconds``, as a course would set it; a notebook
    without the budget line fails here rather than training for twenty minutes."""
    code = [cell for cell in nb["cells"] if cell["cell_type"] == "code"]
    assert any(TRAINING_BUDGET in cell["source"] for cell in code), f"no {TRAINING_BUDGET!r} line to shorten"
    for cell in code:
        cell["source"] = cell["source"].replace(TRAINING_BUDGET, f"TIME_LIMIT = {seconds}")
    return nb


def notebook_outputs(nb: dict) -> list[dict]:
    return [o for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"]]


def notebook_text(nb: dict) -> str:
    return "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in notebook_outputs(nb))


def notebook_images(nb: dict) -> int:
    """Figures shown as PNG; a figure shown only as text ("<Figure size ...>") fails here."""
    shown = [o.get("data", {}) for o in notebook_outputs(nb)]
    assert not [d for d in shown if "<Figure" in d.get("text/plain", "") and "image/png" not in d]
    return sum("image/png" in d for d in shown)
