"""Grade one submission: stage it, run the checks in a sandbox, train its ViT with the reference
recipe in another sandbox, and score the results with the rubric. Everything returned is plain
data; ``grader.report`` renders it."""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from grader.checks import CHECKS, CheckResult, Context, forbidden_in_model, run_checks
from grader.integrity import ForbiddenCall
from grader.rubric import load_rubric, training_check_names
from grader.sandbox import Limits, Outcome, Sandbox
from grader.submission import StagedSubmission, stage_submission
from reference.configs import get_recipe
from reference.data import DataFormatError, DataNotFoundError, load_dataset, resolve_data_dir
from reference.training import resolve_device

# What students see in `make check`: interface and shapes, never the hidden parity inputs.
VISIBLE_CHECKS = ("attention:function_shapes", "attention:single_head_interface", "multihead:interface",
                  "feedforward:interface", "residual_block:uses_its_parts", "patchify:indivisible_raises",
                  "vit:interface", "vit:gradients", "vit:attention_maps")
TRAINING_CHOICES = {"none": (), "mnist": ("mnist",), "all": ("mnist", "cifar10")}


@dataclass
class GradeOptions:
    training: str = "mnist"  # "none", "mnist" or "all"
    device: str = "auto"
    seed: int = 0
    data_dir: str | None = None
    rubric: str | None = None
    visible_only: bool = False  # make check: the visible subset, no training, no points
    time_limit: float | None = None  # training seconds per recipe; None: 600 on a CPU, 300 on a GPU
    call_seconds: float = 10.0  # per probe call; the reference needs well under 1 s
    verbose: bool = False  # say on stderr when long work (training) starts


@dataclass
class TrainingRun:
    recipe: str
    history: dict | None = None  # History.to_dict()
    attention: torch.Tensor | None = None  # (heads, N+1, N+1), first block, test image 0
    image: torch.Tensor | None = None  # uint8 (C, H, W)
    message: str = ""


@dataclass
class Grade:
    submission: str
    kind: str
    seed: int
    results: list[CheckResult]
    points: dict[str, float]  # the rubric
    notes: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # what a notebook lost
    forbidden: list[ForbiddenCall] = field(default_factory=list)
    training: list[TrainingRun] = field(default_factory=list)
    seconds: float = 0.0
    output: str = ""  # the tail of the student's stdout/stderr

    def score_of(self, result: CheckResult) -> tuple[float, float]:
        """(score, max) of one check; a skipped check is worth nothing either way."""
        if result.skipped:
            return 0.0, 0.0
        worth = self.points.get(result.name, 0.0)
        return (worth if result.passed else 0.0), worth

    @property
    def score(self) -> float:
        return sum(self.score_of(r)[0] for r in self.results)

    @property
    def max_score(self) -> float:
        return sum(self.score_of(r)[1] for r in self.results)


def grade_submission(path: Path, workdir: Path, options: GradeOptions = GradeOptions()) -> Grade:
    """Grade ``path``. Raises SubmissionError (bad input), RubricError (bad rubric) or ValueError
    (a training device this machine does not have) only."""
    start = time.perf_counter()
    points = load_rubric(options.rubric)
    if TRAINING_CHOICES[options.training] and not options.visible_only:
        resolve_device(options.device)  # before any work: the instructor's mistake, not the student's
    staged = stage_submission(Path(path), Path(workdir))
    grade = Grade(str(path), staged.kind, options.seed, [], points, notes=list(staged.notes),
                  dropped=[f"cell {d.cell}: {d.first_line} ({d.reason})" for d in staged.dropped])
    names = list(VISIBLE_CHECKS) if options.visible_only else list(CHECKS)
    limits = Limits(call_seconds=options.call_seconds)
    with Sandbox(staged, limits, seed=options.seed) as box:
        imported = box.start()
        if not imported.ok:
            grade.notes.append(f"import failed: {imported.error}")
        else:
            for module, status in (imported.value or {}).get("modules", {}).items():
                if status != "ok":
                    grade.notes.append(f"{module}.py: {status}")
        ctx = Context(box.call, options.seed)
        ctx.forbidden += imported.forbidden_calls
        grade.results = run_checks(ctx, names)
        grade.forbidden = ctx.forbidden
        grade.output = box.output()
    if not options.visible_only:
        for recipe in TRAINING_CHOICES[options.training]:
            run, results = train_submission(staged, ctx, recipe, options)
            grade.training.append(run)
            grade.results += results
        trained = set(TRAINING_CHOICES[options.training])
        for name in training_check_names():
            if name.split(":")[0].removeprefix("training_") not in trained:
                grade.results.append(CheckResult(name, False, f"not run (TRAINING={options.training})", skipped=True))
    grade.seconds = time.perf_counter() - start
    return grade


def train_submission(staged: StagedSubmission, ctx: Context, name: str, options: GradeOptions) -> tuple[TrainingRun, list[CheckResult]]:
    """Train the student's ViT with the recipe ``name``; one CheckResult per threshold."""
    recipe = get_recipe(name)
    names = [f"training_{name}:{round(100 * t)}%" for t in recipe.thresholds]
    run = TrainingRun(name)

    def verdicts(message: str, skipped: bool = False) -> list[CheckResult]:
        accuracy = max(run.history["test_accuracy"], default=0.0) if run.history else 0.0
        return [CheckResult(n, accuracy >= t, message if accuracy < t else f"reached {100 * accuracy:.2f}%", skipped)
                for n, t in zip(names, recipe.thresholds)]

    vit_ok = all(ctx.results.get(n, CheckResult(n, False)).passed for n in ("vit:interface", "vit:forward"))
    if not vit_ok:
        run.message = "not trained: the VisionTransformer failed vit:interface or vit:forward (it must run your own TransformerBlocks)"
        return run, verdicts(run.message)
    cheats = forbidden_in_model(ctx)
    if cheats:
        run.message = f"not trained: the model uses {cheats[0].api} ({cheats[0].student_file}:{cheats[0].line}), so it is not your transformer"
        return run, verdicts(run.message)
    data_dir = resolve_data_dir(options.data_dir).resolve()
    try:
        load_dataset(recipe.dataset, data_dir)  # in the grader: a clear skip when the data is absent
    except (DataNotFoundError, DataFormatError) as e:
        run.message = f"skipped: {str(e).splitlines()[0]}"
        return run, verdicts(run.message, skipped=True)

    device = resolve_device(options.device)
    gpu = device.type == "cuda"
    time_limit = options.time_limit if options.time_limit is not None else (300.0 if gpu else 600.0)
    limits = Limits(call_seconds=time_limit + TRAINING_GRACE_SECONDS, import_seconds=60,
                    memory_bytes=None if gpu else 16 << 30, threads=1 if gpu else (os.cpu_count() or 1), gpu=gpu)
    show = _progress_printer(name) if options.verbose else None
    if show:
        print(f"  training {name} on {device} (stops at {100 * recipe.target_accuracy:.0f}% or after "
              f"{recipe.train.epochs} epochs / {time_limit:.0f} s) ...", file=sys.stderr, flush=True)
    with Sandbox(staged, limits, seed=options.seed) as box:
        box.start()
        outcome = box.request("grader.probes:train_recipe", [name, str(data_dir), str(device), options.seed, time_limit],
                              on_update=show)
    value = outcome.value if outcome.ok and isinstance(outcome.value, dict) else {}
    run.history = checked_history(value.get("history") if outcome.ok else outcome.update)
    if outcome.ok and run.history is None:
        outcome = Outcome(False, error="the training run returned a malformed history", kind="protocol")
    if not outcome.ok:
        run.message = f"training failed: {outcome.error}"
        if run.history is not None and run.history["test_accuracy"]:
            run.message += (f"; before that: {100 * max(run.history['test_accuracy']):.2f}% after "
                            f"{run.history['epochs']:.2f} epochs")
        if outcome.student_traceback:
            run.message += "\n" + outcome.student_traceback
        return run, verdicts(run.message)
    attention, image = value.get("attention"), value.get("image")
    if _is_map(attention, torch.float32) and _is_map(image, torch.uint8):
        run.attention, run.image = attention, image
    reason = run.history["stop_reason"]
    best = max(run.history["test_accuracy"], default=0.0)
    run.message = (f"{100 * best:.2f}% after {run.history['epochs']:.2f} epochs, {run.history['seconds']:.1f} s "
                   f"of training on {run.history['device']} (stopped: {reason})")
    if reason == "nan loss":
        run.message += "; the loss became NaN"
    return run, verdicts(run.message)


# Wall-clock slack of a training run beyond its training time limit: loading the data, the
# evaluations (not counted as training time) and the attention map.
TRAINING_GRACE_SECONDS = 180.0
_HISTORY_LISTS = ("epoch", "test_accuracy", "train_loss", "train_seconds", "eval_seconds", "step_loss")


def checked_history(value: object) -> dict | None:
    """``value`` if it has the shape of ``History.to_dict()``, else None. It comes from the
    child, where the student's code runs, so the parent checks it before using it."""
    if not isinstance(value, dict):
        return None
    for key in _HISTORY_LISTS:
        items = value.get(key)
        if not (isinstance(items, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in items)):
            return None
    if not all(0.0 <= a <= 1.0 for a in value["test_accuracy"]):
        return None
    if not (isinstance(value.get("stop_reason"), str) and isinstance(value.get("device"), str)):
        return None
    if not all(isinstance(value.get(k), (int, float)) for k in ("epochs", "seconds")):
        return None
    return value


def _is_map(value: object, dtype: torch.dtype) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() == 3 and value.dtype == dtype


def _progress_printer(recipe: str) -> Callable[[object], None]:
    """A sandbox update callback that prints one line per evaluation of the training run."""
    def show(update: object) -> None:
        history = checked_history(update)
        if history is None or not history["test_accuracy"]:
            return
        print(f"    {recipe}: {history['epochs']:5.2f} epochs  {history['seconds']:7.1f} s  "
              f"loss {history['train_loss'][-1]:.3f}  test {100 * history['test_accuracy'][-1]:6.2f}%",
              file=sys.stderr, flush=True)
    return show
