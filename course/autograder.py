"""``python -m course.autograder`` (``make autograder``): ``dist/<assignment>-autograder.zip`` in
Gradescope's layout, ready to upload as the assignment's autograder.

At the archive's root (Gradescope unpacks it into ``/autograder/source``):

- ``setup.sh``: run once as root when Gradescope builds the image, stopping on any error:
  bubblewrap (the jail), a virtual environment in ``/autograder/venv``, the pinned torch (from a
  wheel the bundle carries, else the standard package index or the one the instructor named), and
  the kit from its wheel (not editable);
- ``run_autograder``: grades ``/autograder/submission`` into ``/autograder/results/results.json``
  (``python -m grader.gradescope``), always writing results.json;
- ``wheels/``: the kit's wheel, built now from this checkout (and torch's, with ``--torch-wheel``);
- ``data/mnist/``: the four MNIST files, taken from the data directory now, checked by loading them;
- with ``--training checkpoint`` (the students submit the weights they trained, so that
  Gradescope's CPUs can grade CIFAR-10): ``data/cifar10/{train,test}.npz``, the test split and
  the training images the weights are compared on (``grader.grade.TRAIN_SAMPLE``);
- ``seed``: the deployment's secret seed (128 bits), drawn now; the grader derives every seed it
  uses from it one way (``grader.seeds``), so no child ever sees it.
"""
from __future__ import annotations

import argparse
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

from course.archive import assignment_name, installed_torch, write_zip
from course.handout import ASSIGNMENT
from grader.course import COURSE_FILE, GRADESCOPE_DEFAULT_MINUTES, Course, read_course
from grader.rubric import RubricError
from course.wheel import REPO, build_wheel
import numpy as np

from grader.grade import TRAIN_SAMPLE
from reference.data import DataFormatError, DataNotFoundError, load_dataset, load_mnist, mnist_files

SETUP_SH = """#!/usr/bin/env bash
# Run once by Gradescope, as root, when it builds the autograder image. Every step shows what it
# says, and a failure stops the build: an image without the jail or torch would grade nobody.
set -euo pipefail
cd /autograder/source
if ! command -v bwrap >/dev/null || ! python3 -c "import ensurepip" 2>/dev/null; then
    apt-get update
    apt-get install -y --no-install-recommends bubblewrap python3-venv
fi
python3 -m venv /autograder/venv
/autograder/venv/bin/pip install --upgrade pip
# torch: the wheel in wheels/ when the bundle carries one (make autograder TORCH_WHEEL=...), else
# {torch_source} (VITKIT_TORCH_INDEX names another index; empty: pip's own configuration)
torch_index="${{VITKIT_TORCH_INDEX-{torch_index}}}"
/autograder/venv/bin/pip install --find-links wheels ${{torch_index:+--index-url "$torch_index"}} "{torch_spec}"
/autograder/venv/bin/pip install wheels/vit_homework_kit-*.whl
/autograder/venv/bin/python -c "import grader, torch; print('kit and torch', torch.__version__, 'installed')"
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Run by Gradescope for every submission. ROOT and PYTHON can be changed to try it elsewhere.
ROOT="${{VITKIT_AUTOGRADER_ROOT:-/autograder}}"
PYTHON="${{VITKIT_PYTHON:-/autograder/venv/bin/python}}"
export VITKIT_GRADER_SEED="$(cat "$ROOT/source/seed")"
{waiver}cd "$ROOT"
# the course file (source/course.toml) sets points, visibility and the training guard ({guard:.0f} s: its
# share of Gradescope's timeout of {minutes:g} min); VITKIT_TIME_LIMIT overrides the guard
"$PYTHON" -m grader.gradescope --root "$ROOT" --training "${{VITKIT_TRAINING:-{training}}}" --device cpu \\
    ${{VITKIT_TIME_LIMIT:+--time-limit "$VITKIT_TIME_LIMIT"}}
status=$?
if [ ! -s "$ROOT/results/results.json" ]; then  # the grader could not even start: still a result
    mkdir -p "$ROOT/results"
    printf '%s\\n' '{{"score": 0, "output": "The autograder failed to start (exit '"$status"'); your instructor has the log.", "tests": []}}' \\
        > "$ROOT/results/results.json"
fi
exit 0
"""


BUNDLE_TRAINING = ("mnist", "none", "checkpoint")  # what Gradescope's CPUs can grade within its timeout


class BundleError(ValueError):
    """The bundle cannot be built (no data, a bad name); the message says what to do."""


# Written into run_autograder by --allow-unisolated: grade even where Gradescope's container cannot
# run the jail (the student's code then runs as root, with the grader's rights; README, Isolation).
WAIVER = ("# the instructor accepted grading without the jail (make autograder ALLOW_UNISOLATED=1)\n"
          "export VITKIT_ALLOW_UNISOLATED=1\n")


def stage(root: Path, torch_spec: str, data_dir: str | None, training: str | None = None,
          allow_unisolated: bool = False, torch_index: str = "", torch_wheel: Path | None = None,
          course: Path | None = None) -> Path:
    """Lay the bundle out in ``root`` (the future /autograder/source) and return it. ``setup.sh``
    takes torch from ``torch_wheel`` (carried in ``wheels/``), else from ``torch_index`` (empty:
    the standard package index, PyPI), and nothing from any other host. The ``course`` file goes
    in as ``course.toml``; ``training`` (default: the course's, else mnist) is baked in."""
    try:
        settings = read_course(course) if course is not None else Course()
    except RubricError as e:
        raise BundleError(str(e)) from None
    training = training or settings.training or "mnist"
    if training not in BUNDLE_TRAINING:
        raise BundleError(f"training = {training!r} cannot run on Gradescope's CPUs: choose one of "
                          f"{', '.join(BUNDLE_TRAINING)} (checkpoint grades the weights students train)")
    if torch_wheel is not None and not (torch_wheel.is_file() and torch_wheel.name.startswith("torch-")
                                        and torch_wheel.suffix == ".whl"):
        raise BundleError(f"{torch_wheel} is not a torch wheel (torch-<version>-...whl): give the file pip "
                          "would install on Gradescope's image (Linux x86_64, its Python)")
    try:
        files = mnist_files(data_dir)
        load_mnist(data_dir)  # the files are whole and readable, now rather than on every submission
    except (DataNotFoundError, DataFormatError) as e:
        raise BundleError(f"the bundle needs MNIST (training is graded on it): {str(e).splitlines()[0]} "
                          "Set DATA_DIR (make autograder DATA_DIR=...).") from None
    (root / "data" / "mnist").mkdir(parents=True)
    for path in files.values():
        shutil.copyfile(path, root / "data" / "mnist" / path.name)
    if training == "checkpoint":
        _bundle_cifar10(root / "data" / "cifar10", data_dir)
    build_wheel(root / "wheels")
    if torch_wheel is not None:
        shutil.copyfile(torch_wheel, root / "wheels" / torch_wheel.name)
    source = f"the index {torch_index}" if torch_index else "the standard package index (PyPI)"
    (root / "setup.sh").write_text(SETUP_SH.format(torch_spec=torch_spec, torch_index=torch_index, torch_source=source))
    if course is not None:
        shutil.copyfile(course, root / COURSE_FILE)
    minutes = settings.gradescope_timeout_minutes or GRADESCOPE_DEFAULT_MINUTES
    (root / "run_autograder").write_text(RUN_AUTOGRADER.format(training=training, guard=settings.gradescope_guard,
                                                               minutes=minutes,
                                                               waiver=WAIVER if allow_unisolated else ""))
    (root / "seed").write_text(f"{secrets.randbits(128)}\n")
    for script in ("setup.sh", "run_autograder"):
        (root / script).chmod(0o755)
    return root


def _bundle_cifar10(folder: Path, data_dir: str | None) -> None:
    """CIFAR-10's test split and the first TRAIN_SAMPLE training images, as .npz (N, 32, 32, 3)."""
    try:
        cifar = load_dataset("cifar10", data_dir)
    except (DataNotFoundError, DataFormatError) as e:
        raise BundleError(f"grading submitted weights needs CIFAR-10: {str(e).splitlines()[0]} "
                          "Set DATA_DIR (make autograder DATA_DIR=...).") from None
    folder.mkdir(parents=True)
    for name, images, labels in (("train", cifar.train_images[:TRAIN_SAMPLE], cifar.train_labels[:TRAIN_SAMPLE]),
                                 ("test", cifar.test_images, cifar.test_labels)):
        np.savez_compressed(folder / f"{name}.npz", images=images.permute(0, 2, 3, 1).numpy(),
                            labels=labels.numpy().astype(np.uint8))


def build(dist: Path, torch_spec: str, data_dir: str | None, assignment: str = ASSIGNMENT, training: str | None = None,
          allow_unisolated: bool = False, torch_index: str = "", torch_wheel: Path | None = None,
          course: Path | None = None) -> Path:
    """Write ``dist/<assignment>-autograder.zip`` and return its path."""
    with tempfile.TemporaryDirectory(prefix="vitkit-autograder-") as tmp:
        root = stage(Path(tmp), torch_spec, data_dir, training, allow_unisolated, torch_index, torch_wheel, course)
        write_zip(dist / f"{assignment}-autograder.zip", root, root)  # files at the zip's root, as Gradescope wants
    return dist / f"{assignment}-autograder.zip"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course.autograder", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dist", type=Path, default=REPO / "dist", help="where the zip goes (default dist/)")
    parser.add_argument("--torch-spec", default=installed_torch(), help="the torch the image installs (default: the installed version; make: TORCH_SPEC)")
    parser.add_argument("--data-dir", default=None, help="where MNIST is (default: $VITKIT_DATA, else ./data)")
    parser.add_argument("--assignment", default=ASSIGNMENT, type=assignment_name, help="the archive's name")
    parser.add_argument("--training", choices=BUNDLE_TRAINING, default=None,
                        help="mnist: train each submission's ViT on MNIST; checkpoint: grade the weights "
                             "students submit (mnist.pt, cifar10.pt), CIFAR-10 included; none: no training points "
                             "(default: the course file's, else mnist)")
    parser.add_argument("--course", type=Path, default=None, help="the course file the bundle grades with "
                                                                  "(make passes the kit's course.toml)")
    parser.add_argument("--allow-unisolated", action="store_true",
                        help="grade even where the container cannot run the jail (otherwise every submission gets "
                             "'the autograder is misconfigured'): the student's code then runs as root")
    parser.add_argument("--torch-index", default="", help="the package index setup.sh takes torch from (default: "
                        "the standard one, PyPI, whose Linux torch brings CUDA libraries; "
                        "https://download.pytorch.org/whl/cpu is PyTorch's CPU-only index)")
    parser.add_argument("--torch-wheel", type=Path, default=None,
                        help="a torch wheel the bundle carries, so that setup.sh downloads no torch")
    args = parser.parse_args(argv)
    print("building the autograder bundle (the kit's wheel takes a few seconds) ...", file=sys.stderr, flush=True)
    try:
        archive = build(args.dist, args.torch_spec, args.data_dir, args.assignment, args.training, args.allow_unisolated,
                        args.torch_index, args.torch_wheel, args.course)
    except (BundleError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {archive} ({archive.stat().st_size / 2**20:.1f} MiB): upload it as the assignment's autograder "
          "(Gradescope: Configure Autograder -> Zip file upload)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
