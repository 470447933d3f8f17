"""The Makefile's own knobs: ``VENV=`` runs the targets with an installed Python, no venv."""
import json
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")]


def make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_an_empty_venv_uses_the_given_python_and_installs_nothing():
    plan = make("-n", "bench", "VENV=", "PYTHON=python3.x", "DEVICE=cuda", "DATA_DIR=/data").stdout
    assert "bwrap" in plan  # the jail first (installed with apt where it can be), then the benches
    assert [line for line in plan.splitlines() if line.startswith("python3.x")] == ["python3.x -m reference.bench --data-dir /data --device cuda --seeds 10 --first-seed 0 ",
                                 "python3.x -m grader.bench --data-dir /data --device cuda",
                                 "python3.x -m course.bench --data-dir /data"]
    assert "pip" not in make("-n", "setup", "VENV=").stdout
    assert "pip install" in make("-n", "-B", "setup", "VENV=/nonexistent-venv").stdout  # the default path


def test_make_grade_runs_without_a_venv(tmp_path):
    proc = make("grade", "VENV=", f"PYTHON={sys.executable}", "TRAINING=none", f"OUT={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "reference" / "results.json").read_text())
    assert results["score"] == results["extra_data"]["max_score"] > 0
