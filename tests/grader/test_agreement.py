"""One judgement, two audiences: on the public seed, each check students see gets the same verdict
from the handout's visible tests (run with pytest in an unpacked handout, as a student runs them),
from `make check` (the grader's students' subset, in its sandbox) and from the grader itself (all
checks, hidden ones between them), for the reference, the unfilled template, every one-change
mistake, every correct variant and every correct style.

Left out, and why: code that hangs or ends its own process at import, or allocates terabytes
(the visible tests run in the student's own Python, where that is the student's own machine's
business; the grader's sandbox contains it), and library attention or a CNN (the grader finds
those at run time and in the source; the visible tests check values only, and the handout's
README states the rule)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from grader.checklib import TABLE
from grader.checks import STUDENT_CHECKS
from grader.grade import GradeOptions, grade_submission
from tests.grader.test_fairness import VARIANTS, variant
from tests.grader.test_grading import CORPUS, IMPORT_BREAKAGES, make_submission

pytestmark = pytest.mark.integration  # the tier `make test-fast` leaves out (tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]
STYLES = Path(__file__).resolve().parent / "fixtures" / "styles"
EXERCISES = ("attention.py", "blocks.py", "vit.py")
OUTSIDE = {"hang_at_import", "crash_at_import", "huge_allocation",  # the sandbox's business
           "forbidden_sdpa", "forbidden_torch_layer", "cnn_instead_of_blocks"}  # found by the grader's traps and scan
SUBMISSIONS = ["reference", "template", *sorted(set(CORPUS) - OUTSIDE), *sorted(set(IMPORT_BREAKAGES) - OUTSIDE),
               *(f"variant:{v}" for v in sorted(VARIANTS)),
               *(f"style:{s.name}" for s in sorted(STYLES.glob("*")) if s.is_dir())]


@pytest.fixture(scope="module")
def handout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from course import handout

    where = tmp_path_factory.mktemp("handout")
    with zipfile.ZipFile(handout.build(where / "dist", "torch==2.13.0")) as zf:
        zf.extractall(where)
    return where / handout.ASSIGNMENT


def submission(name: str, root: Path) -> Path:
    """The exercises of ``name``, in a folder of their own."""
    kind, _, which = name.partition(":")
    if kind == "reference":
        return REPO / "reference"
    if kind == "template":
        return REPO / "student_template"
    if kind == "variant":
        return variant(root, which)
    if kind == "style":
        return STYLES / which
    return make_submission(root, name)


def visible_verdicts(handout: Path, exercises: Path, where: Path) -> dict[str, bool]:
    """Each visible test's check and whether it passed, run as a student runs them (`pytest` in a
    copy of the handout whose template holds ``exercises``)."""
    folder = where / "handout"
    shutil.copytree(handout, folder)
    for name in EXERCISES:
        shutil.copy(exercises / name, folder / "student_template" / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
    ran = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml=report.xml"],
                         cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    check_of = {TABLE[n].function.__name__: n for n in STUDENT_CHECKS}
    verdicts = {}
    for case in ET.parse(folder / "report.xml").getroot().iter("testcase"):
        bad = case.find("failure") is not None or case.find("error") is not None
        verdicts[check_of[case.get("name")]] = not bad
    assert verdicts, ran.stdout[-2000:] + ran.stderr[-2000:]
    return verdicts


def test_the_visible_tests_are_the_checks_students_see(handout: Path) -> None:
    """Generated from the table: one test per check students see, in its order, and nothing of the others."""
    text = "\n".join(p.read_text() for p in sorted((handout / "tests").glob("test_*.py")))
    assert [n for n in TABLE if f'@check("{n}"' in text] == list(STUDENT_CHECKS)
    for name, row in TABLE.items():
        if name not in STUDENT_CHECKS:
            assert row.function.__name__ not in text and f'"{name}"' not in text, name


@pytest.fixture(scope="module")
def verdicts(handout: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict, dict, dict]]:
    """Per submission, each check's verdict from the visible tests, `make check` and the grader
    (two submissions at a time: each is a process of its own)."""
    root = tmp_path_factory.mktemp("agreement")

    def judge(name: str) -> tuple[str, tuple[dict, dict, dict]]:
        where = root / name.replace(":", "-")
        exercises = submission(name, where / "src")
        visible = visible_verdicts(handout, exercises, where)
        check = grade_submission(exercises, where / "check", GradeOptions(seed=0, visible_only=True))
        graded = grade_submission(exercises, where / "grade", GradeOptions(seed=0, training="none"))
        return name, (visible, {r.name: r.passed for r in check.results},
                      {r.name: r.passed for r in graded.results if r.name in STUDENT_CHECKS})

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(judge, SUBMISSIONS))


@pytest.mark.parametrize("name", SUBMISSIONS)
def test_visible_tests_make_check_and_the_grader_agree(verdicts: dict, name: str) -> None:
    visible, checked, grader = verdicts[name]
    assert list(visible) == list(STUDENT_CHECKS)
    assert visible == checked == grader, {n: (visible.get(n), checked.get(n), grader.get(n)) for n in STUDENT_CHECKS
                                          if not visible.get(n) == checked.get(n) == grader.get(n)}
    if name == "reference" or name.startswith(("variant:", "style:")):
        assert all(visible.values()), [n for n, ok in visible.items() if not ok]
    if name == "template":
        assert not any(visible.values())
