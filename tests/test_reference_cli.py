"""``python -m reference`` (results JSON and figures, nothing lost, clear errors) and ``python -m reference.bench``."""
import json
import re
import subprocess
import sys
from dataclasses import replace

import pytest

import reference.__main__ as cli
import reference.bench as bench
from conftest import REPO, make_mnist_dir
from reference.configs import RECIPES


@pytest.fixture
def quick_mnist(monkeypatch):
    # The real recipe, with a one-epoch budget: the tiny fixture data makes it a few seconds.
    recipe = RECIPES["mnist"]
    monkeypatch.setitem(RECIPES, "mnist", replace(recipe, train=replace(recipe.train, epochs=1)))


def test_writes_results_and_keeps_other_recipes(tmp_path, quick_mnist):
    data = make_mnist_dir(tmp_path / "data", 256, 64)
    out = tmp_path / "results"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"cifar10": {"final_accuracy": 0.8}}))
    assert cli.main(["--recipes", "mnist", "--data-dir", str(data), "--out", str(out), "--device", "cpu"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["cifar10"] == {"final_accuracy": 0.8}
    record = results["mnist"]
    for key in ("final_accuracy", "epochs", "seconds", "device", "torch", "git_revision", "history"):
        assert key in record
    assert record["epochs"] == 1 and record["device"].startswith("cpu")
    assert (out / "mnist_curves.png").stat().st_size > 0
    assert (out / "mnist_attention.png").stat().st_size > 0


def test_missing_data_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "reference", "--recipes", "mnist", "--data-dir", str(tmp_path),
                           "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "MNIST not found" in proc.stderr and "Traceback" not in proc.stderr


def test_bench_runs_the_seeds_it_is_given(tmp_path, quick_mnist, capsys):
    # A long bench (10 seeds of cifar10-cpu: about 2 hours on 2 cores) can be run in parts.
    data = make_mnist_dir(tmp_path / "data", 256, 64)
    argv = ["--recipes", "mnist", "--seeds", "2", "--first-seed", "3", "--data-dir", str(data), "--device", "cpu"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert re.findall(r"^\s+(\d+)\s+\d+\.\d\d\s", out, re.M) == ["3", "4"]
    assert re.search(r"in \d/2 seeds", out)


@pytest.mark.parametrize("flag, value", [("--seeds", "0"), ("--first-seed", "-1")])
def test_bench_refuses_a_seed_range_with_no_seeds(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--recipes", "mnist", flag, value, "--device", "cpu"])
    assert exit_.value.code == 2
    assert "--seeds must be 1 or more and --first-seed 0 or more" in capsys.readouterr().err
