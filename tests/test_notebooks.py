"""Both notebooks run from top to bottom with the reference in place of the student's code, in a
folder not called student_template, and their figures come out as images."""
from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest

from course.notebooks import NOTEBOOKS
from tests.conftest import make_cifar_npz_dir, make_mnist_dir

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


def execute(path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, time_limit: float = 3) -> nbformat.NotebookNode:
    monkeypatch.setenv("VITKIT_DATA", str(data_dir))  # the kernel inherits it: DATA_DIR = None reads it
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:  # the training budget, as a course would set it
        cell.source = cell.source.replace("TIME_LIMIT = 20 * 60", f"TIME_LIMIT = {time_limit}")
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb


def outputs(nb: nbformat.NotebookNode) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def text_of(nb: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs(nb))


def images(nb: nbformat.NotebookNode) -> int:
    """Figures shown as PNG; a figure shown only as text ("<Figure size ...>") fails here."""
    shown = [o.get("data", {}) for o in outputs(nb)]
    assert not [d for d in shown if "<Figure" in d.get("text/plain", "") and "image/png" not in d]
    return sum("image/png" in d for d in shown)


def test_the_attention_notebook_runs_its_tests_and_draws(homework: Path, tmp_path: Path, monkeypatch) -> None:
    nb = execute(homework / "attention.ipynb", tmp_path, monkeypatch)
    said = text_of(nb)
    assert "all tests pass" in said
    assert "tensor([4., 7., 8.])" in said  # the unscaled scores of the by-hand question
    assert "0.0132, 0.2654, 0.7214" in said  # its unscaled weights, then the scaled ones
    assert "0.0598, 0.3380, 0.6022" in said
    assert images(nb) == 1  # the heads' weights


@pytest.mark.slow
def test_the_vit_notebook_trains_within_its_time_limit_and_draws(homework: Path, tmp_path: Path, monkeypatch) -> None:
    data = make_cifar_npz_dir(make_mnist_dir(tmp_path))
    nb = execute(homework / "vision_transformer.ipynb", data, monkeypatch)
    said = text_of(nb)
    assert said.count("test accuracy:") == 2
    assert images(nb) == 4  # two loss curves, two attention maps


def test_the_notebook_says_where_to_open_it(tmp_path: Path, monkeypatch) -> None:
    elsewhere = tmp_path / "not-the-homework"
    elsewhere.mkdir()
    (elsewhere / "attention.ipynb").write_text(NOTEBOOKS["attention.ipynb"]())
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="open this notebook from the folder that holds your code"):
        execute(elsewhere / "attention.ipynb", tmp_path, monkeypatch)
