"""make autograder: the Gradescope bundle, unpacked into a folder laid out like /autograder, and
its run_autograder run on what students really upload. Every run writes a results.json that is
valid against the schema written from Gradescope's specification."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from course import autograder

pytestmark = pytest.mark.integration  # the tier `make test-fast` leaves out (tests/conftest.py)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import check_gradescope_results, make_cifar_npz_dir, make_mnist_dir  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
EXERCISES = ("attention.py", "blocks.py", "vit.py")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = make_mnist_dir(tmp_path_factory.mktemp("data"), 64, 16)
    return autograder.build(tmp_path_factory.mktemp("dist"), "torch==2.13.0", str(data))


def autograder_root(bundle: Path, where: Path) -> Path:
    """A folder laid out as Gradescope's /autograder: source/ (the bundle), submission/, results/."""
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(where / "source")
    for script in ("setup.sh", "run_autograder"):
        (where / "source" / script).chmod(0o755)  # Gradescope keeps the modes; extractall does not
    (where / "submission").mkdir()
    (where / "results").mkdir()
    return where


def run_autograder(root: Path, python: str = sys.executable, training: str | None = "none") -> dict:
    """Run the bundle's run_autograder; ``training`` None keeps the bundle's own choice."""
    env = {**os.environ, "VITKIT_AUTOGRADER_ROOT": str(root), "VITKIT_PYTHON": python}
    env.pop("VITKIT_TRAINING", None)
    if training is not None:
        env["VITKIT_TRAINING"] = training
    done = subprocess.run([str(root / "source" / "run_autograder")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return check_gradescope_results(json.loads((root / "results" / "results.json").read_text()))


def test_the_bundle_is_in_gradescopes_layout(bundle: Path) -> None:
    with zipfile.ZipFile(bundle) as zf:
        names = set(zf.namelist())
        modes = {n: zf.getinfo(n).external_attr >> 16 for n in ("setup.sh", "run_autograder")}
    assert {"setup.sh", "run_autograder", "seed"} <= names  # at the root, not in a folder
    assert all(mode & 0o111 for mode in modes.values())
    assert sorted(n for n in names if n.startswith("data/mnist/")) == [
        "data/mnist/t10k-images-idx3-ubyte.gz", "data/mnist/t10k-labels-idx1-ubyte.gz",
        "data/mnist/train-images-idx3-ubyte.gz", "data/mnist/train-labels-idx1-ubyte.gz"]
    assert [n for n in names if n.startswith("wheels/") and n.endswith(".whl")]
    with zipfile.ZipFile(bundle) as zf:
        setup = zf.read("setup.sh").decode()
    assert setup.splitlines()[3] == "set -euo pipefail" and "/dev/null 2>&1 ||" not in setup and "|| true" not in setup
    assert 'torch_index="${VITKIT_TORCH_INDEX-}"' in setup and "https://" not in setup  # no host but the standard index
    assert '--find-links wheels ${torch_index:+--index-url "$torch_index"} "torch==2.13.0"' in setup


def test_setup_stops_and_shows_why_when_a_step_fails(bundle: Path, tmp_path: Path) -> None:
    """No bubblewrap, and apt cannot install it: the build of the image fails, saying apt's error."""
    with zipfile.ZipFile(bundle) as zf:
        setup = zf.read("setup.sh").decode().replace("/autograder", str(tmp_path / "autograder"))
    (tmp_path / "autograder" / "source").mkdir(parents=True)
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "python3").symlink_to(shutil.which("python3"))
    (tools / "apt-get").write_text("#!/bin/sh\necho 'E: Unable to locate package bubblewrap' >&2\nexit 100\n")
    (tools / "apt-get").chmod(0o755)
    done = subprocess.run([shutil.which("bash"), "-c", setup], env={"PATH": str(tools)}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 100 and "Unable to locate package bubblewrap" in done.stderr
    assert not (tmp_path / "autograder" / "venv").exists()  # nothing after the failed step


def test_the_bundle_carries_a_torch_wheel_or_names_another_index(tmp_path: Path) -> None:
    data = str(make_mnist_dir(tmp_path / "data", 64, 16))
    wheel = tmp_path / "torch-2.13.0-cp311-cp311-linux_x86_64.whl"
    wheel.write_bytes(b"a wheel")
    root = autograder.stage(tmp_path / "a", "torch==2.13.0", data, torch_wheel=wheel)
    assert (root / "wheels" / wheel.name).read_bytes() == b"a wheel"
    cpu = "https://download.pytorch.org/whl/cpu"
    root = autograder.stage(tmp_path / "b", "torch==2.13.0", data, torch_index=cpu)
    assert f'torch_index="${{VITKIT_TORCH_INDEX-{cpu}}}"' in (root / "setup.sh").read_text()
    with pytest.raises(autograder.BundleError, match="is not a torch wheel"):
        autograder.stage(tmp_path / "c", "torch==2.13.0", data, torch_wheel=tmp_path / "numpy.whl")


def submit_reference(folder: Path) -> None:
    for name in EXERCISES:
        shutil.copy(REPO / "reference" / name, folder / name)


def zipped_folder(folder: Path) -> None:
    """A student who zipped their whole folder: Gradescope stores the zip as uploaded."""
    with zipfile.ZipFile(folder / "homework.zip", "w") as zf:
        for name in EXERCISES:
            zf.write(REPO / "reference" / name, f"student_template/{name}")


def nested_folder(folder: Path) -> None:
    (folder / "my-homework" / "student_template").mkdir(parents=True)
    submit_reference(folder / "my-homework" / "student_template")


ALTERNATIVE = REPO / "tests" / "grader" / "fixtures" / "alternative" / "solution.py"  # one file, written differently


def one_py_file(folder: Path) -> None:
    shutil.copy(ALTERNATIVE, folder / "homework.py")


def one_notebook(folder: Path) -> None:
    from nbformat import write
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    notebook = new_notebook(cells=[new_markdown_cell("# My homework"), new_code_cell(ALTERNATIVE.read_text())])
    write(notebook, str(folder / "homework.ipynb"))


def broken(folder: Path) -> None:
    submit_reference(folder)
    path = folder / "attention.py"
    path.write_text(path.read_text().replace("/ math.sqrt(q.size(-1))", ""))  # the scale forgotten


@pytest.mark.parametrize("upload", [submit_reference, zipped_folder, nested_folder, one_py_file, one_notebook],
                         ids=["loose files", "a zip", "nested", "one .py", "one notebook"])
def test_a_correct_submission_gets_full_marks_however_it_is_uploaded(bundle: Path, tmp_path: Path, upload) -> None:
    root = autograder_root(bundle, tmp_path)
    upload(root / "submission")
    results = run_autograder(root)
    assert results["score"] == results["extra_data"]["max_score"] > 0, results["output"]


def test_a_broken_submission_loses_points_with_the_reason(bundle: Path, tmp_path: Path) -> None:
    root = autograder_root(bundle, tmp_path)
    broken(root / "submission")
    results = run_autograder(root)
    failed = [t for t in results["tests"] if t["status"] == "failed"]
    assert 0 < results["score"] < results["extra_data"]["max_score"] and any(t["name"].startswith("attention:") for t in failed)


@pytest.mark.parametrize("name,content,says", [
    ("homework.zip", b"\x00garbage, not a zip" * 10, "zip"),
    ("vision_transformer.ipynb", b"{ this is not json", "notebook"),
    ("notes.txt", b"I did not finish", ".py"),
])
def test_an_unreadable_upload_gets_zero_and_a_message_it_can_act_on(bundle: Path, tmp_path: Path, name: str,
                                                                     content: bytes, says: str) -> None:
    root = autograder_root(bundle, tmp_path)
    (root / "submission" / name).write_bytes(content)
    results = run_autograder(root)
    assert results["score"] == 0 and results["tests"] == [] and says in results["output"], results["output"]


def test_an_empty_upload_gets_zero_and_what_to_upload(bundle: Path, tmp_path: Path) -> None:
    root = autograder_root(bundle, tmp_path)
    results = run_autograder(root)
    assert results["score"] == 0 and "nothing was uploaded" in results["output"]


def test_an_autograder_that_cannot_start_still_writes_results(bundle: Path, tmp_path: Path) -> None:
    root = autograder_root(bundle, tmp_path)
    submit_reference(root / "submission")
    results = run_autograder(root, python=str(tmp_path / "no-such-python"))
    assert results["score"] == 0 and "failed to start" in results["output"]


def test_without_mnist_the_bundle_is_refused_with_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(autograder.BundleError, match="DATA_DIR"):
        autograder.build(tmp_path / "dist", "torch==2.13.0", str(tmp_path / "nothing"))
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").iterdir())


def test_a_bundle_for_submitted_weights_grades_cifar10_on_the_cpu(tmp_path: Path) -> None:
    """TRAINING=checkpoint: CIFAR-10 (its test split and a training sample) travels in the bundle,
    and the weights a student submits are measured there, for both recipes."""
    import torch

    from reference.configs import get_recipe

    data = make_cifar_npz_dir(make_mnist_dir(tmp_path / "data", 64, 16), n_train=96, n_test=32)
    bundle = autograder.build(tmp_path / "dist", "torch==2.13.0", str(data), training="checkpoint")
    with zipfile.ZipFile(bundle) as zf:
        assert {"data/cifar10/train.npz", "data/cifar10/test.npz"} <= set(zf.namelist())
        assert '--training "${VITKIT_TRAINING:-checkpoint}"' in zf.read("run_autograder").decode()
    root = autograder_root(bundle, tmp_path / "gradescope")
    submit_reference(root / "submission")
    for recipe in ("mnist", "cifar10"):
        torch.manual_seed(0)
        torch.save(get_recipe(recipe).model.build().state_dict(), root / "submission" / f"{recipe}.pt")
    results = run_autograder(root, training=None)
    assert "measured by the grader from cifar10.pt" in results["output"], results["output"]
    assert "measured by the grader from mnist.pt" in results["output"]


def test_a_bundle_for_submitted_weights_needs_cifar10(tmp_path: Path) -> None:
    data = make_mnist_dir(tmp_path / "data", 64, 16)
    with pytest.raises(autograder.BundleError, match="grading submitted weights needs CIFAR-10"):
        autograder.build(tmp_path / "dist", "torch==2.13.0", str(data), training="checkpoint")


def test_a_bundle_grades_without_the_jail_only_when_the_instructor_said_so(bundle: Path, tmp_path: Path) -> None:
    """Where the container cannot run the jail every submission reads that the autograder is
    misconfigured; a bundle built with --allow-unisolated grades there."""
    root = autograder_root(bundle, tmp_path / "strict")
    submit_reference(root / "submission")
    env = {k: v for k, v in os.environ.items() if k != "VITKIT_ALLOW_UNISOLATED"}
    env.update(VITKIT_AUTOGRADER_ROOT=str(root), VITKIT_PYTHON=sys.executable, VITKIT_TRAINING="none", VITKIT_NO_JAIL="1")
    subprocess.run([str(root / "source" / "run_autograder")], env=env, capture_output=True, timeout=600, check=True)
    results = json.loads((root / "results" / "results.json").read_text())
    assert results["score"] == 0 and "misconfigured" in results["output"] and "not your fault" in results["output"]
    data = make_mnist_dir(tmp_path / "data", 64, 16)
    waived = autograder.build(tmp_path / "dist", "torch==2.13.0", str(data), allow_unisolated=True)
    root = autograder_root(waived, tmp_path / "waived")
    submit_reference(root / "submission")
    env["VITKIT_AUTOGRADER_ROOT"] = str(root)
    subprocess.run([str(root / "source" / "run_autograder")], env=env, capture_output=True, timeout=600, check=True)
    results = check_gradescope_results(json.loads((root / "results" / "results.json").read_text()))
    assert results["score"] == results["extra_data"]["max_score"] > 0, results["output"]
