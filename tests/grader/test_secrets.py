"""The child learns nothing secret: not the deployment's seed (only seeds derived from it, one way,
reach a child), not a file the parent can read (tracebacks quote the parent's own copy of the
student's files, by validated name), and the grader refuses to grade where it cannot jail the
child. Each defence is tested with a hostile submission or a machine written for it."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from grader import jail, sandbox
from grader.__main__ import main as grader_main
from grader.batch import MISCONFIGURED
from grader.grade import GradeOptions, grade_submission
from grader.gradescope import main as gradescope_main
from grader.sandbox import PROBES, Limits, Sandbox
from grader.seeds import derive_seed
from grader.submission import SubmissionError, stage_submission

pytestmark = pytest.mark.integration  # the tier `make test-fast` leaves out (tests/conftest.py)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_hostile import needs_jail, submission  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import make_mnist_dir  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SECRET = 2**100 + 424242  # larger than any torch seed: a path that used it as one would fail loudly


def _contains(value: object, needle: int) -> bool:
    """Whether ``needle`` appears in a message: as a number, or as digits in any text or bytes."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value == needle
    if isinstance(value, (str, bytes)):
        return str(needle).encode() in (value if isinstance(value, bytes) else value.encode())
    if isinstance(value, dict):
        return any(_contains(k, needle) or _contains(v, needle) for k, v in value.items())
    if isinstance(value, (list, tuple, set)):
        return any(_contains(v, needle) for v in value)
    return False


PRINT_SEED = '''
print("SEED", torch.initial_seed())
'''


def test_no_request_carries_the_deployment_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every message the parent sends a child, training included, is searched for the secret."""
    sent: list[object] = []
    real = sandbox.encode

    def spy(message: object) -> bytes:
        sent.append(message)
        return real(message)

    monkeypatch.setattr(sandbox, "encode", spy)
    data = make_mnist_dir(tmp_path / "data", 128, 32)
    folder = submission(tmp_path, "seed", append={"attention.py": PRINT_SEED})
    options = GradeOptions(training="mnist", device="cpu", data_dir=str(data), time_limit=0.0, seed=SECRET)
    grade = grade_submission(folder, tmp_path / "w", options)
    assert all(r.passed for r in grade.results if not r.name.startswith("training_"))
    assert grade.training[0].measured  # the training child ran and was measured
    assert any(m.get("type") == "call" and "train" in m.get("probe", "") for m in sent if isinstance(m, dict))
    assert not any(_contains(m, SECRET) for m in sent)
    seeds = [line.split()[1] for line in grade.output.splitlines() if line.startswith("SEED ")]
    assert seeds and str(SECRET) not in grade.output and str(derive_seed(SECRET, "child")) in seeds


def test_derived_seeds_differ_by_purpose_and_by_secret() -> None:
    seeds = {derive_seed(s, p) for s in (0, 1, SECRET) for p in ("child", "check:attention:values", "training:mnist")}
    assert len(seeds) == 9 and all(0 <= s < 2**63 for s in seeds)
    assert derive_seed(SECRET, "child") == derive_seed(SECRET, "child")


FORGED_FRAMES = '''
import vitkit_child.worker as _worker

_real_record = _worker.error_record


def _forged(exc, student_file, kind=None):
    record = _real_record(exc, student_file, kind)
    record["frames"] = [[{secret!r}, 1, "leak", ""], ["/proc/self/environ", 1, "env", ""],
                        ["../../secret.txt", 1, "up", ""], ["attention.py", 1, "mine", "FORGED SOURCE LINE"]]
    record["syntax"] = None
    return record


_worker.error_record = _forged


def scaled_dot_product_attention(q, k, v, mask=None):
    raise ValueError("on purpose")
'''


@needs_jail  # without the jail the child could read the file itself: only the parent's reading is tested here
def test_the_parent_never_opens_a_file_the_child_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-FILE-CONTENT\n")
    monkeypatch.setenv("VITKIT_TEST_SECRET", "TOP-SECRET-ENVIRONMENT")
    folder = submission(tmp_path, "forged", append={"attention.py": FORGED_FRAMES.format(secret=str(secret))})
    q = torch.randn(1, 3, 4)
    with Sandbox(stage_submission(folder, tmp_path / "w"), Limits(call_seconds=10)) as box:
        outcome = box.call(f"{PROBES}:attention_function", q, q, q)
    said = f"{outcome.error}\n{outcome.student_traceback}"
    assert "on purpose" in said  # the forged record did reach the parent
    assert "TOP-SECRET" not in said and "FORGED SOURCE LINE" not in said and "environ" not in said
    first_line = (REPO / "reference" / "attention.py").read_text().splitlines()[0].strip()
    assert f'File "attention.py", line 1, in mine\n    {first_line}' in said  # quoted from the parent's copy


def test_a_single_file_that_is_a_link_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "homework.py"
    link.symlink_to(REPO / "reference" / "attention.py")
    with pytest.raises(SubmissionError, match="symbolic link"):
        stage_submission(link, tmp_path / "w")
    (tmp_path / "elsewhere.ipynb").write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    notebook = tmp_path / "homework.ipynb"
    notebook.symlink_to(tmp_path / "elsewhere.ipynb")
    with pytest.raises(SubmissionError, match="symbolic link"):
        stage_submission(notebook, tmp_path / "w2")


# --- the jail, or no grading -------------------------------------------------------------------

@pytest.fixture
def no_jail(monkeypatch: pytest.MonkeyPatch) -> jail.Isolation:
    """A machine where bubblewrap is missing, and an instructor who has not waived the jail."""
    none = jail._describe(None, None, "bubblewrap is not installed (Debian: apt-get install bubblewrap)")
    monkeypatch.setattr(jail, "detect", lambda: none)
    monkeypatch.delenv(jail.ALLOW_ENV, raising=False)
    return none


def test_without_the_jail_nothing_is_graded(no_jail: jail.Isolation, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(jail.IsolationError, match="--allow-unisolated"):
        grade_submission(REPO / "reference", tmp_path / "w", GradeOptions(training="none"))
    out = tmp_path / "grades"
    assert grader_main([str(REPO / "reference"), "--training", "none", "--out", str(out)]) == 2
    assert "cannot be isolated" in capsys.readouterr().err and not out.exists()


def test_on_gradescope_without_the_jail_the_student_reads_that_the_autograder_is_misconfigured(
        no_jail: jail.Isolation, tmp_path: Path) -> None:
    (tmp_path / "submission").mkdir()
    (tmp_path / "submission" / "attention.py").write_text((REPO / "reference" / "attention.py").read_text())
    assert gradescope_main(["--root", str(tmp_path), "--training", "none"]) == 2
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert results["score"] == 0 and results["output"] == MISCONFIGURED
    assert "bubblewrap" in (tmp_path / "results" / "grader-error.txt").read_text()  # for the instructor
    assert "bubblewrap" not in json.dumps(results)


def test_an_instructor_may_accept_the_risk_and_students_check_without_a_jail(
        no_jail: jail.Isolation, tmp_path: Path) -> None:
    grade = grade_submission(REPO / "reference", tmp_path / "w", GradeOptions(training="none", allow_unisolated=True))
    assert grade.score == grade.max_score > 0
    assert any("filesystem: OFF" in line for line in grade.isolation)  # said in the instructor's report
    checked = grade_submission(REPO / "reference", tmp_path / "w2", GradeOptions(training="none", visible_only=True))
    assert all(r.passed for r in checked.results)


def test_a_jail_whose_child_is_root_is_not_complete(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert not jail.Isolation("/usr/bin/bwrap", None, ()).complete  # setpriv missing: the child would be root
    assert jail.Isolation("/usr/bin/bwrap", jail.JAIL_UID, ()).complete
    assert not jail.Isolation(None, None, ()).complete


@needs_jail
def test_a_jail_that_shows_the_kit_is_not_trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trial child must find none of the kit's files: a jail that binds them is refused."""
    real = jail.jail_command

    def leaky(isolation: jail.Isolation, argv: list[str], **kwargs: object) -> list[str]:
        command = real(isolation, argv, **kwargs)
        cut = command.index("--")
        return [*command[:cut], "--ro-bind", str(REPO), str(REPO), *command[cut:]]

    assert jail._trial(jail.detect()) == ""
    monkeypatch.setattr(jail, "jail_command", leaky)
    assert "did not hide the kit's files" in jail._trial(jail.detect())


# --- the training child hears continue or stop, no more often than its recipe plans -------------

ORACLE = '''

import gc as _gc

_ANSWERS = []


def _ask_the_grader(model):
    """Find the worker's ask() without naming it (no import the scan reads) and query it."""
    for obj in _gc.get_objects():
        if getattr(obj, "__name__", "") == "vitkit_child.worker" and hasattr(obj, "ask"):
            for _ in range(40):
                _ANSWERS.append(obj.ask({{"weights": {{k: v.detach().clone() for k, v in model.state_dict().items()}}}}))
            raise RuntimeError(f"ANSWERS {{_ANSWERS}}")


_real_forward = VisionTransformer.forward


def _forward(self, images):
    if torch.is_grad_enabled() and images.shape[0] >= 32 and not _ANSWERS:
        _ask_the_grader(self)
    return _real_forward(self, images)


VisionTransformer.forward = _forward
'''


def test_the_training_child_cannot_query_the_test_labels(tmp_path: Path) -> None:
    data = make_mnist_dir(tmp_path / "data", 256, 64)
    folder = submission(tmp_path, "oracle", append={"vit.py": ORACLE.format()})
    grade = grade_submission(folder, tmp_path / "w", GradeOptions(training="mnist", device="cpu", data_dir=str(data)))
    run = grade.training[0]
    assert "ANSWERS" in run.message  # it did ask, from inside the model
    answers = run.message.split("ANSWERS", 1)[1]
    assert "accuracy" not in answers and "'stop': False" in answers and "'stop': True" in answers
    assert "asked for more than the" in run.message
    assert not any(r.passed for r in grade.results if r.name.startswith("training_"))
