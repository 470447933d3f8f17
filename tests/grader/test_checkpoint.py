"""--training checkpoint: the grader measures the weights a student trained and submitted
(<recipe>.pt next to the modules) in the student's own model, with the labels kept in the grader;
weights that do not fit, are not a state_dict, or were fitted to the test set earn nothing."""
from __future__ import annotations

import dataclasses
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from grader.grade import GradeOptions, grade_submission
from reference.configs import CPU_RECIPES, RECIPES, ModelConfig, get_recipe
from reference.data import load_dataset
from reference.training import evaluate, train
from tests.conftest import labelled_blobs, make_mnist_dir, real_data_dir, write_idx

pytestmark = pytest.mark.integration  # the tier `make test-fast` leaves out (tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]


def submission(tmp_path: Path, weights: object | None = None, raw: bytes | None = None) -> Path:
    """The reference's modules as a student's folder, with ``mnist.pt`` holding ``weights`` (or ``raw`` bytes)."""
    folder = tmp_path / "student"
    shutil.copytree(REPO / "reference", folder, ignore=shutil.ignore_patterns("results", "__pycache__"))
    if raw is not None:
        (folder / "mnist.pt").write_bytes(raw)
    elif weights is not None:
        torch.save(weights, folder / "mnist.pt")
    return folder


def grade(folder: Path, tmp_path: Path, data_dir: Path) -> tuple[list, object]:
    graded = grade_submission(folder, tmp_path / "work", GradeOptions(training="checkpoint", data_dir=str(data_dir)))
    return [r for r in graded.results if r.component == "training_mnist"], graded.training[0]


def fitted(data, epochs: int, on_test: bool = False) -> torch.nn.Module:
    """The mnist recipe's model trained briefly (a fixed number of steps: deterministic)."""
    recipe = get_recipe("mnist")
    torch.manual_seed(0)
    model = recipe.model.build()
    if on_test:
        data = dataclasses.replace(data, train_images=data.test_images, train_labels=data.test_labels)
    train(model, data, dataclasses.replace(recipe.train, epochs=epochs, evals_per_epoch=1), device="cpu", progress=False)
    return model.eval()


@pytest.mark.skipif(real_data_dir() is None, reason="needs the real MNIST (set VITKIT_DATA)")
def test_submitted_weights_are_measured_by_the_grader_in_the_students_model(tmp_path, monkeypatch):
    data_dir = real_data_dir()
    mnist = load_dataset("mnist", data_dir)
    model = fitted(mnist.subset(train=640), epochs=3)
    # what the grader must find: it computes logits in float32
    accuracy = evaluate(model, mnist.test_images, mnist.test_labels, *mnist.stats(), autocast=False)
    # thresholds scaled to what a few seconds of training reach: just under and just over it
    monkeypatch.setitem(RECIPES, "mnist", dataclasses.replace(RECIPES["mnist"], thresholds=(accuracy - 0.01, accuracy + 0.01)))
    results, run = grade(submission(tmp_path, model.state_dict()), tmp_path, data_dir)
    assert [r.passed for r in results] == [True, False]
    assert run.measured == [pytest.approx(accuracy, abs=1e-4)]
    assert "trained by the student, not by the grader" in run.message and run.attention is not None


@pytest.fixture
def blobs(tmp_path: Path) -> Path:
    return make_mnist_dir(tmp_path / "data", n_train=256, n_test=128)


def test_weights_that_do_not_fit_the_model_name_the_keys(tmp_path, blobs):
    state = get_recipe("mnist").model.build().state_dict()
    state.pop("head.bias")
    state["head.weight"] = torch.zeros(3, 64)
    state["classifier.weight"] = torch.zeros(10, 64)
    results, run = grade(submission(tmp_path, state), tmp_path, blobs)
    message = results[0].message
    assert not results[0].passed and "missing keys: head.bias" in message and "unexpected keys: classifier.weight" in message
    assert "wrong shapes: head.weight [3, 64] (expected [10, 64])" in message


def test_weights_of_the_cpu_recipes_model_are_measured_in_that_model(tmp_path, blobs, monkeypatch):
    # A student who trained on a CPU submits the CPU recipe's (smaller) model: it is measured
    # in that configuration; weights that fit neither are compared with the closer one.
    small = ModelConfig(28, 7, 1, 10, d_model=32, num_layers=1, num_heads=2, d_hidden=64)
    monkeypatch.setitem(CPU_RECIPES, "mnist", dataclasses.replace(get_recipe("mnist"), name="mnist-cpu", model=small))
    state = small.build().state_dict()
    results, run = grade(submission(tmp_path / "fits", state), tmp_path / "fits", blobs)
    assert run.config == "mnist-cpu" and len(run.measured) == 1 and "(the mnist-cpu model)" in run.message
    state.pop("head.bias")
    results, run = grade(submission(tmp_path / "misfit", state), tmp_path / "misfit", blobs)
    message = results[0].message
    assert run.config == "" and not run.measured
    assert "(missing keys: head.bias)" in message  # the small model's one difference, not the large model's many


def test_a_checkpoint_that_is_not_a_state_dict_says_what_to_save(tmp_path, blobs):
    state = get_recipe("mnist").model.build().state_dict()
    results, _ = grade(submission(tmp_path, {"model": state, "epoch": 3}), tmp_path, blobs)
    assert "holds a dict with keys epoch, model, not a state_dict" in results[0].message
    assert "torch.save(model.state_dict(), 'mnist.pt')" in results[0].message


class Payload:
    def __reduce__(self):
        return (Path.write_text, (Path("/tmp/vitkit-checkpoint-payload-ran"), "ran"))


def test_a_pickle_that_runs_code_is_refused_unrun(tmp_path, blobs):
    Path("/tmp/vitkit-checkpoint-payload-ran").unlink(missing_ok=True)
    results, _ = grade(submission(tmp_path, raw=pickle.dumps(Payload())), tmp_path, blobs)
    assert "cannot be loaded with torch.load(weights_only=True)" in results[0].message
    assert not Path("/tmp/vitkit-checkpoint-payload-ran").exists()


def test_no_checkpoint_says_how_to_submit_one(tmp_path, blobs):
    results, _ = grade(submission(tmp_path), tmp_path, blobs)
    assert not results[0].passed and "no mnist.pt in the submission" in results[0].message


def test_a_link_is_not_a_checkpoint(tmp_path, blobs):
    folder = submission(tmp_path)
    (folder / "mnist.pt").symlink_to(tmp_path / "elsewhere.pt")
    graded = grade_submission(folder, tmp_path / "work", GradeOptions(training="checkpoint", data_dir=str(blobs)))
    assert "mnist.pt was left out: it is not a regular file" in graded.notes


def test_weights_fitted_to_the_test_set_earn_nothing(tmp_path, monkeypatch):
    """Training labels are shuffled here, so weights fitted to the (learnable) test set do far
    better on it than on the training images."""
    root = make_mnist_dir(tmp_path / "data", n_train=256, n_test=128)
    images, labels = labelled_blobs(256, (28, 28), 0)
    write_idx(root / "mnist" / "train-labels-idx1-ubyte", labels[torch.randperm(256, generator=torch.Generator().manual_seed(0)).numpy()])
    model = fitted(load_dataset("mnist", root), epochs=8, on_test=True)
    monkeypatch.setitem(RECIPES, "mnist", dataclasses.replace(RECIPES["mnist"], thresholds=(0.2,)))
    results, run = grade(submission(tmp_path, model.state_dict()), tmp_path, root)
    assert not results[0].passed and "fitted to the test set" in results[0].message, results[0].message
