"""The hostile corpus: one submission per way a determined student tried to talk the grader into
points, graded end to end. Each scores at most what its honest part earns, with a message that
says why; the attacks on the grader's files and processes need the jail (skipped without it)."""
from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from grader import jail
from grader.__main__ import main as grader_main
from grader.grade import GradeOptions, grade_submission
from reference.configs import get_recipe

pytestmark = pytest.mark.integration  # the tier `make test-fast` leaves out (tests/conftest.py)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import labelled_blobs, make_mnist_dir  # noqa: E402
from test_grading_training import training_results  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
OPTIONS = GradeOptions(training="none", call_seconds=10.0)
ALL = {"attention", "multihead", "feedforward", "residual_block", "transformer_block", "patchify", "vit"}
needs_jail = pytest.mark.skipif(jail.detect().bwrap is None, reason=f"no jail here: {jail.detect().layers[0]}")
SDPA_LINE = "        out, weights = scaled_dot_product_attention(q, k, v, mask)  # (B, h, T, D/h), (B, h, T, T)"


def submission(root: Path, name: str, base: str = "reference", edits: dict[str, list[tuple[str, str]]] | None = None,
               append: dict[str, str] | None = None) -> Path:
    """A copy of reference/ (or student_template/) with ``edits`` (old -> new) and code appended."""
    folder = root / name
    folder.mkdir(parents=True)
    for f in ("attention.py", "blocks.py", "vit.py"):
        text = (REPO / base / f).read_text()
        for old, new in (edits or {}).get(f, []):
            assert text.count(old) == 1, f"{name}: the edit no longer applies to {base}/{f}: {old!r}"
            text = text.replace(old, new)
        (folder / f).write_text(text + (append or {}).get(f, ""))
    return folder


def failed(grade) -> set[str]:
    return {r.component for r in grade.results if not r.passed and not r.skipped}


def messages(grade, component: str) -> str:
    return "\n".join(r.message for r in grade.results if r.component == component and not r.passed)


# --- the grader's code in the student's process ------------------------------------------------

PATCH_PROBES = '''
import vitkit_child.probes as _probes

def _fake(ns, *args, **kwargs):
    x = args[-1]
    return {"out": x, "attended": x * 0, "mlp_out": x * 0, "classes": {}}

_probes.residual_block = _fake
_probes.transformer_block = _fake
'''


def test_patching_the_grader_probes_from_the_unfilled_template_earns_nothing(tmp_path: Path) -> None:
    grade = grade_submission(submission(tmp_path, "patch", "student_template", append={"vit.py": PATCH_PROBES}),
                             tmp_path / "w", OPTIONS)
    assert grade.score == 0 and failed(grade) == ALL


# --- library attention, however it is reached --------------------------------------------------

EVASIONS = {
    "exec_under_another_name": ('exec(compile("import torch.nn.functional as F\\n'
                                'out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)", "<heads>", "exec"), '
                                'globals(), scope)', "exec"),
    "aten_op": ("out = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)[0]", "torch.ops"),
    "wrapped": ("out = torch.nn.functional.scaled_dot_product_attention.__wrapped__(q, k, v, attn_mask=mask)",
                "__wrapped__"),
    "alias": ("out = getattr(torch.nn.functional, 'scaled_dot_product_attention')(q, k, v, attn_mask=mask)",
              "scaled_dot_product_attention"),
}


@pytest.mark.parametrize("name", list(EVASIONS))
def test_library_attention_is_seen_through_aliases(tmp_path: Path, name: str) -> None:
    code, named = EVASIONS[name]
    replacement = f"{SDPA_LINE}\n        scope = {{'q': q, 'k': k, 'v': v, 'mask': mask}}\n        {code}"
    grade = grade_submission(submission(tmp_path, name, edits={"attention.py": [(SDPA_LINE, replacement)]}),
                             tmp_path / "w", OPTIONS)
    assert "multihead" in failed(grade) and failed(grade) <= {"multihead", "attention"}, failed(grade)
    assert named in messages(grade, "multihead")


UNINSTALL_TRAPS = '''
import torch.nn.functional as _F
_F.scaled_dot_product_attention = _F.scaled_dot_product_attention.__wrapped__
'''


def test_uninstalling_the_run_time_traps_is_seen(tmp_path: Path) -> None:
    grade = grade_submission(submission(tmp_path, "untrap", append={"attention.py": UNINSTALL_TRAPS}), tmp_path / "w", OPTIONS)
    assert "attention" in failed(grade) and "__wrapped__" in messages(grade, "attention")


# --- the reference solution, re-exported ---------------------------------------------------------

REEXPORTS = {
    "by_name": "from reference.attention import *  # noqa\n",
    "by_path": ("import importlib.util as _u\n_s = _u.spec_from_file_location('r', " + repr(str(REPO / "reference" / "attention.py"))
                + ")\n_m = _u.module_from_spec(_s)\n_s.loader.exec_module(_m)\nglobals().update(vars(_m))\n"),
}


# By path it needs the jail: without one the grader says the student's code can read the reference.
@pytest.mark.parametrize("name", ["by_name", pytest.param("by_path", marks=needs_jail)])
def test_a_submission_that_uses_the_reference_earns_nothing(tmp_path: Path, name: str) -> None:
    folder = submission(tmp_path, name)
    (folder / "attention.py").write_text(REEXPORTS[name])
    grade = grade_submission(folder, tmp_path / "w", OPTIONS)
    assert grade.score == 0 and failed(grade) == ALL
    text = json.dumps([r.message for r in grade.results] + grade.notes)
    assert "def scaled_dot_product_attention" not in text and "BEGIN SOLUTION" not in text  # no reference source


# --- code that behaves only at the sizes the checks used to use ---------------------------------

SWITCH = '''

_honest_forward = VisionTransformer.forward


def _forward(self, images):
    if images.shape[-1] in (28, 32):  # the recipes' sizes: something else
        return _honest_forward(self, images.flip(-1))
    return _honest_forward(self, images)


VisionTransformer.forward = _forward
'''


def test_behaviour_that_switches_at_the_real_image_sizes_is_caught(tmp_path: Path) -> None:
    grade = grade_submission(submission(tmp_path, "switch", append={"vit.py": SWITCH}), tmp_path / "w", OPTIONS)
    assert failed(grade) == {"vit"}, failed(grade)
    assert "1x28x28 images" in messages(grade, "vit")


# --- the grader's files and processes (need the jail) -------------------------------------------

LABELS = '''

import os as _os

_forward_honestly = VisionTransformer.forward


def _peek(self, images):
    """With the test labels in reach, answer from them (test images come in order, in batches)."""
    path = {labels!r}
    if not self.training and images.shape[0] >= 50 and _os.path.exists(path):  # evaluation batches only
        import gzip
        labels = torch.tensor(list(gzip.open(path).read()[8:]))
        start = getattr(self, "_seen", 0) % len(labels)
        self._seen = start + images.shape[0]
        return torch.nn.functional.one_hot(labels[start:start + images.shape[0]].long(), 10).float() * 100
    return _forward_honestly(self, images)


VisionTransformer.forward = _peek
'''


@needs_jail
def test_the_test_labels_are_out_of_reach_while_the_model_is_measured(tmp_path: Path) -> None:
    data = make_mnist_dir(tmp_path / "data", 256, 64)
    labels = data / "mnist" / "t10k-labels-idx1-ubyte.gz"
    folder = submission(tmp_path, "labels", append={"vit.py": LABELS.format(labels=str(labels))})
    grade = grade_submission(folder, tmp_path / "w", GradeOptions(training="mnist", device="cpu", data_dir=str(data),
                                                                  time_limit=0.0))
    run = grade.training[0]
    assert run.measured and max(run.measured) < 0.9, run.message  # the honest model after one step
    assert "measured by the grader" in run.message


STRAY = '''
import subprocess as _subprocess
import sys as _sys

_subprocess.Popen([_sys.executable, "-c", "import time; time.sleep(3); open({target!r}, 'w').write('{{\\"score\\": 999}}')"],
                  start_new_session=True)
'''


@needs_jail
def test_a_process_left_behind_cannot_rewrite_the_results(tmp_path: Path) -> None:
    out = tmp_path / "grades"
    target = out / "stray" / "results.json"
    folder = submission(tmp_path / "src", "stray", append={"vit.py": STRAY.format(target=str(target))})
    assert grader_main([str(folder), "--out", str(out), "--training", "none"]) == 0
    time.sleep(4)  # longer than the stray would have waited
    results = json.loads(target.read_text())
    assert results["score"] == results["extra_data"]["max_score"] > 0


# --- the measurement: predictions that do not come from the trained weights --------------------

# Appended to reference/vit.py: the grader's evaluations get answers from elsewhere, unless
# ``{honest}`` holds; the default: in training, and untrained (the class token starts at zero),
# so that the untrained model measures at chance and its batch sizes agree.
ELSEWHERE = '''

import base64 as _base64

_forward_honestly = VisionTransformer.forward


def _stripes(images):
    """A hand-written classifier for the fixture (class c: vertical stripes of period c + 2), in
    place of a classifier trained elsewhere and hidden in the source: no weights of the model."""
    profile = images.float().mean(dim=(1, 2))  # (B, W)
    profile = profile - profile.mean(-1, keepdim=True)
    cols = torch.arange(profile.shape[-1], dtype=torch.float32)
    waves = torch.stack([torch.cos(2 * torch.pi * cols / (c + 2)) for c in range(10)])  # (10, W)
    waves = waves - waves.mean(-1, keepdim=True)
    return 100 * (profile / profile.norm(dim=-1, keepdim=True)) @ (waves / waves.norm(dim=-1, keepdim=True)).T


_SEEN = {seen!r}  # base64 of the test images (uint8), when answers were memorised
_ANSWERS = {answers!r}


def _recalled(self, images):
    """The memorised answer where an image is one of the test images (exact correlation), else the model's."""
    logits = _forward_honestly(self, images)
    seen = torch.tensor(list(_base64.b64decode(_SEEN)), dtype=torch.float32).reshape(len(_ANSWERS), -1)
    x = images.float().reshape(images.shape[0], -1)
    x, seen = [(t - t.mean(-1, keepdim=True)) / t.std(-1, keepdim=True) for t in (x, seen)]
    match, which = (x @ seen.T / (x.shape[-1] - 1)).max(-1)  # (B,): correlation with the closest test image
    answers = torch.tensor([int(a) for a in _ANSWERS])[which]
    return torch.where(match[:, None] > 0.999, 100 * torch.nn.functional.one_hot(answers, 10).float(), logits)


def _evaluated(self, images):
    if {honest}:
        return _forward_honestly(self, images)
    return _recalled(self, images) if _SEEN else _stripes(images)


VisionTransformer.forward = _evaluated
'''


TRAINED = "self.training or not bool(self.class_token.abs().sum() > 0)"  # honest until it has trained


def elsewhere(tmp_path: Path, memorised: tuple[np.ndarray, np.ndarray] | None = None, honest: str = TRAINED) -> Path:
    """The reference answering the grader's evaluations by hand (default) or from memorised test
    answers, except where ``honest`` holds."""
    seen, answers = "", ""
    if memorised is not None:
        images, labels = memorised
        seen, answers = base64.b64encode(images.tobytes()).decode(), "".join(map(str, labels))
    return submission(tmp_path, "elsewhere",
                      append={"vit.py": ELSEWHERE.format(seen=seen, answers=answers, honest=honest)})


def trained_by_the_grader(folder: Path, tmp_path: Path, data: Path):
    options = GradeOptions(training="mnist", device="cpu", data_dir=str(data), time_limit=0.0)  # one step
    grade = grade_submission(folder, tmp_path / "w", options)
    return training_results(grade), grade.training[0]


def test_a_hand_written_classifier_in_place_of_the_trained_model_earns_nothing(tmp_path: Path) -> None:
    """Right on training and test images alike, so only the shuffled weights give it away."""
    data = make_mnist_dir(tmp_path / "data", 256, 64)
    results, run = trained_by_the_grader(elsewhere(tmp_path), tmp_path, data)
    assert run.measured and max(run.measured) >= 0.9  # what the grader measured, as asked
    assert not any(r.passed for r in results)
    assert "with its weights shuffled it still scores" in run.message and "not come from its weights" in run.message


def test_memorised_test_answers_earn_nothing(tmp_path: Path) -> None:
    data = make_mnist_dir(tmp_path / "data", 256, 64)
    test_split = labelled_blobs(64, (28, 28), 1)  # what make_mnist_dir wrote as the test split
    results, run = trained_by_the_grader(elsewhere(tmp_path, test_split), tmp_path, data)
    assert run.measured and max(run.measured) == 1.0
    assert not any(r.passed for r in results)
    assert "on training images" in run.message and "fitted to the test set" in run.message


def test_a_model_that_knows_the_task_before_training_earns_nothing(tmp_path: Path) -> None:
    """Answers from elsewhere from the start (weights trained at home and restored, a hidden
    classifier), honest on the checks' small batches: before the first step the grader measures
    it, and it is already far above chance."""
    data = make_mnist_dir(tmp_path / "data", 256, 64)
    results, run = trained_by_the_grader(elsewhere(tmp_path, honest="self.training or images.shape[0] < 32"),
                                         tmp_path, data)
    assert not any(r.passed for r in results)
    assert "before its first training step the model already scored" in run.message, run.message


def test_a_model_that_switches_at_large_batches_earns_nothing(tmp_path: Path) -> None:
    """Honest on the checks' batches of 2-3 and while untrained, another model on the grader's
    large evaluation batches once trained: the same images get other logits at another batch size."""
    data = make_mnist_dir(tmp_path / "data", 256, 64)
    results, run = trained_by_the_grader(elsewhere(tmp_path, honest=f"{TRAINED} or images.shape[0] < 32"), tmp_path, data)
    assert run.measured and max(run.measured) >= 0.9
    assert not any(r.passed for r in results)
    assert "got other logits at batch size 3 than at 1000" in run.message, run.message


def test_a_hand_written_classifier_with_submitted_weights_earns_nothing(tmp_path: Path) -> None:
    """--training checkpoint: the untrained weights submitted, the answers from the classifier."""
    data = make_mnist_dir(tmp_path / "data", 256, 64)
    folder = elsewhere(tmp_path)
    torch.manual_seed(0)
    state = get_recipe("mnist").model.build().state_dict()
    state["class_token"] += 0.01  # looks trained: the answers come from the classifier at every batch size
    torch.save(state, folder / "mnist.pt")
    grade = grade_submission(folder, tmp_path / "w", GradeOptions(training="checkpoint", data_dir=str(data)))
    results = training_results(grade)
    assert not any(r.passed for r in results)
    assert "mnist.pt not counted" in results[0].message and "not come from its weights" in results[0].message


OWN_TEST = '''

def test_my_attention_matches_pytorch():
    q = torch.randn(2, 3, 4)
    out, _ = scaled_dot_product_attention(q, q, q)
    assert torch.allclose(out, torch.nn.functional.scaled_dot_product_attention(q, q, q), atol=1e-6)
'''
TEST_NAMED_HELPER = '''

def test_helper(q, k, v, mask):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
'''


def test_comparing_with_pytorch_in_ones_own_test_is_fine(tmp_path: Path) -> None:
    grade = grade_submission(submission(tmp_path, "own_test", append={"attention.py": OWN_TEST}), tmp_path / "w", OPTIONS)
    assert grade.score == grade.max_score > 0
    assert any("test_my_attention_matches_pytorch" in note and "allowed there" in note for note in grade.notes)


def test_a_test_named_helper_that_the_model_calls_is_charged(tmp_path: Path) -> None:
    call = f"{SDPA_LINE}\n        out = test_helper(q, k, v, mask)"
    folder = submission(tmp_path, "helper", edits={"attention.py": [(SDPA_LINE, call)]},
                        append={"attention.py": TEST_NAMED_HELPER})
    grade = grade_submission(folder, tmp_path / "w", OPTIONS)
    assert "multihead" in failed(grade) and "scaled_dot_product_attention" in messages(grade, "multihead")


UNNAMED = '''
import operator as _operator

_NAME = "".join(chr(c) for c in (111, 112, 115, 46, 97, 116, 101, 110, 46))  # spelled at run time


def _kernel(q, k, v):
    return _operator.attrgetter(_NAME + "scaled_dot_product_attention")(torch)(q, k, v)
'''


def test_a_kernel_reached_by_a_name_spelled_at_run_time_is_seen(tmp_path: Path) -> None:
    """No name the static scan can read: the dispatcher-level observer in the child sees it."""
    call = f"{SDPA_LINE}\n        out = _kernel(q, k, v)"
    folder = submission(tmp_path, "unnamed", edits={"attention.py": [(SDPA_LINE, call)]}, append={"attention.py": UNNAMED})
    grade = grade_submission(folder, tmp_path / "w", OPTIONS)
    assert "multihead" in failed(grade) and "torch op scaled_dot_product_attention" in messages(grade, "multihead")


POOLED = UNNAMED + '''
from concurrent.futures import ThreadPoolExecutor as _Pool

_POOL = _Pool(1)  # its thread starts at the first call, from the model


def _pooled(q, k, v):
    return _POOL.submit(_kernel, q, k, v).result()
'''


def test_a_kernel_called_from_a_thread_pool_is_seen(tmp_path: Path) -> None:
    """A torch function mode holds for one thread: the pool's thread runs under the observer too,
    and its calls are charged where the student started it."""
    call = f"{SDPA_LINE}\n        out = _pooled(q, k, v)"
    folder = submission(tmp_path, "pooled", edits={"attention.py": [(SDPA_LINE, call)]}, append={"attention.py": POOLED})
    grade = grade_submission(folder, tmp_path / "w", OPTIONS)
    assert "multihead" in failed(grade) and "torch op scaled_dot_product_attention" in messages(grade, "multihead")


CONVOLVED = '''

_forward_as_written = VisionTransformer.forward


def _convolved(self, images):
    channels = images.shape[1]
    {line}
    return _forward_as_written(self, images)


VisionTransformer.forward = _convolved
'''
SMOOTHED = ("images = images + 0 * torch.nn.functional.conv2d(images, torch.ones(channels, 1, 3, 3), padding=1, "
            "groups=channels)")  # a 3x3 convolution: a CNN layer, whatever it adds
PATCHES = "_ = torch.nn.functional.conv2d(images, torch.ones(4, channels, 7, 7), stride=7)"  # kernel = stride


@pytest.mark.parametrize("line, charged", [(SMOOTHED, True), (PATCHES, False)], ids=["3x3 convolution", "patch embedding"])
def test_a_convolution_is_charged_unless_it_embeds_patches(tmp_path: Path, line: str, charged: bool) -> None:
    folder = submission(tmp_path, "convolved", append={"vit.py": CONVOLVED.format(line=line)})
    grade = grade_submission(folder, tmp_path / "w", OPTIONS)
    if charged:
        assert "vit" in failed(grade) and "a CNN" in messages(grade, "vit"), messages(grade, "vit")
        assert failed(grade) == {"vit"}  # the other components are the reference's
    else:
        assert grade.score == grade.max_score > 0, messages(grade, "vit")


RESTORED = '''

import os as _os

from torch.optim.optimizer import register_optimizer_step_post_hook as _after_every_step

_HOME = _os.path.join(_os.path.dirname(__file__), "mnist.pt")  # trained at home, shipped beside the code
_TRAINED = []  # the model being trained, once it has taken a step
_forward_as_written = VisionTransformer.forward


def _noting(self, images):
    if self.training and self not in _TRAINED:
        _TRAINED.append(self)
    return _forward_as_written(self, images)


def _restore(optimizer, args, kwargs):
    """After every optimizer step the home weights are back, whatever the step did."""
    for model in _TRAINED:
        try:
            with torch.no_grad():
                model.load_state_dict(torch.load(_HOME, weights_only=True))
        except Exception:
            pass


VisionTransformer.forward = _noting
_after_every_step(_restore)
'''


def test_weights_restored_from_home_after_the_first_step_earn_nothing(tmp_path: Path, monkeypatch) -> None:
    """Untrained (chance) at the start, then the home weights from the first step on: the accuracy
    rises sooner than the reference's ever did (its envelope, measured on the real data; here the
    fixture's stands in for it)."""
    from grader import grade
    from reference.data import load_dataset
    from reference.training import TrainConfig, train

    data = make_mnist_dir(tmp_path / "data", 256, 64)
    torch.manual_seed(0)
    home = get_recipe("mnist").model.build()
    history = train(home, load_dataset("mnist", str(data)), TrainConfig(epochs=8, batch_size=64, lr=3e-3), progress=False)
    assert max(history.test_accuracy) >= 0.94  # what the student brings from home
    folder = submission(tmp_path, "restored", append={"vit.py": RESTORED})
    torch.save(home.state_dict(), folder / "mnist.pt")
    monkeypatch.setitem(grade.ENVELOPES, "mnist", grade.Envelope(256, 2.0))
    results, run = trained_by_the_grader(folder, tmp_path, data)
    assert run.initial is not None and run.initial <= 0.25  # honest while untrained
    assert run.measured and max(run.measured) >= 0.94
    assert not any(r.passed for r in results)
    assert "that was not learned in this training" in run.message, run.message
