"""make handout: the archive students receive is built, unpacked outside the kit, and used as a
student would: its visible tests fail with "not implemented" on the unfilled template and pass
once the exercises are done, and no line of the reference's solutions is inside. The slow tests do
it on a new machine: a virtual environment from the handout's requirements alone runs the visible
tests, both notebooks (figures as images, progress bars as widgets) and `jupyter lab`."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import nbformat
import pytest

from course import handout
from course.template import EXERCISES
from tests.conftest import (make_cifar_npz_dir, make_mnist_dir, notebook_images, notebook_outputs, notebook_text,
                            with_time_limit)

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
    write = handout.visible_checks.write

    def leaking(tests: Path) -> list[str]:  # a check that would carry a line of the solution
        names = write(tests)
        (tests / "test_leak.py").write_text("def test_x():\n    scores = scores.masked_fill(~mask, float(\"-inf\"))\n")
        return names

    monkeypatch.setattr(handout.visible_checks, "write", leaking)
    with pytest.raises(handout.HandoutError, match="solution lines"):
        handout.build(tmp_path / "dist", TORCH_SPEC)
    assert not (tmp_path / "dist" / f"{handout.ASSIGNMENT}-handout.zip").exists()


def fill_exercises(folder: Path) -> None:
    """A student who got everything right: the reference's exercise files in the handout's template."""
    for name in EXERCISES:
        shutil.copy(REPO / "reference" / name, folder / "student_template" / name)


def assert_not_implemented_then_passing(folder: Path, python: str = sys.executable) -> None:
    """The visible tests of the unpacked handout ``folder``, run with ``python``: each fails on the
    template as shipped, saying it is not implemented, and each passes once the exercises are filled."""
    unfilled = run_visible_tests(folder, python)
    assert len(unfilled) >= 15
    # each says the exercise is not done, or (a check built on another) that what it builds on failed
    assert all(outcome == "failure" and any(said in message for said in ("not implemented", "NotImplementedError", "(above)"))
               for _, outcome, message in unfilled), unfilled
    fill_exercises(folder)
    done = run_visible_tests(folder, python)
    assert [name for name, outcome, _ in done if outcome != "passed"] == []
    assert len(done) == len(unfilled)


def test_visible_tests_fail_not_implemented_then_pass_with_the_exercises_done(archive: Path, tmp_path: Path) -> None:
    assert_not_implemented_then_passing(unpack(archive, tmp_path))


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


# As a student on a new machine: a virtual environment made from the handout's own requirements
# (nothing of the kit's environment), the visible tests, then the notebooks. One environment for
# all of it (about a minute of installing); the notebooks' requirements are added to it after the
# tests of requirements.txt alone, which come first in this file.
WIDGET = "application/vnd.jupyter.widget-view+json"  # how Jupyter saves a displayed ipywidget


def pip_install(venv: Path, requirements: Path) -> None:
    """``pip install -r requirements`` with ``venv``'s own pip; skips where no package index answers."""
    install = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r", requirements.name],
                             cwd=requirements.parent, capture_output=True, text=True, timeout=1200, check=False)
    if install.returncode != 0 and "No matching distribution" in install.stderr:
        pytest.skip(f"no package index reachable here: {install.stderr.strip().splitlines()[-1]}")
    assert install.returncode == 0, install.stderr[-2000:]


@pytest.fixture(scope="module")
def student_venv(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the handout's requirements.txt installed, and nothing else."""
    where = tmp_path_factory.mktemp("student")
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip_install(venv, unpack(archive, where) / "requirements.txt")
    return venv


@pytest.fixture(scope="module")
def notebook_venv(student_venv: Path, archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same environment once requirements-notebooks.txt is installed too, as the README says."""
    pip_install(student_venv, unpack(archive, tmp_path_factory.mktemp("student-notebooks")) / "requirements-notebooks.txt")
    return student_venv


def student_env(venv: Path, home: Path, **extra: str) -> dict[str, str]:
    """The environment of a student who activated ``venv``: nothing of the kit's Python
    (PYTHONPATH, its virtual environment) and Jupyter's per-user folders new and empty, so that no
    kernel or setting of this machine's user takes part."""
    kit = ("PYTHONPATH", "PYTHONHOME", "PYTEST_ADDOPTS", "VIRTUAL_ENV", "JUPYTER_PATH", "JUPYTER_CONFIG_PATH", "MPLBACKEND")
    env = {k: v for k, v in os.environ.items() if k not in kit}
    env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
               JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_DATA_DIR=str(home / "data"),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"), IPYTHONDIR=str(home / "ipython"), **extra)
    return env


def execute_in(venv: Path, notebook: Path, env: dict[str, str], time_limit: float | None = None) -> nbformat.NotebookNode:
    """``notebook`` run top to bottom by ``jupyter nbconvert --execute`` from ``venv``, in its own
    folder; returns the executed notebook. A last cell added here prints the kernel's
    ``sys.prefix``: the kernel must be ``venv``'s python too."""
    nb = nbformat.read(notebook, as_version=4)
    if time_limit is not None:
        with_time_limit(nb, time_limit)
    nb.cells.append(nbformat.v4.new_code_cell("import pathlib, sys\nprint('kernel:', pathlib.Path(sys.prefix).resolve())"))
    nbformat.write(nb, notebook)
    out = notebook.parent.parent / "executed"
    ran = subprocess.run([str(venv / "bin" / "jupyter"), "nbconvert", "--to", "notebook", "--execute",
                          "--ExecutePreprocessor.timeout=300", "--output-dir", str(out), notebook.name],
                         cwd=notebook.parent, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert ran.returncode == 0, ran.stderr[-3000:]
    executed = nbformat.read(out / notebook.name, as_version=4)
    assert not [o for o in notebook_outputs(executed) if o["output_type"] == "error"]
    assert f"kernel: {venv.resolve()}\n" in notebook_text(executed)
    return executed


@pytest.mark.slow
def test_a_fresh_environment_from_the_handouts_requirements_runs_its_tests(archive: Path, student_venv: Path, tmp_path: Path) -> None:
    assert_not_implemented_then_passing(unpack(archive, tmp_path), str(student_venv / "bin" / "python"))


@pytest.mark.slow
def test_the_notebooks_run_in_that_environment_with_their_figures_and_progress_widgets(
        archive: Path, notebook_venv: Path, tmp_path: Path) -> None:
    folder = unpack(archive, tmp_path)
    fill_exercises(folder)
    data = make_cifar_npz_dir(make_mnist_dir(tmp_path / "data"))
    env = student_env(notebook_venv, tmp_path / "home", VITKIT_DATA=str(data))

    attention = execute_in(notebook_venv, folder / "student_template" / "attention.ipynb", env)
    assert "all tests pass" in notebook_text(attention)
    assert notebook_images(attention) == 1

    vit = execute_in(notebook_venv, folder / "student_template" / "vision_transformer.ipynb", env, time_limit=3)
    assert notebook_text(vit).count("test accuracy:") == 2
    assert notebook_images(vit) == 4  # two loss curves, two attention maps
    training = [cell for cell in vit.cells if cell.cell_type == "code" and "training.train(" in cell.source]
    assert len(training) == 2
    for cell in training:  # ipywidgets installed: tqdm draws a widget, not lines of text in the saved notebook
        assert any(WIDGET in o.get("data", {}) for o in cell.outputs), cell.outputs
        printed = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
        assert "%|" not in printed and "IProgress" not in printed, printed


@pytest.mark.slow
def test_jupyter_lab_starts_from_the_notebook_requirements(archive: Path, notebook_venv: Path, tmp_path: Path) -> None:
    """The README's `jupyter lab student_template/`: the server lists the notebooks, offers the
    environment's Python kernel, and its page loads the widgets' extension (progress bars render)."""
    folder = unpack(archive, tmp_path)
    with socket.socket() as s:  # a free port on loopback
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    as_root = ["--allow-root"] if os.geteuid() == 0 else []  # CI runs as root; a student does not
    log = tmp_path / "lab.log"
    with log.open("w") as sink:
        lab = subprocess.Popen([str(notebook_venv / "bin" / "jupyter"), "lab", "--no-browser", "--ip=127.0.0.1",
                                f"--port={port}", "--IdentityProvider.token=", *as_root, "student_template/"],
                               cwd=folder, env=student_env(notebook_venv, tmp_path / "home"), stdout=sink, stderr=sink)
    try:
        def get(path: str) -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
                return response.read().decode()

        deadline = time.monotonic() + 120
        while True:
            try:
                kernels = json.loads(get("/api/kernelspecs"))
                break
            except OSError:
                assert lab.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
        assert kernels["default"] == "python3" and "python3" in kernels["kernelspecs"]
        listed = {item["name"] for item in json.loads(get("/api/contents/"))["content"]}
        assert {"attention.ipynb", "vision_transformer.ipynb", "attention.py"} <= listed
        assert "@jupyter-widgets/jupyterlab-manager" in get("/lab")
    finally:
        lab.terminate()
        try:
            lab.wait(timeout=30)
        except subprocess.TimeoutExpired:
            lab.kill()
            lab.wait()


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
    import re

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
    local = {"student_template", "tests", "conftest", "vitchecks"}
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m not in local}

    def names(text: str) -> set[str]:
        return {re.split(r"[<>=!~\[ ]", line.strip())[0].lower() for line in text.splitlines()
                if line.strip() and not line.startswith("-r")}

    required = names(zf_read(archive, "requirements.txt"))
    assert third_party - required - set(handout.OPTIONAL_IMPORTS) == set(), third_party
    assert {"tqdm"} <= required and "ipywidgets" in names(zf_read(archive, "requirements-notebooks.txt"))
