"""The sandbox: a child process that imports the submission and survives whatever it does."""
from __future__ import annotations

import math
import os
import pickle
import shutil
from pathlib import Path

import nbformat
import pytest
import torch

from grader.sandbox import Limits, Outcome, Sandbox, SandboxError, _decode, _Violation
from grader.submission import stage_submission
from grader.wire import encode

pytestmark = pytest.mark.integration  # the tier `make test-fast` leaves out (tests/conftest.py)

FIXTURES = Path(__file__).parent / "fixtures"
PROBES = [FIXTURES / "probes"]
CALL = "sandbox_test_probes:call"
FAST = Limits(call_seconds=5.0, import_seconds=5.0, memory_bytes=2 << 30)


def _sandbox(path: Path, workdir: Path, limits: Limits = FAST, **kwargs: object) -> Sandbox:
    return Sandbox(stage_submission(path, workdir), limits, probe_paths=PROBES, **kwargs)


def _line_of(path: Path, text: str) -> int:
    """The line number of the first line of ``path`` containing ``text``."""
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def _attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)), dim=-1) @ v


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    box = _sandbox(FIXTURES / "good", tmp_path_factory.mktemp("good"))
    yield box
    box.close()


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    box = _sandbox(FIXTURES / "misbehave.py", tmp_path_factory.mktemp("bad"))
    assert box.start().ok
    yield box
    box.close()


def _assert_healthy(box: Sandbox) -> None:
    outcome = box.call(CALL, "add", 2, 3)
    assert outcome.ok and outcome.value == 5, outcome


# -- a good submission -------------------------------------------------------------------------


def test_start_reports_names_and_signatures(good: Sandbox) -> None:
    outcome = good.start()
    assert outcome.ok, outcome.error
    assert outcome.kind is None and outcome.forbidden_calls == []
    names = outcome.value["names"]
    assert names["VisionTransformer"] == "class" and names["patchify"] == "function"
    assert len(names) == 8
    assert outcome.value["signatures"]["MultiHeadSelfAttention"] == "(d_model, num_heads, dropout=0.0, bias=True)"
    assert outcome.value["modules"] == {"attention": "ok", "blocks": "ok", "vit": "ok"}
    assert good.start() is outcome  # importing happens once


def test_calls_return_correct_values(good: Sandbox) -> None:
    q, k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 6, 4), torch.randn(2, 3, 6, 7)
    outcome = good.call("sandbox_test_probes:attention", q, k, v)
    assert outcome.ok, outcome.error
    assert torch.allclose(outcome.value["out"], _attention_reference(q, k, v), atol=1e-6)
    assert outcome.value["weights"].shape == (2, 3, 5, 6)


def test_same_seed_same_outputs(good: Sandbox, tmp_path: Path) -> None:
    images = torch.randn(2, 1, 8, 8)
    first = good.request("sandbox_test_probes:vit_logits", [images], seed=7)
    again = good.request("sandbox_test_probes:vit_logits", [images], seed=7)
    other = good.request("sandbox_test_probes:vit_logits", [images], seed=8)
    assert first.value.shape == (2, 3)
    assert torch.equal(first.value, again.value)
    assert not torch.equal(first.value, other.value)
    with _sandbox(FIXTURES / "good", tmp_path / "w", seed=7) as fresh:  # a new process, same answer
        assert torch.equal(fresh.call("sandbox_test_probes:vit_logits", images).value, first.value)


def test_relative_and_absolute_sibling_imports_give_the_same_module(good: Sandbox, tmp_path: Path) -> None:
    assert good.call("sandbox_test_probes:same_class_objects").value is True
    src = shutil.copytree(FIXTURES / "good", tmp_path / "absolute")
    for path in src.glob("*.py"):
        path.write_text(path.read_text().replace("from .", "from "))
    with _sandbox(src, tmp_path / "w") as box:
        assert box.start().ok
        assert box.call("sandbox_test_probes:same_class_objects").value is True


def test_extra_sibling_modules_import_both_ways_without_shadowing_the_stdlib(tmp_path: Path) -> None:
    src = shutil.copytree(FIXTURES / "good", tmp_path / "hw")
    (src / "random.py").write_text("SCALE = 3\n")  # a student module with a stdlib name
    (src / "geometry.py").write_text("AREA = 4\n")
    with open(src / "attention.py", "a") as handle:
        handle.write("\nfrom .random import SCALE\nfrom geometry import AREA\nimport random as std_random\n\n"
                     "def extras():\n    return [SCALE, AREA, std_random.__name__]\n")
    with _sandbox(src, tmp_path / "w") as box:
        assert box.start().ok
        assert box.call(CALL, "extras").value == [3, 4, "random"]


def test_gpu_children_are_spawned_and_see_the_gpus(good: Sandbox, tmp_path: Path) -> None:
    # The training path on a GPU machine; here it runs on the CPU, which is all CI has.
    assert good.call("sandbox_test_probes:environment", "CUDA_VISIBLE_DEVICES").value == ""  # hidden
    limits = Limits(call_seconds=5, import_seconds=60, memory_bytes=None, gpu=True)
    with _sandbox(FIXTURES / "good", tmp_path / "w", limits) as box:
        assert box.start().ok
        assert box.call("sandbox_test_probes:environment", "CUDA_VISIBLE_DEVICES").value is None
        assert _parent_of(box._child.pid) == os.getpid()  # started here (through the jail's launcher)


def _parent_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))


def test_probe_mistakes_are_reported_not_raised(good: Sandbox) -> None:
    missing = good.call(CALL, "no_such_function")
    assert missing.kind == "exception"
    assert missing.error == "MissingNameError: the submission does not define 'no_such_function'"
    not_plain = good.call("sandbox_test_probes:not_plain")
    assert not_plain.kind == "protocol" and "VisionTransformer, which is not plain data" in not_plain.error
    unknown = good.call("sandbox_test_probes:does_not_exist")
    assert unknown.kind == "protocol" and "cannot load probe" in unknown.error
    with pytest.raises(SandboxError):
        good.call(CALL, "add", object(), 1)  # the grader's own mistake: raised


# -- import failures ---------------------------------------------------------------------------


def _broken_copy(tmp_path: Path, module: str, code: str) -> Path:
    src = shutil.copytree(FIXTURES / "good", tmp_path / "hw")
    with open(src / f"{module}.py", "a") as handle:
        handle.write(code)
    return src


def test_hang_at_import_times_out_and_the_rest_is_usable(tmp_path: Path) -> None:
    src = _broken_copy(tmp_path, "vit", "\nwhile True:\n    pass\n")
    with _sandbox(src, tmp_path / "w", Limits(import_seconds=1.0, call_seconds=5)) as box:
        outcome = box.start()
        assert not outcome.ok and outcome.kind == "import"
        loop = _line_of(src / "vit.py", "while True:")  # the child is caught on the loop or its body
        assert outcome.error in [f"vit.py did not finish importing within 1 s (at vit.py line {n}, in <module>)"
                                 for n in (loop, loop + 1)], outcome.error
        assert outcome.value["modules"]["attention"] == "ok"
        assert "VisionTransformer" not in outcome.value["names"] and "TransformerBlock" in outcome.value["names"]
        q = torch.randn(1, 2, 4)
        assert box.call("sandbox_test_probes:attention", q, q, q).ok


def test_crash_at_import(tmp_path: Path) -> None:
    src = _broken_copy(tmp_path, "blocks", "\nimport os\nos._exit(1)\n")
    with _sandbox(src, tmp_path / "w") as box:
        outcome = box.start()
        assert outcome.kind == "import"
        assert outcome.error.startswith("the process exited (code 1) while importing blocks.py")
        assert outcome.value["modules"]["attention"] == "ok"
        assert outcome.value["modules"]["vit"].startswith("ImportError in vit.py line 4: blocks.py was not imported")


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    src = _broken_copy(tmp_path, "attention", "\ndef broken(:\n    pass\n")
    with _sandbox(src, tmp_path / "w") as box:
        outcome = box.start()
        line = _line_of(src / "attention.py", "def broken(:")
        assert outcome.kind == "import"
        assert outcome.value["modules"]["attention"] == f"SyntaxError in attention.py line {line}: invalid syntax"
        assert outcome.error.startswith(f"SyntaxError in attention.py line {line}: invalid syntax")
        expected = f'File "attention.py", line {line}\n    def broken(:\nSyntaxError: invalid syntax'
        assert expected in outcome.student_traceback
        assert outcome.value["names"] == {}


def test_exception_at_import_shows_only_student_frames(tmp_path: Path) -> None:
    src = _broken_copy(tmp_path, "vit", "\ndef configure():\n    raise ValueError('bad config')\n\nconfigure()\n")
    with _sandbox(src, tmp_path / "w") as box:
        outcome = box.start()
        inner = _line_of(src / "vit.py", "raise ValueError")
        outer = len((src / "vit.py").read_text().splitlines())  # the call is the file's last line
        assert outcome.kind == "import"
        assert outcome.error == f"ValueError in vit.py line {inner}: bad config"
        assert outcome.student_traceback == (
            'while importing vit.py:\n'
            f'  File "vit.py", line {outer}, in <module>\n    configure()\n'
            f'  File "vit.py", line {inner}, in configure\n    raise ValueError(\'bad config\')\n'
            'ValueError: bad config'
        )
        for foreign in ("grader", "importlib", "site-packages", "/tmp"):
            assert foreign not in outcome.student_traceback


def test_missing_names_are_not_an_import_error(tmp_path: Path) -> None:
    src = tmp_path / "partial.py"
    src.write_text("print('hello from import')\n\ndef patchify(images, patch_size):\n    return images\n")
    with _sandbox(src, tmp_path / "w") as box:
        outcome = box.start()
        assert outcome.ok and outcome.value["names"] == {"patchify": "function"}
        assert outcome.output == "hello from import\n"


# -- misbehaving calls -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["spin", "sleep_forever"])
def test_hanging_call_times_out_and_the_next_call_works(bad: Sandbox, name: str) -> None:
    restarts = bad.restarts
    outcome = bad.request(CALL, [name], timeout=1.0)
    assert outcome.kind == "timeout"
    assert outcome.error.startswith("timed out after 1 s (misbehave.py line ")
    assert f", in {name})" in outcome.error
    _assert_healthy(bad)
    assert bad.restarts == restarts + 1


def test_updates_reach_the_parent_while_the_probe_runs(bad: Sandbox) -> None:
    seen = []
    outcome = bad.request("sandbox_test_probes:report_then", [3, None], on_update=seen.append)
    assert outcome.ok and outcome.value == 3
    assert [u["step"] for u in seen] == [0, 1, 2] and outcome.update is seen[-1]
    assert torch.equal(outcome.update["loss"], torch.tensor(1 / 3))
    assert bad.call(CALL, "add", 1, 1).update is None  # updates belong to their own request


@pytest.mark.parametrize("then,args,kind", [("sleep_forever", [], "timeout"), ("exit_now", [3], "crash")])
def test_the_last_update_survives_a_failure(bad: Sandbox, then: str, args: list, kind: str) -> None:
    outcome = bad.request("sandbox_test_probes:report_then", [2, then, *args], timeout=2.0)
    assert outcome.kind == kind and outcome.update["step"] == 1
    _assert_healthy(bad)


def test_os_exit_is_a_crash_and_the_next_call_works(bad: Sandbox) -> None:
    outcome = bad.call(CALL, "exit_now", 3)
    assert (outcome.ok, outcome.kind, outcome.error) == (False, "crash", "the process exited (code 3)")
    _assert_healthy(bad)


def test_segfault_is_a_crash_with_its_location(bad: Sandbox) -> None:
    outcome = bad.call(CALL, "segfault")
    assert outcome.kind == "crash"
    assert outcome.error.startswith("the process crashed with a segmentation fault (SIGSEGV) (misbehave.py line")
    _assert_healthy(bad)


def test_sys_exit_is_a_crash(bad: Sandbox) -> None:
    outcome = bad.call(CALL, "call_sys_exit")
    assert outcome.kind == "crash" and outcome.error.startswith("SystemExit: sys.exit(3) was called")
    _assert_healthy(bad)


@pytest.mark.parametrize("name", ["huge_tensor", "huge_list"])
def test_huge_allocation_is_a_memory_error(bad: Sandbox, name: str) -> None:
    outcome = bad.call(CALL, name)
    assert outcome.kind == "memory", outcome
    assert outcome.error.startswith("ran out of memory")
    _assert_healthy(bad)


def test_exception_in_a_call_keeps_student_frames_only(bad: Sandbox) -> None:
    outcome = bad.call(CALL, "shape_error", torch.zeros(2, 3))
    source = FIXTURES / "misbehave.py"
    outer, inner = _line_of(source, "return helper_that_fails(x)"), _line_of(source, "raise ValueError")
    assert outcome.error == f"ValueError: bad shape (2, 3) (misbehave.py line {inner}, in helper_that_fails)"
    assert outcome.student_traceback == (
        f'  File "misbehave.py", line {outer}, in shape_error\n    return helper_that_fails(x)\n'
        f'  File "misbehave.py", line {inner}, in helper_that_fails\n'
        '    raise ValueError(f"bad shape {tuple(x.shape)}")\n'
        'ValueError: bad shape (2, 3)'
    )


def test_deep_recursion_is_summarised(bad: Sandbox) -> None:
    outcome = bad.call(CALL, "recurse", 0)
    assert outcome.kind == "exception" and outcome.error.startswith("RecursionError")
    assert "[Previous line repeated" in outcome.student_traceback
    assert outcome.student_traceback.count("\n") < 10


def test_printing_floods_are_captured_and_bounded(bad: Sandbox) -> None:
    outcome = bad.call(CALL, "flood", 50_000)
    assert outcome.ok and outcome.value == 50_000
    assert outcome.output.startswith("[... earlier output cut ...]")
    assert outcome.output.endswith("line 49999\nto stderr\n")
    assert len(outcome.output) <= FAST.output_bytes + 100
    assert bad.call(CALL, "add", 1, 1).output == ""  # the next request's output is its own


def test_nan_comes_back_as_nan(bad: Sandbox) -> None:
    outcome = bad.call(CALL, "nan_output")
    assert outcome.ok and torch.isnan(outcome.value[1]) and outcome.value[0] == 1.0


def test_state_persists_between_calls_until_a_restart(bad: Sandbox) -> None:
    assert bad.call(CALL, "remember", 42).ok
    assert bad.call(CALL, "recall").value == 42
    bad.call(CALL, "exit_now", 1)
    assert bad.call(CALL, "recall").error.startswith("NameError")


# -- notebooks end to end ----------------------------------------------------------------------


def test_notebook_errors_point_at_cells(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import torch\nSCALE = 2"),
        nbformat.v4.new_code_cell("for i in range(10**9):\n    pass"),  # a training loop: dropped
        nbformat.v4.new_code_cell("def add(a, b):\n    return a + b\n\ndef fail(x):\n    return x / undefined_name"),
    ]
    path = tmp_path / "hw.ipynb"
    nbformat.write(nb, path)
    with _sandbox(path, tmp_path / "w") as box:
        assert box.start().ok
        assert box.call(CALL, "add", 2, 2).value == 4
        outcome = box.call(CALL, "fail", 1)
        assert outcome.error == "NameError: name 'undefined_name' is not defined (hw.ipynb cell 3 line 5, in fail)"
        assert 'File "hw.ipynb cell 3", line 5, in fail' in outcome.student_traceback


# -- the parent's side of the protocol ---------------------------------------------------------


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run in the parent",))


def test_parent_refuses_anything_but_plain_data() -> None:
    with pytest.raises(_Violation, match="frame"):  # a pickle is not a frame of the wire, and is never unpickled
        _decode(pickle.dumps(_Evil(), protocol=2))
    with pytest.raises(_Violation, match="unexpected message"):
        _decode(encode({"type": "evil"}))
    with pytest.raises(_Violation):
        _decode(encode({"type": "result", "id": 1, "ok": False, "value": None, "error": {"kind": "whatever"}}))
    with pytest.raises(_Violation, match="'id' is malformed"):
        _decode(encode({"type": "update", "id": "1", "value": 0}))
    plain = _decode(encode({"type": "result", "id": 1, "ok": True, "value": torch.ones(2), "error": None}))
    assert plain["value"].sum() == 2


def test_outcome_is_a_plain_dataclass() -> None:
    outcome = Outcome(False, error="x", kind="timeout")
    assert outcome.forbidden_calls == [] and outcome.student_traceback == "" and outcome.output == ""
