"""results.json as Gradescope shows it: valid against the schema written from Gradescope's
specification, one numbered and tagged test per check that ran, visibility from the rubric,
checks that did not run listed (not red), a training summary and a leaderboard."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import jsonschema
import pytest
import torch

from grader.checklib import CheckResult
from grader.grade import GradeOptions, TrainingRun, grade_submission
from grader.report import _md, escape, failure_results, gradescope_results
from grader.rubric import RubricError, read_rubric

pytestmark = pytest.mark.integration  # the tier `make test-fast` leaves out (tests/conftest.py)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import check_gradescope_results  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def reference_grade(tmp_path_factory):
    return grade_submission(REPO / "reference", tmp_path_factory.mktemp("work"), GradeOptions(training="none"))


def test_the_reference_results_follow_gradescopes_format(reference_grade) -> None:
    results = check_gradescope_results(gradescope_results(reference_grade))
    ran = [r for r in reference_grade.results if not r.skipped]
    assert [t["name"] for t in results["tests"]] == [r.name for r in ran]  # the grader's order, every run
    assert all(t["tags"] == [t["name"].split(":")[0]] and t["output_format"] == "md" for t in results["tests"])
    numbers = [tuple(map(int, t["number"].split("."))) for t in results["tests"]]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert results["score"] == results["extra_data"]["max_score"] > 0 and results["output_format"] == "md"


def test_checks_that_did_not_run_are_listed_not_failed(reference_grade) -> None:
    results = gradescope_results(reference_grade)
    skipped = [r.name for r in reference_grade.results if r.skipped]
    assert skipped and not any(t["name"] in skipped for t in results["tests"])
    assert "Not run (worth no points here):" in results["output"]
    assert all(_md(name) in results["output"] for name in skipped)


def test_visibility_comes_from_the_rubric(reference_grade, tmp_path) -> None:
    rubric = {}  # a rubric file names only what it changes
    rubric["vit:forward"] = {"points": 1, "visibility": "after_due_date"}
    rubric["multihead:one_head"] = {"points": 3, "visibility": "hidden"}
    path = tmp_path / "rubric.json"
    path.write_text(json.dumps(rubric))
    points, visibility = read_rubric(path)
    assert points["vit:forward"] == 1 and points["multihead:one_head"] == 3
    grade = dataclasses.replace(reference_grade, visibility=visibility)
    shown = {t["name"]: t["visibility"] for t in check_gradescope_results(gradescope_results(grade))["tests"]}
    assert shown["vit:forward"] == "after_due_date" and shown["multihead:one_head"] == "hidden"
    assert shown["attention:function_mask"] == "visible"
    rubric["vit:forward"] = {"points": 1, "visibility": "students only"}
    path.write_text(json.dumps(rubric))
    with pytest.raises(RubricError, match="visibility must be one of"):
        read_rubric(path)


def test_training_is_summarised_and_on_the_leaderboard(reference_grade) -> None:
    run = TrainingRun("mnist", message="95.10% test accuracy, measured by the grader from the trained weights",
                      measured=[0.9, 0.951], wall_seconds=23.46)
    grade = dataclasses.replace(reference_grade, training=[run])
    results = check_gradescope_results(gradescope_results(grade))
    assert "- **mnist**: 95.10% test accuracy, measured by the grader" in results["output"]
    assert results["leaderboard"] == [{"name": "MNIST accuracy (%)", "value": 95.1, "order": "desc"},
                                      {"name": "MNIST training, timed by the grader (s)", "value": 23.5, "order": "asc"}]


def test_the_training_test_shows_the_curves_and_attention_map_and_the_notebooks_losses(reference_grade) -> None:
    """On Gradescope students see no report.html: what it shows about training and a notebook is in results.json."""
    history = {"epoch": [0.5, 1.0], "test_accuracy": [0.9, 0.95], "train_loss": [0.5, 0.2], "train_seconds": [5.0, 5.0],
               "eval_seconds": [0.5, 0.5], "step_loss": [0.6, 0.2], "stop_reason": "target reached", "device": "cpu",
               "epochs": 1.0, "seconds": 10.0}
    run = TrainingRun("mnist", "mnist", history=history, attention=torch.rand(4, 17, 17).softmax(-1),
                      image=torch.randint(0, 255, (1, 28, 28), dtype=torch.uint8), measured=[0.9, 0.95],
                      message="<script>x</script> 95.00% test accuracy")
    mnist = CheckResult("training_mnist:94%", True, "reached 95.00%")
    grade = dataclasses.replace(reference_grade, training=[run], results=[*reference_grade.results, mnist],
                                dropped=["cell 3: print(model) (a call)"])
    results = check_gradescope_results(gradescope_results(grade))
    [test] = [t for t in results["tests"] if t["name"] == "training_mnist:94%"]
    assert test["output_format"] == "html" and test["output"].count('src="data:image/png;base64,') == 2
    assert "<script>" not in test["output"]  # the student's text is escaped, only our tags are HTML
    assert "cell 3: print(model) (a call)" in results["output"] and "Dropped from your notebook" in results["output"]


def test_a_failure_follows_the_format_too() -> None:
    check_gradescope_results(failure_results(20.0, "homework.zip is not a readable zip archive"))


def test_messages_are_safe_markdown() -> None:
    assert _md("reached 94.32%") == "reached 94.32%"
    assert _md("uses scaled_dot_product_attention") == "uses scaled\\_dot\\_product\\_attention"
    fenced = _md("a traceback\n```\nfake fence")
    assert fenced.startswith("````\n") and fenced.endswith("\n````")
    assert _md("a\rb <i>") == "```\na\nb <i>\n```"  # a lone CR ends a Markdown line too: a block of its own


@pytest.mark.parametrize("hostile,shown", [
    ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
    ("&lt;b&gt; & co", "&amp;lt;b&amp;gt; &amp; co"),
    ("a\n\n- item\r# heading", "a\\\\n\\\\n- item\\\\r\\# heading"),
    ("- item", "\\- item"), ("+ item", "\\+ item"), ("12. item", "12\\. item"), ("  3) item", "  3\\) item"),
    ("95.10% after 3.5 epochs", "95.10% after 3.5 epochs"),
    ("[x](javascript:alert(1)) ![i](x) **b** _i_ `c` ~s~ | t | $m$ {a}",
     "\\[x\\](javascript:alert(1)) !\\[i\\](x) \\*\\*b\\*\\* \\_i\\_ \\`c\\` \\~s\\~ \\| t \\| \\$m\\$ \\{a\\}"),
    ("tab\there\x1b[31m\u202eevil\u2028", "tab\\\\there\\\\x1b\\[31m\\\\u202eevil\\\\u2028"),
])
def test_untrusted_text_is_one_literal_line_of_markdown(hostile: str, shown: str) -> None:
    assert escape(hostile, "md") == shown and "\n" not in escape(hostile, "md", block=False)


def test_untrusted_text_is_one_line_of_plain_text() -> None:
    assert escape("evil\r\n<b>name</b>\tx\x1b[2J", "text") == "evil\\r\\n<b>name</b>\\tx\\x1b[2J"
    assert failure_results(1.0, "x\ny.zip is not a zip")["output"] == "x\\ny.zip is not a zip"
    with pytest.raises(ValueError, match="no escaping for output_format 'html'"):
        escape("x", "html")


def test_the_schema_refuses_what_gradescope_does_not_read() -> None:
    with pytest.raises(jsonschema.ValidationError):
        check_gradescope_results({"score": 1, "max_score": 2, "tests": []})  # max_score belongs to tests
    with pytest.raises(jsonschema.ValidationError):
        check_gradescope_results({"score": 1, "tests": [{"name": "x", "score": 1, "max_score": 1, "status": "skipped"}]})


def test_a_bundle_without_its_training_data_tells_the_student_it_is_misconfigured(tmp_path) -> None:
    from grader.gradescope import MISCONFIGURED_DATA, main as gradescope_main

    (tmp_path / "submission").mkdir()
    (tmp_path / "submission" / "attention.py").write_text("x = 1\n")
    assert gradescope_main(["--root", str(tmp_path), "--training", "mnist"]) == 2
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert results["score"] == 0 and results["output"] == MISCONFIGURED_DATA
    assert "MNIST not found" in (tmp_path / "results" / "grader-error.txt").read_text()
