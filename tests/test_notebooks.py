"""Both notebooks run from top to bottom with the reference in place of the student's code, in a
folder not called student_template, and their figures come out as images."""
from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest

from course.notebooks import NOTEBOOKS
from tests.conftest import (make_cifar_npz_dir, make_mnist_dir, notebook_images, notebook_text,
                            with_time_limit)

pytestmark = pytest.mark.integration  # the tier `make test-fast` leaves out (tests/conftest.py)

nbclient = pytest.importorskip("nbclient", reason="nbclient and ipykernel run the notebooks (pip install -e '.[dev]')")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def homework(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A student's folder, filled in with the reference, named as a student might name it."""
    folder = tmp_path_factory.mktemp("course") / "hw1-vit"
    shutil.copytree(REPO / "reference", folder, ignore=shutil.ignore_patterns("results", "__pycache__"))
    for name, build in NOTEBOOKS.items():
        (folder / name).write_text(build())
    return folder


def execute(path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, time_limit: float | None = None) -> nbformat.NotebookNode:
    monkeypatch.setenv("VITKIT_DATA", str(data_dir))  # the kernel inherits it: DATA_DIR = None reads it
    nb = nbformat.read(path, as_version=4)
    if time_limit is not None:  # the training notebook's budget, as a course would set it
        with_time_limit(nb, time_limit)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb


def test_the_attention_notebook_runs_its_tests_and_draws(homework: Path, tmp_path: Path, monkeypatch) -> None:
    nb = execute(homework / "attention.ipynb", tmp_path, monkeypatch)
    said = notebook_text(nb)
    assert "all tests pass" in said
    assert "tensor([4., 7., 8.])" in said  # the unscaled scores of the by-hand question
    assert "0.0132, 0.2654, 0.7214" in said  # its unscaled weights, then the scaled ones
    assert "0.0598, 0.3380, 0.6022" in said
    assert notebook_images(nb) == 1  # the heads' weights


@pytest.mark.slow
def test_the_vit_notebook_trains_within_its_time_limit_and_draws(homework: Path, tmp_path: Path, monkeypatch) -> None:
    data = make_cifar_npz_dir(make_mnist_dir(tmp_path))
    nb = execute(homework / "vision_transformer.ipynb", data, monkeypatch, time_limit=3)
    said = notebook_text(nb)
    assert said.count("test accuracy:") == 2
    assert notebook_images(nb) == 4  # two loss curves, two attention maps


def test_the_notebook_says_where_to_open_it(tmp_path: Path, monkeypatch) -> None:
    elsewhere = tmp_path / "not-the-homework"
    elsewhere.mkdir()
    (elsewhere / "attention.ipynb").write_text(NOTEBOOKS["attention.ipynb"]())
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="open this notebook from the folder that holds your code"):
        execute(elsewhere / "attention.ipynb", tmp_path, monkeypatch)
