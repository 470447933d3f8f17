"""``python -m course.bench`` (part of ``make bench``): the Gradescope bundle's ``run_autograder``
timed on this machine, for a correct submission and for one whose attention never returns, with
MNIST training as Gradescope runs it. Prints wall seconds and the peak memory of the whole process
tree (from a control group where this machine has one), next to Gradescope's default limits.
Asserts nothing."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from course.archive import installed_torch
from course.autograder import BundleError, build
from grader import cgroups
from reference.devices import describe_device

REPO = Path(__file__).resolve().parent.parent
EXERCISES = ("attention.py", "blocks.py", "vit.py")
# Gradescope's defaults (its autograder documentation): 10 minutes, 768 MB, half a virtual CPU.
GRADESCOPE_DEFAULTS = "Gradescope's defaults: 10 min, 768 MB, 0.5 vCPU"
HANG = "    while True:  # never returns\n        pass\n"


def _submission(folder: Path, hanging: bool) -> None:
    folder.mkdir()
    for name in EXERCISES:
        shutil.copy(REPO / "reference" / name, folder / name)
    if hanging:  # the first statement of scaled_dot_product_attention's body loops forever
        path = folder / "attention.py"
        text = path.read_text()
        marker = "    # BEGIN SOLUTION hint: scores"
        path.write_text(text.replace(marker, HANG + marker, 1))


def run_once(bundle: Path, hanging: bool, training: str) -> tuple[float, int | None, str]:
    """(wall seconds, peak bytes of the tree or None, the score line) of one run_autograder."""
    with tempfile.TemporaryDirectory(prefix="vitkit-bench-") as tmp:
        root = Path(tmp)
        with zipfile.ZipFile(bundle) as zf:
            zf.extractall(root / "source")
        (root / "results").mkdir()
        _submission(root / "submission", hanging)
        env = {**os.environ, "VITKIT_AUTOGRADER_ROOT": str(root), "VITKIT_PYTHON": sys.executable,
               "VITKIT_TRAINING": training}
        command = ["bash", str(root / "source" / "run_autograder")]
        hierarchy, _ = cgroups.find()
        group = cgroups.TreeGroup(hierarchy, f"vitkit-bench-{os.getpid()}", None, None) if hierarchy else None
        try:
            start = time.perf_counter()
            subprocess.run(group.wrap(command) if group else command, env=env, capture_output=True, timeout=3600)
            seconds = time.perf_counter() - start
            peak = group.peak_bytes() if group else None
        finally:
            if group:
                group.close()
        results = json.loads((root / "results" / "results.json").read_text())
        score = f"{results['score']:g}/{results.get('extra_data', {}).get('max_score', 0):g} points"
    return seconds, peak, score


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course.bench", description=__doc__)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--training", choices=["none", "mnist"], default="mnist")
    args = parser.parse_args(argv)
    print(f"\nGradescope's run_autograder on {describe_device('cpu')} ({os.cpu_count()} cores)   [{GRADESCOPE_DEFAULTS}]")
    with tempfile.TemporaryDirectory() as dist:
        try:
            bundle = build(Path(dist), installed_torch(), args.data_dir)
        except (BundleError, RuntimeError) as e:
            print(f"  skipped: {e}")
            return 0
        for label, hanging in (("correct (reference)", False), ("attention never returns", True)):
            seconds, peak, score = run_once(bundle, hanging, args.training)
            memory = f"{peak / 2**20:.0f} MiB" if peak else "not measured (no control group here)"
            print(f"  {label:<24} training={args.training}: {seconds:6.1f} s wall, peak memory of the whole "
                  f"tree {memory}, {score}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
