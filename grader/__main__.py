"""``python -m grader`` (``make grade``, ``make check``).

    python -m grader [SUBMISSION ...] [--out DIR] [--training none|mnist|all] [--device auto|cpu|cuda]
    python -m grader --check [SUBMISSION]

A SUBMISSION is a folder laid out like student_template/, one .py file, a .ipynb notebook, or a
.zip of one of those. Without one, ``python -m grader`` grades reference/ (a self-check) and
``--check`` checks student_template/. Reports go to OUT/<name>/ (default grades/<name>/):
results.json (Gradescope's format) and report.html. The exit status is 0 whenever grading ran,
whatever the score; 2 when a submission or the rubric could not be read.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from grader.grade import TRAINING_CHOICES, GradeOptions, grade_submission
from grader.report import summary, write_reports
from grader.rubric import RubricError
from grader.submission import SubmissionError
from reference.training import device_argument, resolve_device

REPO = Path(__file__).resolve().parent.parent


def _name(path: Path) -> str:
    return path.resolve().name.removesuffix(".zip").removesuffix(".ipynb").removesuffix(".py") or "submission"


def check(path: Path, options: GradeOptions) -> int:
    """The students' quick check: interface and shapes, per exercise, without points."""
    options.visible_only = True
    with tempfile.TemporaryDirectory(prefix="grader-") as work:
        grade = grade_submission(path, Path(work), options)
    print(f"{path}: visible checks (interface and shapes; the grader also checks values against PyTorch)")
    for note in grade.notes:
        print(f"  note: {note.splitlines()[0]}")
    for r in grade.results:
        print(f"  {'ok  ' if r.passed else 'FAIL'} {r.name}" + ("" if r.passed else f"\n       {r.message.splitlines()[0]}"))
    passed = sum(r.passed for r in grade.results)
    print(f"{passed}/{len(grade.results)} visible checks pass")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("submissions", nargs="*", type=Path, help="default: reference/ (or student_template/ with --check)")
    parser.add_argument("--out", type=Path, default=None, help="reports go to OUT/<name>/ (default grades/<name>/)")
    parser.add_argument("--training", choices=list(TRAINING_CHOICES), default="mnist")
    parser.add_argument("--device", default="auto", type=device_argument, help="auto, cpu or cuda (training)")
    parser.add_argument("--seed", type=int, default=0, help="draws the hidden inputs; recorded in the report")
    parser.add_argument("--data-dir", default=None, help="data directory (default: $VITKIT_DATA, else ./data)")
    parser.add_argument("--rubric", default=None, help="points per check (default: grader/rubric.json)")
    parser.add_argument("--time-limit", type=float, default=None, help="training seconds per recipe")
    parser.add_argument("--check", action="store_true", help="only the visible checks, for students")
    args = parser.parse_args(argv)
    options = GradeOptions(training=args.training, device=args.device, seed=args.seed, data_dir=args.data_dir,
                           rubric=args.rubric, time_limit=args.time_limit, verbose=not args.check)
    if not args.check and args.training == "all" and resolve_device(args.device).type == "cpu":
        print("note: training CIFAR-10 on the CPU: within the time limit a correct ViT reaches only the lower "
              "thresholds (see README); grade CIFAR-10 on a GPU", file=sys.stderr)
    default = REPO / ("student_template" if args.check else "reference")
    submissions = args.submissions or [default]
    status = 0
    for path in submissions:
        try:
            if args.check:
                check(path, options)
                continue
            name = _name(path)
            out_dir = (args.out or REPO / "grades") / name
            print(f"grading {path} ...", file=sys.stderr, flush=True)
            with tempfile.TemporaryDirectory(prefix="grader-") as work:
                grade = grade_submission(path, Path(work), options)
            write_reports(grade, out_dir, name)
            print(summary(grade, name))
            print(f"  reports: {out_dir / 'results.json'}, {out_dir / 'report.html'}")
        except (SubmissionError, RubricError) as e:
            print(f"error: {path}: {e}", file=sys.stderr)
            status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
