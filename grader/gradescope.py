"""``python -m grader.gradescope`` (what the autograder bundle's ``run_autograder`` calls): grade
``ROOT/submission`` as Gradescope lays it out and write ``ROOT/results/results.json``, always.

Students upload what they have: loose files, a zipped folder (so one folder nested inside), one
notebook or one ``.py``. The staging code finds the modules in any of these. An upload that
cannot be read (empty, garbage, a refused zip, a notebook that is not JSON) still gets a
results.json with score 0 and a message that says what to upload instead.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grader import jail
from grader.__main__ import deployment_seed
from grader.batch import MISCONFIGURED, grade_one, rubric_total
from grader.course import COURSE_FILE, Course, read_course
from grader.grade import TRAINING_CHOICES, GradeOptions, missing_data
from grader.report import write_failure
from grader.rubric import RubricError, load_rubric
from reference.devices import device_argument

MISCONFIGURED_DATA = ("the autograder is misconfigured: the data its training is graded on is missing, so nothing "
                      "was graded; this is not your fault: tell your instructor")


def submitted(folder: Path) -> Path:
    """What to grade in Gradescope's submission folder: the folder itself, or the one file in it
    (a .zip, .ipynb or .py uploaded alone); staging then finds the modules, nested or not."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"] \
        if folder.is_dir() else []
    if len(entries) == 1 and entries[0].is_file():
        return entries[0]
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader.gradescope", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("/autograder"), help="Gradescope's folder (default /autograder)")
    parser.add_argument("--training", choices=list(TRAINING_CHOICES), default="mnist")
    parser.add_argument("--device", default="cpu", type=device_argument)
    parser.add_argument("--data-dir", default=None, help="default: ROOT/source/data")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="the guard on training seconds (default: the course file's share of Gradescope's timeout)")
    parser.add_argument("--course", type=Path, default=None, help="the course file (default: ROOT/source/course.toml)")
    args = parser.parse_args(argv)
    results = args.root / "results"
    data_dir = args.data_dir or str(args.root / "source" / "data")
    course = args.course or args.root / "source" / COURSE_FILE
    try:
        settings = read_course(course) if course.is_file() or args.course else Course()
        points = load_rubric(None, course if course.is_file() else None)
    except RubricError as e:  # the bundle is broken: the instructor's to fix, said in the student's results too
        write_failure(results, "submission", 0.0, f"the autograder is misconfigured ({e}); tell your instructor")
        return 2
    total = rubric_total(points, args.training)
    try:  # the jail, or no grading: the details go to the log (stderr), the student reads that it is not theirs
        jail.require(jail.detect())
    except jail.IsolationError as e:
        print(f"error: {e}", file=sys.stderr)
        write_failure(results, "submission", total, MISCONFIGURED, str(e))
        return 2
    folder = args.root / "submission"
    if not folder.is_dir() or not any(folder.iterdir()):
        write_failure(results, "submission", total, "nothing was uploaded: upload your student_template folder "
                      "as a zip, or its files attention.py, blocks.py and vit.py (and your notebooks)")
        return 0
    options = GradeOptions(training=args.training, device=args.device, seed=deployment_seed(), data_dir=data_dir,
                           time_limit=args.time_limit or settings.gradescope_guard,
                           course=str(course) if course.is_file() else None).resolved()
    missing = missing_data(options)
    if missing:  # a bundle without its data: the instructor's to fix, not a smaller maximum for the student
        print("error: " + "\n".join(missing), file=sys.stderr)
        write_failure(results, "submission", total, MISCONFIGURED_DATA, "\n".join(missing))
        return 2
    grade_one(submitted(folder), results, "submission", options, total)
    return 0  # a submission that could not be graded has its results.json: Gradescope shows it


if __name__ == "__main__":
    sys.exit(main())
