"""The grader's training checks: the student's ViT trained by the reference recipe, in a sandbox."""
from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

import pytest
import torch

import grader.grade
from grader.grade import GradeOptions, checked_history, grade_submission
from grader.sandbox import PROBES, Limits, Sandbox
from grader.submission import stage_submission
from reference.configs import CPU_RECIPES, ModelConfig, get_recipe
from reference.training import TrainConfig

pytestmark = pytest.mark.integration  # the tier `make test-fast` leaves out (tests/conftest.py)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import make_mnist_dir, real_data_dir  # noqa: E402
from test_fairness import variant  # noqa: E402
from test_grading import REPO, make_submission  # noqa: E402


def training_results(grade, recipe="mnist"):
    return [r for r in grade.results if r.component == f"training_{recipe}"]


def test_training_runs_in_the_sandbox_and_reports_its_history(tmp_path):
    data = make_mnist_dir(tmp_path / "data", 256, 64)
    options = GradeOptions(training="mnist", device="cpu", data_dir=str(data), time_limit=0.0)
    grade = grade_submission(REPO / "reference", tmp_path / "work", options)
    run = grade.training[0]
    assert run.history is not None and run.history["stop_reason"] in ("time limit", "target reached")
    assert run.attention is not None and tuple(run.attention.shape) == (4, 17, 17)
    assert "of training on cpu" in run.message
    [result] = training_results(grade)
    assert not result.skipped


def test_on_a_cpu_the_exercise_trains_with_its_cpu_recipe(tmp_path, monkeypatch):
    # An MNIST CPU recipe with its own (smaller) model and time limit: the grader trains that one, that long.
    mnist = get_recipe("mnist")
    small = ModelConfig(28, 7, 1, 10, d_model=32, num_layers=1, num_heads=2, d_hidden=64)
    monkeypatch.setitem(CPU_RECIPES, "mnist", dataclasses.replace(mnist, name="mnist-cpu", model=small, time_limit=0.0))
    data = make_mnist_dir(tmp_path / "data", 256, 64)
    options = GradeOptions(training="mnist", device="cpu", data_dir=str(data))
    run = grade_submission(REPO / "reference", tmp_path / "work", options).training[0]
    assert (run.recipe, run.config) == ("mnist", "mnist-cpu")
    assert run.history["stop_reason"] == "time limit" and run.history["epochs"] < 1  # the recipe's own 0 s
    assert run.attention is not None and tuple(run.attention.shape) == (2, 17, 17)  # the small model's 2 heads


def test_training_starts_from_the_references_class_token_and_positional_embedding(tmp_path):
    # A correct model that starts both from N(0, 1), as some tutorials write: the grader trains it
    # from the reference's values (zeros; N(0, 0.02^2)), so that choice cannot cost thresholds.
    folder = variant(tmp_path, "tutorial_init")
    model = dataclasses.asdict(ModelConfig(28, 7, 1, 10, d_model=32, num_layers=1, num_heads=2, d_hidden=64))
    split = {"name": "mnist", "train_images": torch.zeros(8, 1, 28, 28, dtype=torch.uint8),
             "train_labels": torch.zeros(8, dtype=torch.long), "classes": [str(i) for i in range(10)],
             "mean": [0.5], "std": [0.25]}
    with Sandbox(stage_submission(folder, tmp_path / "work"), Limits(call_seconds=60)) as box:
        built = box.call(f"{PROBES}:vit", model, torch.zeros(1, 1, 28, 28))  # the submission as written
        trained = box.request(f"{PROBES}:train", [model, dataclasses.asdict(TrainConfig(epochs=0)), split, "cpu", 0,
                                                  60.0], on_ask=lambda question: {"stop": False})
    assert built.ok and trained.ok, (built.error, trained.error)
    assert built.value["state"]["pos_embedding"].std() > 0.5  # the edit took
    start = trained.value["weights"]  # no training steps: the weights it started from
    assert torch.equal(start["class_token"], torch.zeros(1, 1, 32))
    assert 0.01 < start["pos_embedding"].std() < 0.03


def test_no_data_skips_training_and_says_so(tmp_path):
    grade = grade_submission(REPO / "reference", tmp_path / "work",
                             GradeOptions(training="all", data_dir=str(tmp_path / "nothing")))
    results = training_results(grade, "mnist") + training_results(grade, "cifar10")
    assert len(results) == 4 and all(r.skipped for r in results)
    assert "MNIST not found" in results[0].message
    assert grade.score == grade.max_score  # skipped checks are worth nothing either way


@pytest.mark.parametrize("name,why", [("cnn_instead_of_blocks", "vit:interface"), ("forbidden_sdpa", "scaled_dot_product_attention")])
def test_a_model_that_is_not_the_students_transformer_is_not_trained(tmp_path, name, why):
    data = make_mnist_dir(tmp_path / "data", 64, 16)
    grade = grade_submission(make_submission(tmp_path / "src", name), tmp_path / "work",
                             GradeOptions(training="all", data_dir=str(data)))
    results = training_results(grade, "mnist") + training_results(grade, "cifar10")
    assert all(not r.passed and not r.skipped and "not trained" in r.message and why in r.message for r in results)


# Appended to a copy of reference/vit.py: the second training step of the grading recipe (batch
# 128) hangs; the checks never use that batch size, so only the training run is affected.
HANG_ON_SECOND_STEP = """

_forward = VisionTransformer.forward
_steps = []


def _hanging_forward(self, images):
    if self.training and images.shape[0] == 128:
        _steps.append(1)
        if len(_steps) == 2:
            import time
            time.sleep(1000)
    return _forward(self, images)


VisionTransformer.forward = _hanging_forward
"""


def test_a_run_killed_by_the_clock_keeps_the_thresholds_reached_before(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "hangs"
    shutil.copytree(REPO / "reference", folder, ignore=shutil.ignore_patterns("results", "__pycache__"))
    (folder / "vit.py").write_text((folder / "vit.py").read_text() + HANG_ON_SECOND_STEP)
    # Thresholds 0% (reached at the first evaluation, after step 1) and 94% (never, in one step).
    recipe = dataclasses.replace(get_recipe("mnist"), thresholds=(0.0, 0.94))
    monkeypatch.setattr(grader.grade, "get_recipe", lambda name, device=None: recipe)
    monkeypatch.setattr(grader.grade, "TRAINING_GRACE_SECONDS", 0.0)
    data = make_mnist_dir(tmp_path / "data", 256, 64)  # 2 steps per epoch, evaluated after each
    options = GradeOptions(training="mnist", device="cpu", data_dir=str(data), time_limit=12.0, verbose=True)  # slack for a busy machine
    grade = grade_submission(folder, tmp_path / "work", options)
    reached, missed = training_results(grade)
    assert (reached.name, reached.passed) == ("training_mnist:0%", True)
    assert (missed.name, missed.passed) == ("training_mnist:94%", False)
    run = grade.training[0]
    assert run.history["epoch"] == [0.5]
    assert run.message.startswith("training failed: timed out after 12 s") and "before that:" in run.message
    assert "vit.py" in run.message  # where it hung, in the student's code
    assert "mnist:  0.50 epochs" in capsys.readouterr().err  # progress shown as it trained


def test_histories_from_the_child_are_checked():
    good = {"epoch": [0.5], "test_accuracy": [0.5], "train_loss": [1.0], "train_seconds": [1.0],
            "eval_seconds": [0.1], "step_loss": [1.0], "stop_reason": "", "device": "cpu", "epochs": 0.5, "seconds": 1.0}
    assert checked_history(good) is good
    for bad in ({**good, "test_accuracy": [2.0]}, {**good, "epoch": "0.5"}, {**good, "step_loss": [True]},
                {**good, "device": None}, {k: v for k, v in good.items() if k != "seconds"}, [good], None):
        assert checked_history(bad) is None


REAL = real_data_dir()


@pytest.mark.slow
@pytest.mark.skipif(REAL is None, reason="real data absent: set VITKIT_DATA (CI: ../shared/data)")
def test_reference_reaches_the_mnist_threshold_through_the_grader(tmp_path):
    grade = grade_submission(REPO / "reference", tmp_path / "work", GradeOptions(training="mnist", device="cpu", data_dir=str(REAL)))
    [result] = training_results(grade)
    assert result.passed, grade.training[0].message
    assert grade.score == grade.max_score


def test_options_are_resolved_once_into_what_every_stage_uses(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VITKIT_DATA", raising=False)
    asked = GradeOptions(training="mnist", device="auto")
    used = asked.resolved()
    assert used.device in ("cpu", "cuda") and used.data_dir == str(tmp_path / "data")
    default = 600.0 if used.device == "cpu" else 300.0
    assert used.limit_for(get_recipe("mnist")) == default
    own = dataclasses.replace(get_recipe("mnist"), time_limit=900.0)
    assert used.limit_for(own) == 900.0  # a recipe's own limit
    assert dataclasses.replace(used, time_limit=5.0).limit_for(own) == 5.0  # --time-limit wins
    assert used.resolved() == used  # stages may resolve again: nothing changes
    with pytest.raises(dataclasses.FrozenInstanceError):
        used.device = "cuda"  # type: ignore[misc]


def test_a_missing_gpu_matters_only_when_something_is_trained():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        GradeOptions(training="mnist", device="cuda").resolved()
    assert GradeOptions(training="none", device="cuda").resolved().device == "cpu"
    assert GradeOptions(training="mnist", device="cuda", visible_only=True).resolved().device == "cpu"
