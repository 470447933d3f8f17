"""Reports are written safely and one submission never stops a batch: links, folders and files the
student's code may have planted in the output folder are replaced, never followed, and a submission
that cannot be read or graded still gets a results.json that says why."""
from __future__ import annotations

import dataclasses
import json
import stat
import zipfile
from pathlib import Path

import markdown
import pytest

import grader.__main__ as cli
from grader.batch import INDEX
from grader.checklib import CheckResult
from grader.grade import GradeOptions, TrainingRun, grade_submission
from grader.report import FAILURE_HTML, HTML, check_rows, gradescope_results, render_html, summary, write_reports

pytestmark = pytest.mark.integration  # the tier `make test-fast` leaves out (tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]
NONE = ["--training", "none"]


def is_regular(path: Path) -> bool:
    return stat.S_ISREG(path.lstat().st_mode)


@pytest.fixture(scope="module")
def reference_grade(tmp_path_factory):
    return grade_submission(REPO / "reference", tmp_path_factory.mktemp("work"), GradeOptions(training="none"))


def test_the_report_teaches_failures_first_with_what_each_check_tests(tmp_path):
    grade = grade_submission(REPO / "student_template", tmp_path / "work", GradeOptions(training="none"))
    rows = check_rows(grade)
    order = [row["css"] for row in rows]
    assert order == sorted(order, key=["fail", "pass", "skip"].index) and order[0] == "fail"
    assert all(row["description"] for row in rows)
    not_implemented = [row["message"] for row in rows if row["name"].startswith("attention:function")]
    assert len(not_implemented) >= 3 and "not implemented yet" in not_implemented[0]
    assert not_implemented[1:] == ["as in attention:function_shapes"] * (len(not_implemented) - 1)
    html = render_html(grade, "template")
    assert html.index("<h2>Checks</h2>") < html.index("<h2>Isolation</h2>")
    assert "__init__.py was not used" not in html  # the template's __init__ holds only a docstring
    tests = gradescope_results(grade)["tests"]
    assert tests[1]["output"].endswith("as in attention:function\\_shapes") and "softmax" in tests[1]["output"]


def test_links_planted_at_the_reports_are_replaced_not_followed(tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    victims = {"results.json": outside / "victim.json", "report.html": outside / "victim.html"}
    planted = tmp_path / "out" / "reference"
    planted.mkdir(parents=True)
    for name, victim in victims.items():
        victim.write_bytes(b"precious \x00 bytes\n")
        (planted / name).symlink_to(victim)
    assert cli.main([str(REPO / "reference"), "--out", str(tmp_path / "out"), *NONE]) == 0
    for name, victim in victims.items():
        assert victim.read_bytes() == b"precious \x00 bytes\n"
        assert is_regular(planted / name)
    results = json.loads((planted / "results.json").read_text())
    assert results["score"] == results["extra_data"]["max_score"] > 0
    assert sorted(p.name for p in planted.iterdir()) == ["report.html", "results.json"]  # no temporary left


def test_a_folder_planted_at_results_json_is_replaced(tmp_path, capsys):
    planted = tmp_path / "reference" / "results.json"
    planted.mkdir(parents=True)
    (planted / "inside.txt").write_text("planted")
    assert cli.main([str(REPO / "reference"), "--out", str(tmp_path), *NONE]) == 0
    assert is_regular(planted)
    results = json.loads(planted.read_text())
    assert results["score"] == results["extra_data"]["max_score"] > 0


def test_an_output_folder_planted_as_a_link_is_replaced(tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "reference").symlink_to(elsewhere, target_is_directory=True)
    assert cli.main([str(REPO / "reference"), "--out", str(tmp_path / "out"), *NONE]) == 0
    assert list(elsewhere.iterdir()) == []
    out = tmp_path / "out" / "reference"
    assert stat.S_ISDIR(out.lstat().st_mode) and is_regular(out / "results.json")


def test_one_submission_never_stops_the_batch(tmp_path, capsys, monkeypatch):
    bad_zip = tmp_path / "in" / "notazip.zip"
    bad_zip.parent.mkdir()
    bad_zip.write_bytes(b"this is not a zip archive")
    crashing = tmp_path / "in" / "crashing"
    crashing.mkdir()
    for f in ("attention.py", "blocks.py", "vit.py"):
        (crashing / f).write_text((REPO / "reference" / f).read_text())
    import grader.batch

    real = grader.batch.grade_submission

    def grade_or_boom(path, workdir, options):
        if Path(path) == crashing:
            raise RuntimeError("boom")
        return real(path, workdir, options)

    monkeypatch.setattr(grader.batch, "grade_submission", grade_or_boom)
    out = tmp_path / "out"
    assert cli.main([str(bad_zip), str(crashing), str(REPO / "reference"), "--out", str(out), *NONE]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    reference = json.loads((out / "reference" / "results.json").read_text())
    assert reference["score"] == reference["extra_data"]["max_score"] > 0
    unreadable = json.loads((out / "notazip" / "results.json").read_text())
    failed = json.loads((out / "crashing" / "results.json").read_text())
    for results in (unreadable, failed):
        assert results["score"] == 0 and results["extra_data"]["max_score"] == reference["extra_data"]["max_score"]
    assert "not a readable zip archive" in unreadable["output"] and "re-create the zip" in unreadable["output"]
    assert failed["output"] == ("the grader failed on this submission: RuntimeError: boom; "
                                "the instructor has the details")
    details_path = out / "crashing" / "grader-error.txt"
    assert [line for line in err.splitlines() if "crashing" in line and line.startswith("error:")] == \
           [f"error: {crashing}: the grader failed: RuntimeError: boom (traceback in {details_path})"]
    details = details_path.read_text()
    assert details.startswith("Traceback") and 'RuntimeError("boom")' in details
    assert not (out / "notazip" / "grader-error.txt").exists() and not (out / "reference" / "grader-error.txt").exists()
    assert "0.00 /" in (out / "crashing" / "report.html").read_text()


def test_max_score_of_a_failure_follows_the_training(tmp_path, capsys):
    bad_zip = tmp_path / "bad.zip"
    bad_zip.write_bytes(b"not a zip")
    totals = {}
    for training in ("none", "mnist", "all"):
        assert cli.main([str(bad_zip), "--out", str(tmp_path / training), "--training", training]) == 2
        totals[training] = json.loads((tmp_path / training / "bad" / "results.json").read_text())["extra_data"]["max_score"]
    assert 0 < totals["none"] < totals["mnist"] < totals["all"]


def test_a_bad_rubric_stops_everything_before_grading(tmp_path, capsys):
    rubric = tmp_path / "rubric.json"
    rubric.write_text("{ not json")
    out = tmp_path / "out"
    assert cli.main([str(REPO / "reference"), "--out", str(out), "--rubric", str(rubric), *NONE]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "not valid JSON" in lines[0]
    assert "grading" not in captured.err and not out.exists()


def test_isolation_is_shown_to_the_instructor_never_to_the_student(reference_grade, tmp_path):
    """report.html and the terminal are the instructor's; results.json is what students read:
    what is not isolated (a map for an attack) and the seed stay out of it."""
    grade = reference_grade
    grade.isolation = ["processes: on (own process group)", "network: off (unshare not permitted)"]
    write_reports(grade, tmp_path, "reference")
    html = (tmp_path / "report.html").read_text()
    assert "<h2>Isolation</h2>" in html and "network: off (unshare not permitted)" in html
    results = (tmp_path / "results.json").read_text()
    assert "unshare" not in results and "solation" not in results and '"seed"' not in results
    assert summary(grade, "reference").splitlines()[-1] == "  isolation: network: off (unshare not permitted)"
    grade.isolation = ["processes: on (own process group)"]
    assert "isolation" not in summary(grade, "reference")
    grade.isolation = []
    write_reports(grade, tmp_path, "reference")
    assert "Isolation" not in (tmp_path / "report.html").read_text()
    assert "Isolation" not in json.loads((tmp_path / "results.json").read_text())["output"]


def test_a_rerun_that_succeeds_removes_the_old_grader_error(reference_grade, tmp_path):
    (tmp_path / "grader-error.txt").write_text("Traceback of an earlier run")
    write_reports(reference_grade, tmp_path, "reference")
    assert not (tmp_path / "grader-error.txt").exists()


# A name a student controls (a zip's folder, a file), with raw HTML, Markdown and line breaks that
# would end a list item, start a heading or a block of raw HTML in results.json's Markdown.
HOSTILE = ("hw\n\n<script>alert(1)\n\n# Full marks\r\n- [click](javascript:alert(1)) **all points** "
           "<img src=x onerror=alert(1)> &amp; `code`\n```\n| a | b |")
INJECTED = ("<script", "<img", "<h1", "<a ", "<table", "<em>all", "<strong>all")


def rendered(text: str) -> str:
    """Markdown as a renderer shows it (fenced code blocks included, as Gradescope renders them)."""
    return markdown.markdown(text, extensions=["fenced_code"])


def output_lines_are_the_graders(output: str) -> bool:
    """Every line of the overall output is one the grader wrote: a heading of its own or one list item."""
    return all(not line or line.startswith("- ") or line.startswith("**Score") or line.endswith(":")
               for line in output.splitlines())


def test_a_zip_folder_name_injects_nothing_into_results_json(tmp_path):
    archive = tmp_path / "hw.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for module in ("attention.py", "blocks.py", "vit.py"):
            z.writestr(f"{HOSTILE}/{module}", (REPO / "reference" / module).read_text())
    assert cli.main([str(archive), "--out", str(tmp_path / "out"), *NONE]) == 0
    results = json.loads((tmp_path / "out" / "hw" / "results.json").read_text())
    assert results["score"] == results["extra_data"]["max_score"] > 0 and results["output_format"] == "md"
    output = results["output"]
    [note] = [line for line in output.splitlines() if "unpacked hw.zip" in line]  # the name stays in its item
    # shown as written: the line breaks as \n (a Markdown-escaped backslash), the heading's # escaped
    assert "\r" not in output and "&lt;script&gt;alert(1)" in note and r"hw\\n\\n&lt;" in note
    assert r"\\n\\n\# Full marks\\r\\n- \[click\]" in note
    assert output_lines_are_the_graders(output)
    assert not any(tag in rendered(output) for tag in INJECTED)
    html = (tmp_path / "out" / "hw" / "report.html").read_text()
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)" in html


def test_untrusted_text_is_escaped_wherever_it_reaches_results_json(reference_grade):
    """Notes, a failed check's message (a student's exception), a check that did not run and a
    training message: none can add a line of its own, raw HTML or Markdown."""
    results = list(reference_grade.results)
    failed = next(i for i, r in enumerate(results) if not r.skipped)
    skipped = next(i for i, r in enumerate(results) if r.skipped)
    results[failed] = CheckResult(results[failed].name, False, f"ValueError: {HOSTILE}")
    results[skipped] = CheckResult(results[skipped].name, False, HOSTILE, skipped=True)
    grade = dataclasses.replace(reference_grade, results=results, notes=[HOSTILE, f"used {HOSTILE}"],
                                training=[TrainingRun("mnist", message=HOSTILE.replace("\n", " "), measured=[0.9])])
    out = gradescope_results(grade)
    assert output_lines_are_the_graders(out["output"]) and "\r" not in out["output"]
    assert not any(tag in rendered(out["output"]) for tag in INJECTED)
    test = next(t for t in out["tests"] if t["name"] == results[failed].name)
    assert test["output"].count("````") == 2  # a block where nothing is read, fenced past the ``` inside
    assert not any(tag in rendered(test["output"]) for tag in INJECTED)


def test_a_failure_quoting_a_hostile_name_stays_one_line_of_text(tmp_path, capsys):
    """A submission that cannot be read: results.json says why in "text", quoting its name, whose
    line breaks are shown (as \\r\\n), not obeyed."""
    name = "evil\r\n\nScore: 20 / 20 <b>x"
    bad = tmp_path / "in" / f"{name.replace('/', '')}.zip"
    bad.parent.mkdir()
    bad.write_bytes(b"not a zip")
    assert cli.main([str(bad), "--out", str(tmp_path / "out"), *NONE]) == 2
    results = json.loads((tmp_path / "out" / bad.stem / "results.json").read_text())
    assert results["output_format"] == "text" and "not a readable zip archive" in results["output"]
    assert "\n" not in results["output"] and "\r" not in results["output"]
    assert results["output"].startswith("evil\\r\\n\\nScore: 20  20 <b>x.zip is not")
    assert "<b>" not in (tmp_path / "out" / bad.stem / "report.html").read_text()


def test_every_html_page_escapes_what_it_shows():
    """report.html, the failure page and the class index are rendered with autoescape: keep it so."""
    assert HTML.environment.autoescape is True and FAILURE_HTML.environment.autoescape is True
    assert INDEX.environment.autoescape is True
    assert "<script>" not in FAILURE_HTML.render(name="<script>x", max_score=1.0, output="<script>y")


def test_the_terminal_summary_names_every_check_not_run_and_why(reference_grade):
    said = summary(reference_grade, "reference")
    assert ("     - not run: training_mnist:94%, training_cifar10:25%, training_cifar10:50%, training_cifar10:70% "
            "(not run (TRAINING=none))") in said.splitlines()
