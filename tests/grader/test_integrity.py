"""Run-time detection of library attention, convolutions and timm in the student's code."""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from grader import jail
from grader.integrity import ForbiddenCall, StudentFiles, install_traps
from grader.sandbox import Limits, Sandbox
from grader.submission import INTERFACE_NAMES, stage_submission

pytestmark = pytest.mark.integration  # the tier `make test-fast` leaves out (tests/conftest.py)

FIXTURES = Path(__file__).parent / "fixtures"
CHEATER = FIXTURES / "cheater"
PROBES = [FIXTURES / "probes"]


def _expected(folder: Path) -> set[tuple[str, str, int]]:
    """(api, file, line) for every ``# expect: api[, api]`` comment in the fixture's modules."""
    expected = set()
    for path in sorted(folder.glob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = re.search(r"# expect: (.+)$", line)
            if match:
                expected.update((api.strip(), path.name, number) for api in match.group(1).split(","))
    return expected


@pytest.fixture(scope="module")
def cheater(tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    box = Sandbox(stage_submission(CHEATER, tmp_path_factory.mktemp("cheater")), Limits(call_seconds=10),
                  probe_paths=PROBES)
    yield box
    box.close()


def test_every_trapped_api_is_recorded_where_the_student_used_it(cheater: Sandbox) -> None:
    started = cheater.start()
    assert started.ok, started.error  # `from attention import ...` and `from .attention import ...` both work
    exercised = cheater.call("sandbox_test_probes:exercise_cheater")
    assert exercised.ok, exercised.error
    # trapped calls still go through: the reference is found only where no jail hides it
    hidden = jail.detect().bwrap is not None
    assert exercised.value[-2:] == ["no reference" if hidden else "reference.attention", "no timm"]

    recorded = {(c.api, c.student_file, c.line) for c in started.forbidden_calls + exercised.forbidden_calls}
    assert recorded == _expected(CHEATER)
    # import-time uses are reported by start(), the others by the call that made them
    assert {c.api for c in started.forbidden_calls} == {"import timm", "torch.nn.MultiheadAttention"}


def test_records_say_where_and_what_kind(cheater: Sandbox) -> None:
    cheater.start()
    calls = cheater.call("sandbox_test_probes:exercise_cheater").forbidden_calls
    by_api = {c.api: c for c in calls}
    mha = by_api["torch.nn.MultiheadAttention.forward"]
    assert (mha.function, mha.component_hint, mha.category) == (
        "MultiHeadSelfAttention.forward", "MultiHeadSelfAttention", "attention")
    assert by_api["torch.nn.Conv2d"].category == "convolution"  # kernel 4 = stride 4: a patch embedding
    assert by_api["torch.nn.Conv2d"].component_hint == "PatchEmbedding"
    assert by_api["torch.conv2d"].category == "cnn"  # a 3x3 kernel at stride 1: a CNN layer
    assert by_api["torch.nn.functional.conv2d"].category == "cnn"
    assert by_api["import reference"].category == "reference"
    assert by_api["import timm"].category == "library"
    # a recorded library call does not also record what the library calls inside it
    assert [c.api for c in calls if (c.student_file, c.line) == (mha.student_file, mha.line)] == [mha.api]


def test_grader_code_is_not_blamed(cheater: Sandbox) -> None:
    q = torch.randn(1, 2, 3, 4)
    assert cheater.call("sandbox_test_probes:library_attention", q, q, q).forbidden_calls == []
    outcome = cheater.call("sandbox_test_probes:library_modules")
    assert outcome.ok and outcome.forbidden_calls == []


def test_a_clean_submission_has_no_records(tmp_path: Path) -> None:
    with Sandbox(stage_submission(FIXTURES / "good", tmp_path), probe_paths=PROBES) as box:
        assert box.start().forbidden_calls == []
        outcome = box.call("sandbox_test_probes:vit_logits", torch.randn(1, 1, 8, 8))
        assert outcome.ok and outcome.forbidden_calls == []


# -- in-process unit tests of the traps --------------------------------------------------------

STUDENT_CODE = '''\
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.functional import scaled_dot_product_attention as early


def use_functional(q):
    return F.scaled_dot_product_attention(q, q, q)


def use_early(q):
    return early(q, q, q)


def use_module(x):
    return nn.MultiheadAttention(4, 2, batch_first=True)(x, x, x)[0]


class VisionTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(1, 4, 2, stride=2)
'''


def _load_student_module(tmp_path: Path):
    path = tmp_path / "student_vit.py"
    path.write_text(STUDENT_CODE)
    spec = importlib.util.spec_from_file_location("student_vit_for_trap_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return path, module


def test_traps_in_process_record_and_uninstall(tmp_path: Path) -> None:
    original_sdpa, original_init = F.scaled_dot_product_attention, torch.nn.MultiheadAttention.__init__
    original_import = __builtins__["__import__"] if isinstance(__builtins__, dict) else __builtins__.__import__
    records: list[ForbiddenCall] = []
    path = tmp_path / "student_vit.py"
    traps = install_traps(StudentFiles({str(path): "vit.py"}), records.append, INTERFACE_NAMES)
    try:
        _, student = _load_student_module(tmp_path)
        q = torch.randn(1, 3, 4)
        student.use_functional(q)
        student.use_functional(q)  # the same place twice: recorded once
        student.use_early(q)
        student.use_module(q)
        student.VisionTransformer()
        F.scaled_dot_product_attention(q, q, q)  # this test file is not the student's: not recorded
    finally:
        traps.uninstall()
    assert F.scaled_dot_product_attention is original_sdpa
    assert torch.nn.MultiheadAttention.__init__ is original_init
    import builtins

    assert builtins.__import__ is original_import
    assert not any(type(f).__name__ == "_ImportTrap" for f in sys.meta_path)

    source = STUDENT_CODE.splitlines()
    line = {text: source.index(text) + 1 for text in source}
    assert [(r.api, r.line, r.function, r.component_hint) for r in records] == [
        ("torch.nn.functional.scaled_dot_product_attention", line["    return F.scaled_dot_product_attention(q, q, q)"],
         "use_functional", "use_functional"),
        ("torch.nn.functional.scaled_dot_product_attention", line["    return early(q, q, q)"],
         "use_early", "use_early"),
        # construction and forward share a line; what MultiheadAttention calls inside is not recorded
        ("torch.nn.MultiheadAttention", line["    return nn.MultiheadAttention(4, 2, batch_first=True)(x, x, x)[0]"],
         "use_module", "use_module"),
        ("torch.nn.MultiheadAttention.forward",
         line["    return nn.MultiheadAttention(4, 2, batch_first=True)(x, x, x)[0]"], "use_module", "use_module"),
        ("torch.nn.Conv2d", line["        self.embed = nn.Conv2d(1, 4, 2, stride=2)"], "VisionTransformer.__init__",
         "VisionTransformer"),
    ]
    assert all(r.student_file == "vit.py" for r in records)
    assert records[-1].category == "convolution"


def test_records_are_validated_when_read_back() -> None:
    call = ForbiddenCall("import timm", "vit.py", 3, "<module>", "<module>", "library")
    assert ForbiddenCall.from_dict(call.to_dict()) == call
    with pytest.raises(ValueError):
        ForbiddenCall.from_dict({**call.to_dict(), "line": "3"})
    with pytest.raises(ValueError):
        ForbiddenCall.from_dict(["not", "a", "dict"])
