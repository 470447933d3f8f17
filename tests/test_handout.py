"""make handout: the archive students receive is built, unpacked outside the kit, and used as a
student would: its visible tests fail with "not implemented" on the unfilled template and pass
once the exercises are done, and no line of the reference's solutions is inside."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

from course import handout
from course.template import EXERCISES

REPO = Path(__file__).resolve().parent.parent
TORCH_SPEC = "torch==2.13.0"


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return handout.build(tmp_path_factory.mktemp("dist"), TORCH_SPEC)


def unpack(archive: Path, where: Path) -> Path:
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(where)
    return where / handout.ASSIGNMENT


def run_visible_tests(folder: Path, python: str = sys.executable) -> list[tuple[str, str, str]]:
    """(test, outcome, message) for each visible test, run as a student runs them: `pytest` in the folder."""
    report = folder / "report.xml"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
    subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}"],
                   cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    results = []
    for case in ET.parse(report).getroot().iter("testcase"):
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        outcome = "passed" if bad is None else bad.tag
        results.append((case.get("name"), outcome, "" if bad is None else bad.get("message", "")))
    return results


def test_the_archive_holds_what_students_need_and_nothing_of_ours(archive: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {handout.ASSIGNMENT}
    inside = {n.split("/", 1)[1] for n in names}
    for needed in ("README.md", "requirements.txt", "pytest.ini", "student_template/attention.py",
                   "student_template/vision_transformer.ipynb", "student_template/theory_questions.md",
                   "tests/test_attention.py", "tests/test_blocks.py", "tests/test_vit.py"):
        assert needed in inside
    assert not [n for n in inside if n.split("/")[0] in ("reference", "grader", "theory", "course")
                or "__pycache__" in n or n.endswith(".pyc")]
    with zipfile.ZipFile(archive) as zf:
        text = "\n".join(zf.read(n).decode(errors="replace") for n in names)
    assert "BEGIN SOLUTION" not in text and "import grader" not in text
    assert "torch==2.13.0" in zf_read(archive, "requirements.txt").splitlines()


def zf_read(archive: Path, name: str) -> str:
    with zipfile.ZipFile(archive) as zf:
        return zf.read(f"{handout.ASSIGNMENT}/{name}").decode()


def test_no_solution_line_is_inside_and_the_scan_would_see_one(archive: Path, tmp_path: Path) -> None:
    folder = unpack(archive, tmp_path)
    assert handout.solution_lines() and handout.leaked_lines(folder) == []
    shutil.copy(REPO / "reference" / "vit.py", folder / "student_template" / "vit.py")
    assert any(leak.startswith("student_template/vit.py: ") for leak in handout.leaked_lines(folder))


def test_the_builder_refuses_to_ship_a_solution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tests = tmp_path / "visible"
    tests.mkdir()
    (tests / "test_leak.py").write_text("def test_x():\n    scores = scores.masked_fill(~mask, float(\"-inf\"))\n")
    monkeypatch.setattr(handout, "VISIBLE_TESTS", tests)
    with pytest.raises(handout.HandoutError, match="solution lines"):
        handout.build(tmp_path / "dist", TORCH_SPEC)
    assert not (tmp_path / "dist" / f"{handout.ASSIGNMENT}-handout.zip").exists()


def test_visible_tests_fail_not_implemented_then_pass_with_the_exercises_done(archive: Path, tmp_path: Path) -> None:
    folder = unpack(archive, tmp_path)
    unfilled = run_visible_tests(folder)
    assert len(unfilled) >= 15
    assert all(outcome == "failure" and "not implemented" in message for _, outcome, message in unfilled), unfilled
    for name in EXERCISES:  # a student who got everything right: the reference's exercise files
        shutil.copy(REPO / "reference" / name, folder / "student_template" / name)
    done = run_visible_tests(folder)
    assert [name for name, outcome, _ in done if outcome != "passed"] == []
    assert len(done) == len(unfilled)


def test_the_command_line_builds_the_archive_and_refuses_a_bad_name(tmp_path: Path) -> None:
    ran = subprocess.run([sys.executable, "-m", "course.handout", "--dist", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0 and (tmp_path / f"{handout.ASSIGNMENT}-handout.zip").is_file(), ran.stderr
    import torch  # without --torch-spec, students get the torch the kit runs on, pinned

    pinned = f"torch=={torch.__version__.split('+')[0]}"
    assert pinned in zf_read(tmp_path / f"{handout.ASSIGNMENT}-handout.zip", "requirements.txt").splitlines()
    bad = subprocess.run([sys.executable, "-m", "course.handout", "--dist", str(tmp_path), "--assignment", "../x"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "use letters, digits" in bad.stderr


@pytest.mark.slow
def test_a_fresh_environment_from_the_handouts_requirements_runs_its_tests(archive: Path, tmp_path: Path) -> None:
    """As a student on a new machine: a virtual environment, the handout's requirements, pytest."""
    folder = unpack(archive, tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "--quiet", "-r", "requirements.txt"], cwd=folder,
                             capture_output=True, text=True, timeout=1200)
    if install.returncode != 0 and "No matching distribution" in install.stderr:
        pytest.skip(f"no package index reachable here: {install.stderr.strip().splitlines()[-1]}")
    assert install.returncode == 0, install.stderr[-2000:]
    results = run_visible_tests(folder, python)
    assert results and all(outcome == "failure" and "not implemented" in message for _, outcome, message in results)


def _imports(source: str) -> set[str]:
    """Top-level modules ``source`` imports (absolute imports only)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_the_handouts_requirements_cover_everything_its_code_imports(archive: Path) -> None:
    """Every third-party module the handout's modules, tests and notebooks import is in its
    requirements (the notebooks' in requirements-notebooks.txt), or is imported only on request."""
    import json
    import re
    import sys

    imported = set()
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            text = zf.read(name).decode()
            if name.endswith(".py"):
                imported |= _imports(text)
            elif name.endswith(".ipynb"):
                for cell in json.loads(text)["cells"]:
                    if cell["cell_type"] == "code":
                        code = "".join(cell["source"])
                        imported |= _imports("\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!"))))
    local = {"student_template", "tests", "conftest"}
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m not in local}

    def names(text: str) -> set[str]:
        return {re.split(r"[<>=!~\[ ]", line.strip())[0].lower() for line in text.splitlines()
                if line.strip() and not line.startswith("-r")}

    required = names(zf_read(archive, "requirements.txt"))
    assert third_party - required - set(handout.OPTIONAL_IMPORTS) == set(), third_party
    assert {"tqdm"} <= required and "ipywidgets" in names(zf_read(archive, "requirements-notebooks.txt"))
