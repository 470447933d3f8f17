"""Training is refused only to a model that is not the student's transformer (it does not run
their own TransformerBlocks, or it uses a forbidden call); a ViT with a wrong detail in its
forward is trained, and the accuracy it reaches counts."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from grader.grade import GradeOptions, grade_submission

pytestmark = pytest.mark.integration  # the tier `make test-fast` leaves out (tests/conftest.py)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import make_mnist_dir  # noqa: E402
from test_grading import make_submission  # noqa: E402


def test_a_vit_with_a_wrong_forward_is_still_trained(tmp_path: Path) -> None:
    data = make_mnist_dir(tmp_path / "data", 64, 16)
    options = GradeOptions(training="mnist", device="cpu", data_dir=str(data), time_limit=0.0)  # one step
    grade = grade_submission(make_submission(tmp_path / "src", "pos_embedding_after_blocks"), tmp_path / "work", options)
    results = {r.name: r for r in grade.results}
    assert results["vit:interface"].passed and not results["vit:forward"].passed  # the mistake is charged once
    run = grade.training[0]
    assert run.measured and not run.message.startswith("not trained"), run.message
    assert all(not r.skipped and "not trained" not in r.message for r in results.values() if r.component == "training_mnist")
