"""The hidden checks are pytest tests entered in one table: the rubric, the students' subset, the
components and the descriptions come from it, and a check is added by writing a test."""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from grader import __main__ as cli
from grader.checklib import TABLE, Context
from grader.checks import CHECKS, COMPONENTS, HIDDEN, STUDENT_CHECKS, TEST_CHECKS, run_checks
from grader.rubric import RubricError, read_rubric


def hidden_tests() -> list:
    import importlib
    return [fn for path in sorted(HIDDEN.glob("test_*.py"))
            for name, fn in inspect.getmembers(importlib.import_module(f"grader.hidden.{path.stem}"), inspect.isfunction)
            if name.startswith("test_")]


def test_every_hidden_test_is_a_row_of_the_table_with_a_description() -> None:
    tests = hidden_tests()
    assert tests and all(getattr(fn, "check_name", None) in TABLE for fn in tests)
    assert all(CHECKS[n].description and CHECKS[n].points > 0 for n in CHECKS)
    assert set(TEST_CHECKS) == set(TABLE) and set(STUDENT_CHECKS) <= set(TEST_CHECKS)
    assert COMPONENTS[0] == "attention" and COMPONENTS[-1] == "training_cifar10"


def test_the_default_rubric_is_the_table_and_a_file_changes_only_what_it_names(tmp_path: Path, capsys) -> None:
    points, visibility = read_rubric(None)
    assert points == {n: c.points for n, c in CHECKS.items()} and set(visibility.values()) == {"visible"}
    assert cli.main(["--rubric-template"]) == 0
    template = json.loads(capsys.readouterr().out)
    assert {k: v["points"] for k, v in template.items() if not k.startswith("_")} == points
    changed = tmp_path / "rubric.json"
    changed.write_text(json.dumps({"_why": "our course", "vit:forward": 4, "patchify:one_channel": {"visibility": "hidden"}}))
    points2, visibility2 = read_rubric(changed)
    assert points2 == {**points, "vit:forward": 4.0} and visibility2["patchify:one_channel"] == "hidden"
    changed.write_text(json.dumps({"vit:fwd": 1}))
    with pytest.raises(RubricError, match="unknown checks: vit:fwd"):
        read_rubric(changed)


EXAMPLE = """
from grader.checklib import CheckFailed, Context, check


@check("vit:example_passes", points=1)
def test_passes(ctx: Context) -> None:
    \"\"\"Passes with seed 7.\"\"\"
    assert ctx.seed == 7


@check("vit:example_expect", points=1)
def test_expect(ctx: Context) -> None:
    raise CheckFailed("the class token is missing")


@check("vit:example_assert", points=1)
def test_assert(ctx: Context) -> None:
    assert ctx.seed == 1, "the seed must be 1"


@check("vit:example_bare_assert", points=1)
def test_bare(ctx: Context) -> None:
    assert ctx.seed == 1


@check("vit:example_error", points=1)
def test_error(ctx: Context) -> None:
    {}["logits"]
"""


def test_an_instructor_adds_a_check_by_writing_a_test(tmp_path: Path, monkeypatch) -> None:
    """A module of tests written the instructor's way (``CheckFailed``, an assert with a message,
    a bare assert, an unexpected error), each verdict recorded with a message a student can read."""
    (tmp_path / "test_example.py").write_text(EXAMPLE)
    names = ["vit:example_passes", "vit:example_expect", "vit:example_assert", "vit:example_bare_assert", "vit:example_error"]
    monkeypatch.setattr("grader.checks.HIDDEN", tmp_path)
    monkeypatch.setattr("grader.checks.TEST_CHECKS", tuple(names))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        results = {r.name: r for r in run_checks(Context(lambda *a: None, seed=7), names)}
    finally:
        for name in names:
            TABLE.pop(name, None)
    assert list(results) == names
    assert results["vit:example_passes"].passed
    assert results["vit:example_expect"].message == "the class token is missing"
    assert results["vit:example_assert"].message == "the seed must be 1"
    bare = results["vit:example_bare_assert"].message
    assert ("test_example.py line" in bare and "ctx.seed == 1" in bare) or bare == "assert 7 == 1"  # rewritten under pytest
    assert results["vit:example_error"].message.startswith("unexpected output (KeyError")


def test_multi_head_is_worth_2_of_the_multihead_components_5_points() -> None:
    """A mistake in what makes attention multi-head (split, per-head scale, W^O) fails many_heads only."""
    multihead = {n: c.points for n, c in CHECKS.items() if c.component == "multihead"}
    assert sum(multihead.values()) == 5 and multihead["multihead:many_heads"] == 2
