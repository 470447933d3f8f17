"""``python -m grader`` (``make grade``, ``make check``).

    python -m grader [SUBMISSION ...] [--out DIR] [--training none|mnist|all|checkpoint] [--device auto|cpu|cuda]
    python -m grader CLASS_FOLDER [--jobs N] [--force]
    python -m grader --check [SUBMISSION]

A SUBMISSION is a folder laid out like student_template/, one .py file, a .ipynb notebook, or a
.zip of one of those. A CLASS_FOLDER holds one submission per entry, named by the student; several
submissions (or a class) also get OUT/gradebook.csv and OUT/index.html, and a re-run skips those
unchanged since the last one (--force grades them again). Without one, ``python -m grader`` grades
reference/ (a self-check) and ``--check`` checks student_template/ in a checkout, the current folder
where the kit is installed (``vitkit-check``). Reports go to OUT/<name>/ (default grades/<name>/ in the
checkout, or in the current folder where the kit is installed):
results.json (Gradescope's format) and report.html. A submission that cannot be read or graded
still gets a results.json (0 points, and why) and the batch goes on; when the grader itself failed,
OUT/<name>/grader-error.txt holds the traceback. The exit status is 0 whenever grading ran,
whatever the score; 2 when a submission could not be read or graded, or the rubric could not be
read (then nothing is graded). ``--check`` exits 1 when one of its checks fails.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from dataclasses import replace
from pathlib import Path

from grader import jail
from grader.batch import grade_class, grade_one, is_class_folder, rubric_total, submission_entries, submission_name
from grader.grade import TRAINING_CHOICES, GradeOptions, grade_submission, missing_data
from grader.course import read_course
from grader.rubric import RubricError, load_rubric, rubric_template
from grader.scratch import temporary_folder
from grader.submission import SubmissionError
from reference.configs import get_recipe
from reference.devices import cpu_has_amx, device_argument
from reference.training import bf16_native, resolve_device

REPO = Path(__file__).resolve().parent.parent
# Run from a checkout (make grade, make check) or installed (vitkit-grade, vitkit-check): installed,
# the defaults are the current folder's, never site-packages.
IN_CHECKOUT = (REPO / "pyproject.toml").is_file()


def check(path: Path, options: GradeOptions) -> int:
    """The students' quick check, without points: interface, shapes and values against PyTorch on
    inputs drawn from the public seed (never the deployment's). 1 when a check fails, else 0."""
    options = replace(options, visible_only=True)
    with temporary_folder("grader-") as work:
        grade = grade_submission(path, Path(work), options)
    print(f"{path}: the students' checks (interface, shapes, values against PyTorch on fixed inputs; seed {options.seed})")
    for note in grade.notes:
        print(f"  note: {note.splitlines()[0]}")
    for r in grade.results:
        print(f"  {'ok  ' if r.passed else 'FAIL'} {r.name}" + ("" if r.passed else f"\n       {r.message.splitlines()[0]}"))
    passed = sum(r.passed for r in grade.results)
    print(f"{passed}/{len(grade.results)} checks pass" + ("" if passed == len(grade.results) else
          "; the grader also runs hidden checks and trains your model"))
    return 0 if passed == len(grade.results) else 1


# Said after grading when the machine left checks without a verdict (grade.UNDECIDED): how to finish.
UNDECIDED_NOTE = ("undecided: the grading machine was too slow or too busy to decide some checks of {what}; "
                  "run the same command again, on a less busy machine if you can: for a class, only the undecided "
                  "submissions are graded again")


def deployment_seed() -> int:
    """``$VITKIT_GRADER_SEED`` (an integer), else 0; a clear exit for anything else."""
    text = os.environ.get("VITKIT_GRADER_SEED", "").strip()
    if not text:
        return 0
    try:
        return int(text)
    except ValueError:
        raise SystemExit(f"error: VITKIT_GRADER_SEED={text!r} is not an integer") from None


def add_grading_options(parser: argparse.ArgumentParser) -> None:
    """The options that say how to grade (shared with ``python -m grader slurm``)."""
    parser.add_argument("--out", type=Path, default=None, help="reports go to OUT/<name>/ (default grades/<name>/)")
    parser.add_argument("--course", type=Path, default=None,
                        help="the course file (TOML: points, visibility, training, guards; see grader/course.py); "
                             "make passes the kit's course.toml")
    parser.add_argument("--training", choices=list(TRAINING_CHOICES), default=None,
                        help="train the student's ViT here on mnist, on all recipes, or none; checkpoint: measure "
                             "the weights the student submitted (mnist.pt, cifar10.pt next to the modules); "
                             "default: the course file's, else mnist")
    parser.add_argument("--device", default="auto", type=device_argument, help="auto, cpu or cuda (training)")
    parser.add_argument("--seed", type=int, default=None,
                        help="draws the hidden inputs; recorded in the report (default: $VITKIT_GRADER_SEED, else 0, "
                             "so a deployment can keep its seed out of anything students receive)")
    parser.add_argument("--data-dir", default=None, help="data directory (default: $VITKIT_DATA, else ./data)")
    parser.add_argument("--rubric", default=None, help="a JSON file that changes points or visibility of checks "
                                                          "(default: the table of grader/checks.py)")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="training seconds per recipe (default: the recipe's own; else 600 on a CPU, 300 on a GPU)")
    parser.add_argument("--allow-unisolated", action="store_true",
                        help="grade even where the student's code cannot be jailed (it then runs with the grader's "
                             f"rights: only for submissions you trust; also {jail.ALLOW_ENV}=1)")


def read_settings(args: argparse.Namespace) -> str | None:
    """Read the course file and the rubric into ``args`` (what the command line leaves open comes
    from the course file: ``--training``); the error that says what is wrong in them, or None."""
    try:
        course = read_course(args.course) if args.course else None
        load_rubric(args.rubric, args.course)
    except RubricError as e:
        return f"error: {' '.join(str(e).split())}"
    args.training = args.training or (course.training if course else None) or "mnist"
    if args.course:
        args.course = args.course.resolve()  # the same file from any folder (Slurm's tasks)
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["slurm"]:  # python -m grader slurm CLASS: the same grading, as Slurm jobs
        from grader.slurm import main as slurm_main

        return slurm_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m grader", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("submissions", nargs="*", type=Path, help="default: reference/ (or student_template/ with --check)")
    add_grading_options(parser)
    parser.add_argument("--rubric-template", action="store_true", help="print every check's points and visibility as a rubric file, and exit")
    parser.add_argument("--check", action="store_true", help="only the visible checks, for students")
    parser.add_argument("--jobs", type=int, default=1, help="submissions graded side by side (each gets cores/JOBS threads)")
    parser.add_argument("--force", action="store_true", help="grade again submissions unchanged since the last run")
    parser.add_argument("--one", action="store_true", help="grade a folder as one submission, even where it looks "
                                                           "like a class (a folder of submissions)")
    args = parser.parse_args(argv)
    if args.rubric_template:
        print(rubric_template(), end="")
        return 0
    problem = read_settings(args)  # the instructor's mistake: stop before grading anything
    if problem:
        print(problem, file=sys.stderr)
        return 2
    points = load_rubric(args.rubric, args.course)
    # --check prints values drawn from its seed: never the deployment's, which stays secret.
    seed = args.seed if args.seed is not None else (0 if args.check else deployment_seed())
    options = GradeOptions(training=args.training, device=args.device, seed=seed, data_dir=args.data_dir,
                           rubric=args.rubric, time_limit=args.time_limit, visible_only=args.check,
                           verbose=not args.check, allow_unisolated=args.allow_unisolated,
                           course=str(args.course) if args.course else None).resolved()  # once: every stage reads these
    if not args.check:  # grading runs the students' code: only in the jail, unless the instructor said otherwise
        try:
            jail.require(jail.detect(), options.allow_unisolated)
        except jail.IsolationError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if "cifar10" in options.recipes and options.device == "cpu" and options.training != "checkpoint":
        recipe = get_recipe("cifar10", "cpu")
        speed = (("this CPU has AMX" if cpu_has_amx() else "this CPU computes in bf16, without AMX")
                 if bf16_native(resolve_device("cpu"))
                 else "this CPU has no bf16, so expect about half the speed and perhaps only the lower thresholds")
        print(f"note: CIFAR-10 on the CPU trains the {recipe.name} recipe, which reached {100 * recipe.target_accuracy:.0f}% "
              f"in 10 seeds after 373-456 s of training on 2 Intel Xeon cores with AMX and 520-641 s on 2 AMD EPYC "
              f"cores with bf16 but no AMX ({speed}); it stops after "
              f"{options.limit_for(recipe):.0f} s. A GPU or the weights students submit (--training checkpoint) "
              "grade it faster", file=sys.stderr)
    if not args.check:  # training without its data is an error, before anything is graded
        missing = missing_data(options)
        if missing:
            print(f"error: --training {options.training} needs data that is missing; nothing was graded.\n"
                  + "\n".join(missing), file=sys.stderr)
            return 2
    default = Path.cwd() if args.check and not IN_CHECKOUT else REPO / ("student_template" if args.check else "reference")
    submissions = args.submissions or [default]
    if args.check:
        status = 0
        for path in submissions:
            try:
                status = max(status, check(path, options))
            except SubmissionError as e:
                print(f"error: {path}: {e}", file=sys.stderr)
                status = 2
            except Exception as e:  # no output folder here: the traceback is for the instructor
                print(f"error: {path}: the grader failed: {type(e).__name__}: {e}; send the instructor this:\n"
                      f"{traceback.format_exc()}", file=sys.stderr)
                status = 2
        return status
    out = args.out or (REPO if IN_CHECKOUT else Path.cwd()) / "grades"
    total = rubric_total(points, args.training)
    if len(submissions) == 1 and not args.one and is_class_folder(submissions[0]):
        submissions = submission_entries(submissions[0])  # a class: one submission per entry
    elif len(submissions) == 1:
        row = grade_one(submissions[0], out / submission_name(submissions[0]), submission_name(submissions[0]),
                        options, total)
        if row.status == "undecided":
            print(UNDECIDED_NOTE.format(what="this submission"), file=sys.stderr)
        return 2 if row.status in ("unreadable", "grader-error") else 0
    if args.jobs < 1:
        print("error: --jobs must be at least 1", file=sys.stderr)
        return 2
    rows = grade_class(submissions, out, options, total, jobs=args.jobs, force=args.force)
    failed = [r for r in rows if r.status in ("unreadable", "grader-error")]
    undecided = [r.student for r in rows if r.status == "undecided"]
    print(f"{len(rows)} submissions: mean {sum(r.score for r in rows) / len(rows):.2f} / {total:g}; "
          f"{len(failed)} could not be graded; gradebook: {out / 'gradebook.csv'}, overview: {out / 'index.html'}")
    if undecided:
        print(UNDECIDED_NOTE.format(what=f"{len(undecided)} submission{'s' if len(undecided) > 1 else ''} "
                                         f"({', '.join(undecided[:5])}{', ...' if len(undecided) > 5 else ''})"))
    return 2 if failed else 0


def check_main() -> int:
    """``vitkit-check [path]``: the students' quick check (``python -m grader --check``)."""
    return main(["--check", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
