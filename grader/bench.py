"""``python -m grader.bench`` (part of ``make bench``): how long grading takes on this machine.
Prints figures with the device; asserts nothing. Targets from the project's issues:
all non-training checks of a correct submission in <= 5 s on 2 CPU cores from a cold start (a
fresh ``python -m grader`` process, the jail included); a correct submission graded end to end
(all checks, MNIST 94 %, CIFAR-10 70 %) in <= 60 s on one H100.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from grader.grade import GradeOptions, grade_submission
from reference.devices import describe_device, device_argument
from reference.training import resolve_device

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader.bench", description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--training", choices=["none", "mnist", "all"], default=None,
                        help="also grade end to end with training (default: all on a GPU, none on a CPU)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--device", default="auto", type=device_argument)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    print(f"\ngrader on {describe_device(device)}, torch {torch.__version__}")

    from grader import jail

    isolation = jail.detect()
    layers = [name for name, on in (("bubblewrap namespaces", isolation.bwrap), ("a control group per child", isolation.tree)) if on]
    print("  isolation: " + (" + ".join(layers) or "none (see the report's isolation lines)"))
    cold = []
    for _ in range(args.repeats):  # a fresh process each time: interpreter, torch, jail detection, child
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "grader", str(REPO / "reference"), "--training", "none", "--out", out],
                           check=True, capture_output=True, cwd=REPO)
            cold.append(time.perf_counter() - start)
    print(f"  non-training checks of reference/, cold (a fresh python -m grader): seconds min/median/max "
          f"{min(cold):.2f}/{statistics.median(cold):.2f}/{max(cold):.2f}   (target: <= 5 s on 2 CPU cores)")
    seconds = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as work:
            start = time.perf_counter()
            grade = grade_submission(REPO / "reference", Path(work), GradeOptions(training="none"))
            seconds.append(time.perf_counter() - start)
    print(f"  non-training checks of reference/, in one process: {grade.score:g}/{grade.max_score:g} points; seconds "
          f"min/median/max {min(seconds):.2f}/{statistics.median(seconds):.2f}/{max(seconds):.2f}")

    training = args.training or ("all" if device.type == "cuda" else "none")
    if training == "none":
        print("  end to end with training: skipped on the CPU (pass --training mnist or all)")
        return 0
    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        grade = grade_submission(REPO / "reference", Path(work),
                                 GradeOptions(training=training, device=str(device), data_dir=args.data_dir))
        total = time.perf_counter() - start
    print(f"  end to end (training={training}): {grade.score:g}/{grade.max_score:g} points in {total:.1f} s"
          f"   (target: <= 60 s on one H100)")
    for run in grade.training:
        print(f"    {run.recipe}: {run.message}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
