"""A machine too busy to decide leaves checks undecided, never failed: the sandbox tells starved
work from slow or stuck work by the scheduler's own account, the grade says "undecided" in every
report, and a re-run grades just those again. Slow or stuck code still fails, however it crowds
the machine itself."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from grader import report
from grader.__main__ import main as grader_main
from grader.batch import grade_class, submission_entries
from grader.grade import UNDECIDED, GradeOptions, grade_submission, guard_verdict
from grader.sandbox import Limits, Outcome, Sandbox, starved_by
from grader.submission import stage_submission

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from conftest import real_data_dir  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[2]
SCHEDSTAT = Path(f"/proc/{os.getpid()}/schedstat").is_file()
needs_schedstat = pytest.mark.skipif(not SCHEDSTAT, reason="the kernel keeps no scheduler statistics here")


# -- telling starved from slow ---------------------------------------------------------------------

@pytest.mark.parametrize("cpu,threads,starved", [
    (None, 1, False),            # no account: no claim
    ((0.01, 0.02), 1, False),    # asleep or deadlocked: wanted no CPU
    ((9.5, 0.4), 1, False),      # slow: it had the CPU
    ((10.0, 30.0), 1, False),    # crowded by its own threads: they had the CPU it waited for
    ((1.0, 8.5), 1, True),       # kept waiting by others: starved
    ((4.0, 15.0), 2, True),      # two threads, most of their time waiting
    ((6.0, 15.0), 2, False),     # ...but with more than a quarter of their allowance, not starved
])
def test_starved_means_kept_waiting_by_others(cpu, threads, starved):
    assert bool(starved_by(cpu, 10.0, threads)) is starved


def _outcome(kind=None, cpu=(1.0, 1.0), ok=True):
    return Outcome(ok, value={}, kind=kind, cpu=cpu, error=None if ok else "x")


def _history(stop="time limit"):
    return {"stop_reason": stop, "epochs": 0.3}


def test_the_guard_ends_a_starved_run_undecided_and_a_slow_one_failed():
    assert guard_verdict(_outcome(), _history("target reached"), 700, 600, 2) is None
    assert guard_verdict(_outcome(), _history(), 100, 600, 2) is None  # said "time limit" before the guard: its own stop
    assert guard_verdict(_outcome("timeout", ok=False), None, 800, 600, 2) is None  # one step hung: a failure of its own
    undecided, why = guard_verdict(_outcome(cpu=(60.0, 1000.0)), _history(), 640, 600, 2)
    assert undecided and UNDECIDED in why
    undecided, why = guard_verdict(_outcome(cpu=(1100.0, 40.0)), _history(), 640, 600, 2)
    assert not undecided and "far more slowly" in why
    assert guard_verdict(_outcome(cpu=None), _history(), 640, 600, 2)[0]  # no account: no verdict against the student
    assert guard_verdict(_outcome("starved", cpu=(5.0, 900.0), ok=False), None, 800, 600, 2)[0]


# -- the sandbox's account, on real processes ------------------------------------------------------

@pytest.fixture
def box(tmp_path):
    sandbox = Sandbox(stage_submission(FIXTURES / "misbehave.py", tmp_path), Limits(call_seconds=3.0, import_seconds=20.0),
                      probe_paths=[FIXTURES / "probes"])
    assert sandbox.start().ok
    yield sandbox
    sandbox.close()


CALL = "sandbox_test_probes:call"


def _busy_on(cpu: int, n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"])
            for _ in range(n)]


@pytest.mark.integration
@needs_schedstat
def test_slow_or_stuck_code_times_out_however_it_crowds_itself(box):
    assert box.call(CALL, "spin").kind == "timeout"
    assert box.call(CALL, "sleep_forever").kind == "timeout"
    assert box.call(CALL, "spin_in_a_crowd", 6).kind == "timeout"
    assert box.call(CALL, "spin_beside_processes", 3).kind == "timeout"


@pytest.mark.integration
@needs_schedstat
def test_code_starved_by_other_work_is_undecided(box):
    """The worker pinned to one CPU at the lowest priority, three busy processes there at the
    normal one: it gets about 1 % of that CPU, as on a machine far busier than its share. (Where
    the kernel groups processes by session, the worker's whole group gets the lowest priority.)"""
    worker = box._child.worker_pid
    cpu = min(os.sched_getaffinity(0))
    for task in os.listdir(f"/proc/{worker}/task"):
        os.sched_setaffinity(int(task), {cpu})
        os.setpriority(os.PRIO_PROCESS, int(task), 19)
    autogroup = Path(f"/proc/{worker}/autogroup")
    if autogroup.is_file():
        autogroup.write_text("19")
    busy = _busy_on(cpu, 3)
    try:
        outcome = box.call(CALL, "spin")
    finally:
        for p in busy:
            p.kill()
            p.wait()
    assert outcome.kind == "starved", outcome.error
    assert "too busy to decide" in outcome.error and outcome.cpu[1] > outcome.cpu[0]


# -- an undecided check, through the grade, the reports and a re-run -------------------------------

@pytest.fixture
def starved_patchify(monkeypatch):
    """Every patchify request starved, as the busy machine above starves it."""
    call = Sandbox.call

    def starving(self, probe, *args, **kwargs):
        if probe.endswith(":patchify"):
            return Outcome(False, error="did not finish within 10 s, but ... the grading machine was too busy to decide",
                           kind="starved", cpu=(0.5, 9.0))
        return call(self, probe, *args, **kwargs)

    monkeypatch.setattr(Sandbox, "call", starving)


@pytest.mark.integration
def test_an_undecided_check_is_neither_passed_nor_failed_in_any_report(tmp_path, starved_patchify):
    grade = grade_submission(REPO / "reference", tmp_path / "work", GradeOptions(training="none"))
    undecided = {r.name for r in grade.undecided}
    assert {"patchify:one_channel", "patchify:three_channels"} <= undecided  # the checks that call patchify
    assert "vit:forward" in undecided  # built on patchify, which has no verdict
    assert all(r.passed for r in grade.results if r.component in ("attention", "multihead", "feedforward"))
    assert grade.status == "undecided" and grade.score < grade.max_score == 20.0
    results = report.gradescope_results(grade)
    tests = {t["name"]: t for t in results["tests"]}
    assert "status" not in tests["patchify:one_channel"] and tests["patchify:one_channel"]["extra_data"] == {"undecided": True}
    assert tests["patchify:one_channel"]["output"].startswith("**Undecided**")
    assert tests["attention:function_shapes"]["status"] == "passed"
    assert "**Not final:**" in results["output"] and results["extra_data"]["status"] == "undecided"
    assert "Not final:" in report.render_html(grade, "ref") and "?? not final" in report.summary(grade, "ref")


@pytest.mark.integration
def test_a_rerun_grades_again_only_the_undecided(tmp_path, monkeypatch):
    klass = tmp_path / "class"
    for name in ("ann", "bob"):
        (klass / name).mkdir(parents=True)
        for module in ("attention.py", "blocks.py", "vit.py"):
            (klass / name / module).write_text((REPO / "reference" / module).read_text())
    call = Sandbox.call

    def starving_bob(self, probe, *args, **kwargs):
        if probe.endswith(":patchify") and "bob" in str(self.staged.source):
            return Outcome(False, error="starved", kind="starved", cpu=(0.5, 9.0))
        return call(self, probe, *args, **kwargs)

    monkeypatch.setattr(Sandbox, "call", starving_bob)
    options = GradeOptions(training="none").resolved()
    first = grade_class(submission_entries(klass), tmp_path / "out", options, 20.0)
    assert [(r.student, r.status) for r in first] == [("ann", "ok"), ("bob", "undecided")]
    assert "undecided" in (tmp_path / "out" / "gradebook.csv").read_text()
    monkeypatch.setattr(Sandbox, "call", call)  # a quiet machine
    second = grade_class(submission_entries(klass), tmp_path / "out", options, 20.0)
    assert [(r.student, r.status, r.reused) for r in second] == [("ann", "ok", True), ("bob", "ok", False)]
    assert second[1].score == 20.0


@pytest.mark.integration
def test_the_command_line_says_what_to_do_with_an_undecided_grade(tmp_path, starved_patchify, capsys):
    assert grader_main([str(REPO / "reference"), "--out", str(tmp_path), "--training", "none"]) == 0
    said = capsys.readouterr()
    assert "undecided: the grading machine was too slow or too busy" in said.err
    assert json.loads((tmp_path / "reference" / "results.json").read_text())["extra_data"]["status"] == "undecided"


# -- the reference on a busy machine -----------------------------------------------------------------

@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(real_data_dir() is None, reason="needs the real MNIST ($VITKIT_DATA)")
def test_the_reference_gets_full_marks_with_mnist_on_a_busy_machine(tmp_path):
    """Two CPU-bound processes beside the grader on every core it has: the verdict is the one an
    idle machine gives (training takes longer, far inside the guard)."""
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        grade = grade_submission(REPO / "reference", tmp_path / "work",
                                 GradeOptions(training="mnist", data_dir=str(real_data_dir())))
    finally:
        for p in busy:
            p.kill()
            p.wait()
    assert grade.status == "ok" and grade.score == grade.max_score == 22.0, [r for r in grade.results if not r.passed]
