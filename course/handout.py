"""``python -m course.handout`` (``make handout``): ``dist/<assignment>-handout.zip``, all that
students receive.

The archive holds one folder, ``<assignment>/``, with:

- ``student_template/``: generated afresh from ``reference/`` (the exercises with their TODOs,
  the provided modules, the notebooks, the theory questions); its training notebook trains the
  recipes, budgets and thresholds of the course file;
- ``tests/``: the visible tests, plain pytest: the grader's checks that students see, generated
  from its table (``course.visible_checks``), run in the student's own Python on the public seed;
- ``README.md`` (``course/handout_README.md``), ``requirements.txt`` (torch pinned as the kit
  pins it), ``requirements-notebooks.txt`` and ``pytest.ini``.

Nothing of the reference solution, the hidden checks or the theory answers (of the grader, the
students' checks and the files they run with, which a submission runs next to when graded anyway):
the builder refuses to write an archive in which any line of the reference's solutions appears.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import zipfile
from pathlib import Path

from course import visible_checks
from course.archive import assignment_name, installed_torch, write_zip
from course.notebooks import vit_notebook
from course.template import BEGIN, END, EXERCISES, PROVIDED, TemplateError, generate

REPO = Path(__file__).resolve().parent.parent
ASSIGNMENT = "vit-homework"
# What students install: the kit's own torch pin is passed in by `make handout` (TORCH_SPEC).
REQUIREMENTS = ("numpy>=1.24", "matplotlib>=3.7", "einops>=0.7", "pytest>=7.4", "tqdm>=4.60")
# ipywidgets: tqdm's progress bars in Jupyter (text lines fill the saved notebook without it)
NOTEBOOK_REQUIREMENTS = ("-r requirements.txt", "jupyterlab>=4", "ipykernel>=6", "ipywidgets>=8")
# Imported by the handout's code only on request: data.py's download=True (a machine with a network)
OPTIONAL_IMPORTS = ("torchvision",)
PYTEST_INI = "[pytest]\ntestpaths = tests\npythonpath = .\naddopts = -ra\n"
_PUNCTUATION_ONLY = re.compile(r"^[\W_]*$")


class HandoutError(ValueError):
    """The handout would be wrong (a solution line inside, a missing source); the message says what."""


def solution_lines(reference_dir: Path = REPO / "reference") -> set[str]:
    """Every line of code inside the reference's solution markers, stripped, that the handout may
    not contain: less punctuation-only lines and lines the provided modules also hold."""
    found: set[str] = set()
    for name in EXERCISES:
        inside = False
        for line in (reference_dir / name).read_text().splitlines():
            text = line.strip()
            if text.startswith(BEGIN):
                inside = True
            elif text.startswith(END):
                inside = False
            elif inside and text and not text.startswith("#") and not _PUNCTUATION_ONLY.match(text):
                found.add(text)
    provided = {line.strip() for name in PROVIDED for line in (reference_dir / name).read_text().splitlines()}
    return found - provided


def _text_lines(path: Path) -> list[str]:
    """The lines a person would read in ``path``: a notebook's cells, any other file's text."""
    text = path.read_text(errors="replace")
    if path.suffix == ".ipynb":
        cells = json.loads(text).get("cells", [])
        text = "\n".join("".join(c.get("source", "")) + "\n" + "".join(
            "".join(o.get("text", "")) for o in c.get("outputs", [])) for c in cells)
    return [line.strip() for line in text.splitlines()]


def leaked_lines(folder: Path, reference_dir: Path = REPO / "reference") -> list[str]:
    """``file: line`` for every solution line found in a file under ``folder``."""
    secret = solution_lines(reference_dir)
    return [f"{path.relative_to(folder)}: {line}" for path in sorted(folder.rglob("*")) if path.is_file()
            for line in _text_lines(path) if line in secret]


def grading_section(course: Path | None = None) -> str:
    """The README's "How it is graded": points per part as the course file sets them (the kit's
    table by default), the training thresholds its training mode awards, and the total."""
    from grader.checks import COMPONENTS
    from grader.course import Course, read_course
    from grader.grade import TRAINING_CHOICES
    from grader.rubric import read_rubric
    from reference.configs import get_recipe

    points, _ = read_rubric(None, course)
    settings = read_course(course) if course else Course()
    training = settings.training or "mnist"
    trained = TRAINING_CHOICES[training]
    rows, total = [], 0.0
    for component in COMPONENTS:
        exercise = component.removeprefix("training_")
        if exercise != component and exercise not in trained:
            continue
        worth = sum(p for n, p in points.items() if n.split(":")[0] == component)
        if exercise != component:
            recipe = settings.recipe_for(exercise, get_recipe(exercise))  # its thresholds as the course sets them
            how = "the weights you submit" if training == "checkpoint" else "your ViT, trained by the grader"
            thresholds = ", ".join(f"{round(100 * t)} %" for t in recipe.thresholds)
            component = f"{recipe.dataset} test accuracy of {how} (at {thresholds})"
        rows.append(f"| {component} | {worth:g} |")
        total += worth
    return ("## How it is graded\n\n| part | points |\n|---|---|\n" + "\n".join(rows)
            + f"\n\nTotal: {total:g} points. The hidden checks run your code on other inputs than the visible "
              "tests; the grader measures every accuracy itself.\n")


def stage(out: Path, torch_spec: str, assignment: str = ASSIGNMENT, course: Path | None = None) -> Path:
    """Lay the handout out in ``out/<assignment>/`` and return that folder; its README says how the
    ``course`` file grades."""
    root = out / assignment
    (root / "tests").mkdir(parents=True)
    try:
        generate(REPO / "reference", root / "student_template")
    except TemplateError as e:
        raise HandoutError(f"the reference's solution markers are malformed: {e}") from None
    try:
        visible_checks.write(root / "tests")
    except visible_checks.VisibleChecksError as e:
        raise HandoutError(str(e)) from None
    try:
        grading = grading_section(course)
    except ValueError as e:  # a course file with a mistake (grader.course.CourseError)
        raise HandoutError(str(e)) from None
    if course is not None:  # the training notebook trains what this course grades
        from grader.course import read_course

        (root / "student_template" / "vision_transformer.ipynb").write_text(vit_notebook(read_course(course)))
    (root / "README.md").write_text((Path(__file__).parent / "handout_README.md").read_text().rstrip("\n")
                                    + "\n\n" + grading)
    (root / "requirements.txt").write_text("\n".join((torch_spec, *REQUIREMENTS)) + "\n")
    (root / "requirements-notebooks.txt").write_text("\n".join(NOTEBOOK_REQUIREMENTS) + "\n")
    (root / "pytest.ini").write_text(PYTEST_INI)
    return root


def build(dist: Path, torch_spec: str, assignment: str = ASSIGNMENT, course: Path | None = None) -> Path:
    """Write ``dist/<assignment>-handout.zip`` (replacing an older one) and return its path."""
    with tempfile.TemporaryDirectory() as tmp:
        root = stage(Path(tmp), torch_spec, assignment, course)
        leaks = leaked_lines(root)
        if leaks:
            raise HandoutError("the handout would contain solution lines:\n  " + "\n  ".join(leaks[:10]))
        write_zip(dist / f"{assignment}-handout.zip", root, root.parent)
    return dist / f"{assignment}-handout.zip"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course.handout", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dist", type=Path, default=REPO / "dist", help="where the zip goes (default dist/)")
    parser.add_argument("--torch-spec", default=installed_torch(), help="the torch requirement students install (default: the installed version; make: TORCH_SPEC)")
    parser.add_argument("--assignment", default=ASSIGNMENT, type=assignment_name, help="the archive's and its folder's name")
    parser.add_argument("--course", type=Path, default=None, help="the course file whose points the README gives "
                                                                  "(make passes the kit's course.toml)")
    args = parser.parse_args(argv)
    try:
        archive = build(args.dist, args.torch_spec, args.assignment, args.course)
    except HandoutError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with zipfile.ZipFile(archive) as zf:
        print(f"wrote {archive} ({len(zf.namelist())} files): unzip it and read {args.assignment}/README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
