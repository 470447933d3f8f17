"""The grader's training checks: the student's ViT trained by the reference recipe, in a sandbox."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from grader.grade import GradeOptions, grade_submission

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import make_mnist_dir, real_data_dir  # noqa: E402
from test_grading import REPO, make_submission  # noqa: E402


def training_results(grade, recipe="mnist"):
    return [r for r in grade.results if r.component == f"training_{recipe}"]


def test_training_runs_in_the_sandbox_and_reports_its_history(tmp_path):
    data = make_mnist_dir(tmp_path / "data", 256, 64)
    options = GradeOptions(training="mnist", device="cpu", data_dir=str(data), time_limit=0.0)
    grade = grade_submission(REPO / "reference", tmp_path / "work", options)
    run = grade.training[0]
    assert run.history is not None and run.history["stop_reason"] in ("time limit", "target reached")
    assert run.attention is not None and tuple(run.attention.shape) == (8, 17, 17)
    assert "of training on cpu" in run.message
    [result] = training_results(grade)
    assert not result.skipped


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


REAL = real_data_dir()


@pytest.mark.slow
@pytest.mark.skipif(REAL is None, reason="real data absent: set VITKIT_DATA (CI: ../shared/data)")
def test_reference_reaches_the_mnist_threshold_through_the_grader(tmp_path):
    grade = grade_submission(REPO / "reference", tmp_path / "work", GradeOptions(training="mnist", device="cpu", data_dir=str(REAL)))
    [result] = training_results(grade)
    assert result.passed, grade.training[0].message
    assert grade.score == grade.max_score
