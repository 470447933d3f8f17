"""The kit installed from its wheel, not from the checkout: every file the code reads is inside,
and grading and checking work from the installed packages alone."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from course.wheel import build_wheel

pytestmark = pytest.mark.integration  # the tier `make test-fast` leaves out (tests/conftest.py)

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("reference", "student_template", "grader", "theory", "course")
GENERATED = ("build",)  # theory/build/: rendered output, not part of the kit


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
                           str(wheel)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return site


def kit_files() -> list[str]:
    """Every file of the kit's packages in the checkout, as the wheel names it."""
    found = []
    for package in PACKAGES:
        for path in (REPO / package).rglob("*"):
            parts = path.relative_to(REPO).parts
            if path.is_file() and "__pycache__" not in parts and parts[1] not in GENERATED and path.suffix != ".pyc":
                found.append("/".join(parts))
    return sorted(found)


def test_the_wheel_carries_every_file_of_the_kit(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        inside = set(zf.namelist())
    missing = [name for name in kit_files() if name not in inside]
    assert missing == []
    assert "grader/hidden/test_attention.py" in inside and "course/visible_checks.py" in inside


def run_installed(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python args`` seeing the kit only as installed in ``site`` (first on the path), not the checkout."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_an_installed_kit_grades_and_checks_without_the_checkout(installed: Path, tmp_path: Path) -> None:
    where = run_installed(installed, "-c", "import grader, course; print(grader.__file__, course.__file__)", cwd=tmp_path)
    assert where.stdout.count(str(installed)) == 2, where.stdout + where.stderr
    graded = run_installed(installed, "-m", "grader", "--training", "none", "--out", str(tmp_path / "grades"),
                           cwd=tmp_path)
    assert graded.returncode == 0, graded.stderr[-2000:]
    results = json.loads((tmp_path / "grades" / "reference" / "results.json").read_text())
    assert results["score"] == results["extra_data"]["max_score"] > 0
    homework = tmp_path / "homework"  # a student's folder: vitkit-check with no path checks where it is run
    homework.mkdir()
    for name in ("attention.py", "blocks.py", "vit.py"):
        (homework / name).write_text((REPO / "student_template" / name).read_text())
    checked = run_installed(installed, "-c", "import sys; from grader.__main__ import check_main; "
                            "sys.argv = ['vitkit-check']; sys.exit(check_main())", cwd=homework)
    assert checked.returncode == 1 and f"{homework}: the students' checks" in checked.stdout, checked.stderr[-2000:]
    graded = run_installed(installed, "-m", "grader", "--training", "none", cwd=tmp_path)  # no --out: here
    assert graded.returncode == 0 and (tmp_path / "grades" / "reference" / "results.json").is_file(), graded.stderr
    assert not (installed / "grades").exists()  # never into site-packages
    built = run_installed(installed, "-m", "course.handout", "--dist", str(tmp_path / "dist"), cwd=tmp_path)
    assert built.returncode == 0 and (tmp_path / "dist" / "vit-homework-handout.zip").is_file(), built.stderr
