"""The jail where the kit is deployed, not only in the checkout: the kit's wheel installed into a
fresh virtual environment, and the Gradescope bundle set up and run as root under /autograder.
In each, the report says the jail is on, and a submission that looks for the kit's files, plants
code in them, reads the data or the outputs, and prints the seed gets nothing out of it."""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from course import autograder
from course.archive import installed_torch
from course.wheel import build_wheel
from grader import jail

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import make_mnist_dir  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
KIT = ("grader", "reference", "theory", "course", "student_template")
needs_jail = pytest.mark.skipif(not jail.detect().complete, reason=f"no jail here: {jail.detect().layers[0]}")
pytestmark = [pytest.mark.slow, pytest.mark.integration, needs_jail]

# Appended to the reference's attention.py: everything it finds is printed on one line, which the
# instructor's report.html shows (the tail of the submission's output).
SNOOP = '''
import importlib.util as _util
import os as _os
import sys as _sys


def _snoop(places):
    found = []
    for name in {kit!r}:
        spec = _util.find_spec(name)
        if spec is not None and spec.origin is not None:
            found.append("package:" + name)
        for entry in _sys.path:
            target = _os.path.join(entry, name, "__init__.py")
            if _os.path.exists(target):
                found.append("file:" + target)
            try:
                with open(target, "a") as planted:
                    planted.write("\\nPLANTED = True\\n")
                found.append("planted:" + target)
            except OSError:
                pass
    for place in places:
        if _os.path.exists(place):
            found.append("visible:" + place)
    for name in ("VITKIT_GRADER_SEED", "VITKIT_DATA"):
        if name in _os.environ:
            found.append("env:" + name)
    try:
        with open("/proc/1/environ", "rb") as first:
            if b"VITKIT_GRADER_SEED" in first.read():
                found.append("seed-in-/proc/1/environ")
    except OSError:
        pass
    print("FOUND", ",".join(found) or "nothing")
    print("SEED", torch.initial_seed())


_snoop({places!r})
'''


def snooping_submission(folder: Path, places: list[str]) -> Path:
    folder.mkdir(parents=True)
    for name in ("attention.py", "blocks.py", "vit.py"):
        shutil.copy(REPO / "reference" / name, folder / name)
    with open(folder / "attention.py", "a") as f:
        f.write(SNOOP.format(kit=KIT, places=places))
    return folder


def said(report: Path) -> tuple[str, int]:
    """What the snooping code found, and the seed it saw, from the instructor's report.html."""
    text = html.unescape(report.read_text())
    found = re.findall(r"(?:^|<pre>)FOUND (.*)$", text, re.MULTILINE)
    seeds = re.findall(r"^SEED (\d+)$", text, re.MULTILINE)
    assert found and seeds, text[-3000:]
    assert "filesystem: the student&#39;s code sees only" in report.read_text() or \
        "filesystem: the student's code sees only" in text  # the report says the jail is on
    return found[0], int(seeds[0])


def install_kit(python: Path, wheel: Path) -> None:
    for spec in (installed_torch(), str(wheel)):
        done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", spec], capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]


def test_a_wheel_installed_in_a_fresh_venv_keeps_the_jail(tmp_path: Path) -> None:
    """``pip install`` puts the kit in site-packages, inside the Python installation the child needs."""
    venv.create(tmp_path / "venv", with_pip=True)
    python = tmp_path / "venv" / "bin" / "python"
    install_kit(python, build_wheel(tmp_path / "wheel"))
    site = Path(subprocess.run([str(python), "-c", "import grader, os; print(os.path.dirname(os.path.dirname(grader.__file__)))"],
                               capture_output=True, text=True, check=True, cwd=tmp_path).stdout.strip())
    assert site.is_relative_to(tmp_path / "venv")  # the installed kit, not the checkout
    before = {name: (site / name / "__init__.py").read_bytes() for name in KIT}
    data, out = make_mnist_dir(tmp_path / "data", 64, 16), tmp_path / "grades"
    places = [data / "mnist" / "t10k-labels-idx1-ubyte.gz", out, REPO / "pyproject.toml", site / "reference" / "vit.py"]
    folder = snooping_submission(tmp_path / "snoop", [str(p) for p in places])
    secret = 2**90 + 17
    env = {k: v for k, v in os.environ.items() if k not in (jail.ALLOW_ENV, "PYTHONPATH", "VITKIT_NO_JAIL")}
    done = subprocess.run([str(python), "-m", "grader", str(folder), "--training", "none", "--out", str(out),
                           "--data-dir", str(data)], cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env={**env, "VITKIT_GRADER_SEED": str(secret)})
    assert done.returncode == 0, done.stderr[-3000:]
    found, seed = said(out / "snoop" / "report.html")
    assert found == "nothing" and seed != secret and str(secret) not in found
    assert {name: (site / name / "__init__.py").read_bytes() for name in KIT} == before
    results = json.loads((out / "snoop" / "results.json").read_text())
    assert results["tests"] and "import reference" in json.dumps(results)  # graded: looking for the kit costs its points


AUTOGRADER = Path("/autograder")
OURS = ".vitkit-test"  # marks an /autograder this test made (and may remove)


@pytest.mark.skipif(os.geteuid() != 0, reason="Gradescope runs the bundle as root; so must this test")
def test_the_gradescope_bundle_run_as_root_under_autograder_keeps_the_jail(tmp_path: Path) -> None:
    if AUTOGRADER.exists() and not (AUTOGRADER / OURS).exists():
        pytest.skip("/autograder exists and is not this test's: a real Gradescope image?")
    shutil.rmtree(AUTOGRADER, ignore_errors=True)
    try:
        bundle = autograder.build(tmp_path / "dist", installed_torch(), str(make_mnist_dir(tmp_path / "data", 64, 16)))
        (AUTOGRADER / "source").mkdir(parents=True)
        (AUTOGRADER / OURS).write_text("made by tests/test_deployed.py\n")
        with zipfile.ZipFile(bundle) as zf:
            zf.extractall(AUTOGRADER / "source")
        for script in ("setup.sh", "run_autograder"):
            (AUTOGRADER / "source" / script).chmod(0o755)
        env = {k: v for k, v in os.environ.items() if k not in (jail.ALLOW_ENV, "PYTHONPATH", "VITKIT_NO_JAIL",
                                                                 "VITKIT_DATA", "VIRTUAL_ENV")}
        env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if "/.venv/" not in p)
        setup = subprocess.run(["bash", str(AUTOGRADER / "source" / "setup.sh")], capture_output=True, text=True,
                               timeout=1200, env={**env, "VITKIT_TORCH_INDEX": ""})
        assert setup.returncode == 0, setup.stdout[-2000:] + setup.stderr[-3000:]
        (AUTOGRADER / "results").mkdir()
        places = [str(AUTOGRADER / "source" / "seed"), str(AUTOGRADER / "source" / "data" / "mnist"),
                  str(AUTOGRADER / "results")]
        snooping_submission(AUTOGRADER / "submission", places)
        done = subprocess.run([str(AUTOGRADER / "source" / "run_autograder")], capture_output=True, text=True,
                              timeout=1200, env=env, cwd="/")
        assert done.returncode == 0, done.stderr[-3000:]
        results = json.loads((AUTOGRADER / "results" / "results.json").read_text())
        assert results["tests"] and "import reference" in json.dumps(results), results["output"]
        found, seed = said(AUTOGRADER / "results" / "report.html")
        secret = int((AUTOGRADER / "source" / "seed").read_text())
        assert found == "nothing" and seed != secret
        assert "FOUND" not in json.dumps(results) and str(secret) not in json.dumps(results)
    finally:
        if (AUTOGRADER / OURS).exists():
            shutil.rmtree(AUTOGRADER, ignore_errors=True)
