"""The handout's visible tests are generated from the grader's check table (course.visible_checks):
the checks students see, cut out of the hidden modules with what they use and nothing else, run
in the student's own Python (grader.local) by the grader's own runner (checklib.Runner)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from course.visible_checks import VisibleChecksError, student_module, write
from grader.checklib import CheckFailed, Context, expect
from grader.checks import STUDENT_CHECKS, TABLE
from grader.local import LocalSubmission

HIDDEN_MODULE = '''"""Hidden checks of x.py."""
from __future__ import annotations

import math
import os

from grader.checklib import Context, check, expect
from reference.configs import RECIPES


SHARED = 3  # used by both


def seen_helper() -> int:
    return SHARED


def secret_helper() -> int:  # only the hidden check uses it
    return len(RECIPES) + SHARED


@check("x:seen", points=1, student=True)
def test_seen(ctx: Context) -> None:
    """A check students see."""
    expect(seen_helper() == math.floor(3.5), "seen")


@check("x:secret", points=1)
def test_secret(ctx: Context) -> None:
    """A check students do not see."""
    expect(secret_helper() > 0, "secret")
'''


def test_a_module_keeps_the_checks_students_see_and_what_they_use() -> None:
    text = student_module(HIDDEN_MODULE, {"x:seen"}, "x.py")
    assert "def test_seen" in text and "def seen_helper" in text and "SHARED = 3" in text
    assert "secret" not in text and "RECIPES" not in text and "import os" not in text
    assert "from vitchecks.checklib import Context, check, expect" in text and "import math" in text
    assert "from __future__ import annotations" in text and "Hidden" not in text
    compile(text, "x.py", "exec")


def test_a_module_that_imports_what_the_handout_lacks_is_refused() -> None:
    source = HIDDEN_MODULE.replace("def seen_helper() -> int:\n    return SHARED",
                                   "from grader.grade import GradeOptions\n\n\ndef seen_helper() -> int:\n"
                                   "    return SHARED + len(str(GradeOptions))")
    with pytest.raises(VisibleChecksError, match="grader.grade"):
        student_module(source, {"x:seen"}, "x.py")


def test_the_generated_folder_has_every_check_students_see_and_no_other(tmp_path: Path) -> None:
    assert write(tmp_path) == list(STUDENT_CHECKS)
    text = "\n".join(p.read_text() for p in sorted(tmp_path.glob("test_*.py")))
    assert [n for n in TABLE if f'@check("{n}"' in text] == list(STUDENT_CHECKS)
    assert not [n for n in TABLE if n not in STUDENT_CHECKS and TABLE[n].function.__name__ in text]
    assert "grader" not in {line.split()[1].split(".")[0] for p in tmp_path.rglob("*.py")
                            for line in p.read_text().splitlines() if line.startswith(("import ", "from "))}
    for path in tmp_path.rglob("*.py"):
        compile(path.read_text(), str(path), "exec")


def test_a_check_asks_for_what_it_builds_on_and_that_runs_first() -> None:
    ran = []

    def part(ctx: Context) -> None:
        ran.append("part")
        expect(ctx.randn(1).numel() == 1, "never")

    def broken(ctx: Context) -> None:
        ran.append("broken")
        raise CheckFailed("the part is wrong")

    ctx = Context(lambda *a: None, seed=0)
    ctx.pending = {"part:one": part, "other:one": broken}
    before = ctx.generator.get_state()
    assert ctx.passed("part") and ran == ["part"]
    assert ctx.generator.get_state().equal(before)  # the asking check's inputs are untouched
    assert not ctx.passed("other") and ctx.results["other:one"].message == "the part is wrong"
    assert ctx.passed("part") and ran == ["part", "broken"]  # decided once


def test_the_submission_runs_in_this_process_as_a_child_would_run_it(tmp_path: Path) -> None:
    (tmp_path / "attention.py").write_text("import torch\n\ndef scaled_dot_product_attention(q, k, v, mask=None):\n"
                                           "    w = (q @ k.transpose(-2, -1)).softmax(-1)\n    return w @ v, w\n")
    (tmp_path / "blocks.py").write_text("raise RuntimeError('at import')\n")
    local = LocalSubmission(tmp_path, seed=5)
    try:
        statuses = local.modules()
        assert statuses["attention"] == "ok" and "RuntimeError: at import" in statuses["blocks"]
        assert "blocks.py line 1" in statuses["blocks"] and "No module named" in statuses["vit"]
        import torch

        q = torch.randn(2, 3, 4)
        value = local.call("attention_function", q, q, q).value
        assert set(value) >= {"out", "weights"} and value["out"].shape == (2, 3, 4)
        failed = local.call("patchify", torch.zeros(1, 1, 4, 4), 2)
        assert not failed.ok and "does not define 'patchify'" in failed.error
    finally:
        for name in [m for m in sys.modules if m.split(".")[0] == "student_submission"]:
            del sys.modules[name]
