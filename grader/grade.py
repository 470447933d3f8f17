"""Grade one submission: stage it, scan its source, run the checks in a sandbox, train its ViT
with the kit's recipe in another sandbox, measure the trained weights in a third, and score the
results with the rubric. Everything returned is plain data; ``grader.report`` renders it.

Training is split so that no process running the student's code holds both the test images and
their labels: the training child gets the training split only and sends its weights out at each
evaluation; a separate child turns weights into logits for the test images (without labels);
the grader, which alone holds the labels, computes the accuracy and answers the training child.
Before thresholds count, the weights are measured on training images and with their values
shuffled (``_plausible``): accuracy that does not come from weights which learned the task earns
nothing.
"""
from __future__ import annotations

import functools
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from grader import jail
from grader.checklib import CHARGED, CheckResult, Context
from grader.checks import STUDENT_CHECKS, TEST_CHECKS, charge_forbidden, forbidden_in_model, run_checks, training_check
from grader.course import read_course
from grader.integrity import ATTENTION, LIBRARY, ForbiddenCall
from grader.rubric import read_rubric, training_check_names
from grader.sandbox import PROBES, Limits, Outcome, Sandbox, starved_by
from grader.scan import scan_files
from grader.seeds import derive_seed
from grader.submission import StagedSubmission, stage_submission
from reference.configs import ALL_RECIPES, Recipe, get_recipe, recipes_for
from reference.data import DataFormatError, DataNotFoundError, ImageDataset, dataset_files, load_dataset, resolve_data_dir
from reference.training import resolve_device

# What --training does per recipe: train it here, or ("checkpoint") measure the weights the student submitted.
TRAINING_CHOICES = {"none": (), "mnist": ("mnist",), "all": ("mnist", "cifar10"), "checkpoint": ("mnist", "cifar10")}
# Weights whose test accuracy beats their training accuracy by more than this (and by more than
# three standard errors of the difference) were fitted to the test set: a model that learned the
# task does at least as well on its training data.
TEST_SET_MARGIN = 0.05
# Honest models shuffled score 4.5-15.8 % (30 shuffles each of an MNIST and a CIFAR-10 model, 2,000
# test images); a score above twice chance in every one of SHUFFLES draws is not from the weights.
SHUFFLES = 3
TRAIN_SAMPLE = 2000  # training images measured against the test accuracy (and test images with shuffled weights)


# What a student reads after a check the machine, not the code, left without a verdict.
UNDECIDED = ("the grading machine was too slow or too busy to decide this: not a verdict on your code; "
             "the instructor grades it again")


class _Undecided(Exception):
    """A request of the grader's judge was starved by the machine's other work: no verdict from it."""


@dataclass(frozen=True)
class Envelope:
    """How soon the reference passed a recipe's top threshold over 10 seeds, on the real data."""

    train_images: int  # the real training split's size: the figure holds for it only
    fastest_epochs: float  # the earliest epoch at which a seed passed the top threshold


# reference/results/mnist_search.md (seeds 0-9: 0.62-1.00 epochs) and cifar10-cpu_search.md (8-9 epochs,
# on both CPUs). A run that passes sooner than ENVELOPE_SHARE of that did not learn it in this training.
ENVELOPES = {"mnist": Envelope(60_000, 0.62), "cifar10-cpu": Envelope(50_000, 8.0)}
ENVELOPE_SHARE = 0.5


@dataclass(frozen=True)
class GradeOptions:
    """How to grade. ``resolved()`` turns what was asked ("auto", no data directory, no time
    limit) into what will be used, once; every stage reads that."""

    training: str = "mnist"  # "none", "mnist" or "all"
    device: str = "auto"
    seed: int = 0  # the deployment's secret: only seeds derived from it (grader.seeds) reach a child
    data_dir: str | None = None
    rubric: str | None = None
    visible_only: bool = False  # make check: the visible subset, no training, no points
    time_limit: float | None = None  # the guard on training seconds per recipe; None: each recipe's own (``limit_for``)
    call_seconds: float = 10.0  # per probe call; the reference needs well under 1 s
    threads: int | None = None  # a training child's CPU threads; None: every core (JOBS workers share them out)
    gpu_share: float | None = None  # a training child's share of the GPU's memory (JOBS workers on one GPU)
    verbose: bool = False  # say on stderr when long work (training) starts
    allow_unisolated: bool = False  # grade even where the jail cannot be had (the instructor accepts the risk)
    course: str | None = None  # the course file (grader.course): points, visibility and guards it changes

    @property
    def child_seed(self) -> int:
        """The seed every sandbox child starts its requests from: derived one way from ``seed``."""
        return derive_seed(self.seed, "child")

    @property
    def recipes(self) -> tuple[str, ...]:
        return () if self.visible_only else TRAINING_CHOICES[self.training]

    def resolved(self) -> GradeOptions:
        """The concrete device ("cpu", "cuda") and an absolute data directory. A ValueError for a
        training device this machine does not have (checked only when something will be
        trained); resolving twice changes nothing."""
        if not self.recipes:
            return replace(self, device="cpu")
        return replace(self, device=str(resolve_device(self.device)),
                       data_dir=str(resolve_data_dir(self.data_dir).resolve()))

    def recipe_for(self, exercise: str) -> Recipe:
        """The recipe that trains ``exercise`` here: the course file's choice, else the kit's (on a
        CPU, the exercise's CPU recipe where it has one)."""
        kit = get_recipe(exercise, self.device)
        return read_course(self.course).recipe_for(exercise, kit) if self.course else kit

    def limit_for(self, recipe: Recipe) -> float:
        """The guard on training seconds for ``recipe`` on the resolved device: ``time_limit`` when
        given, else the course file's guard for it, else the recipe's own, else 600 on a CPU and 300
        on a GPU. A recipe's budget is its
        epochs; the guard is several times what they need, and a run it ends on a machine too busy
        to give it a CPU is undecided (``guard_verdict``)."""
        guards = read_course(self.course).guards if self.course else {}
        for limit in (self.time_limit, guards.get(recipe.name), recipe.time_limit):
            if limit is not None:
                return limit
        return 300.0 if self.device.startswith("cuda") else 600.0


@dataclass
class TrainingRun:
    recipe: str  # the exercise ("cifar10"): its checks
    config: str = ""  # the recipe that trained it or whose model the checkpoint fits ("cifar10-cpu")
    history: dict | None = None  # History.to_dict()
    attention: torch.Tensor | None = None  # (heads, N+1, N+1), first block, test image 0
    image: torch.Tensor | None = None  # uint8 (C, H, W)
    message: str = ""
    measured: list[float] = field(default_factory=list)  # test accuracies the grader computed, in order
    initial: float | None = None  # the untrained model's accuracy on a test sample, measured by the grader
    flagged: str = ""  # why the accuracy rose faster than the reference's ever did, if it did
    wall_seconds: float = 0.0  # the training request as the grader timed it (not the run's own account)


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
    isolation: list[str] = field(default_factory=list)  # one line per isolation layer: on, or off and why
    visibility: dict[str, str] = field(default_factory=dict)  # check -> when Gradescope shows it (the rubric)
    status: str = "ok"  # "undecided" (UNDECIDED), else "timeout" or "crashed" when the student's code hit a time limit or crashed

    def score_of(self, result: CheckResult) -> tuple[float, float]:
        """(score, max) of one check; a skipped check is worth nothing either way, an undecided one
        nothing yet out of its worth (the grade is not final: ``status`` says "undecided")."""
        if result.skipped:
            return 0.0, 0.0
        worth = self.points.get(result.name, 0.0)
        return (worth if result.passed else 0.0), worth

    @property
    def undecided(self) -> list[CheckResult]:
        """The checks the grading machine was too slow or busy to decide: grade the submission again."""
        return [r for r in self.results if r.undecided and not r.skipped]

    @property
    def score(self) -> float:
        return sum(self.score_of(r)[0] for r in self.results)

    @property
    def max_score(self) -> float:
        return sum(self.score_of(r)[1] for r in self.results)


def missing_data(options: GradeOptions) -> list[str]:
    """Why each dataset that ``options`` train or measure on cannot be found (every path looked
    at); [] when all are there. Asking for training without its data is the instructor's mistake,
    to be said before grading, not a quietly smaller maximum."""
    found = []
    for dataset in sorted({get_recipe(name).dataset for name in options.recipes}):
        try:
            dataset_files(dataset, options.data_dir)
        except DataNotFoundError as e:
            found.append(str(e))
    return found


def grade_submission(path: Path, workdir: Path, options: GradeOptions = GradeOptions()) -> Grade:
    """Grade ``path``. Raises SubmissionError (bad input), RubricError (bad rubric), ValueError
    (a training device this machine does not have) or jail.IsolationError (the student's code
    cannot be isolated here, and the instructor did not accept that) only. The students' own
    check (``visible_only``) runs their code on their machine, jail or not."""
    start = time.perf_counter()
    points, visibility = read_rubric(options.rubric, options.course)
    options = options.resolved()  # before any work: a missing device is the instructor's mistake
    isolation = jail.detect()
    if not options.visible_only:
        jail.require(isolation, options.allow_unisolated)
    staged = stage_submission(Path(path), Path(workdir))
    grade = Grade(str(path), staged.kind, options.seed, [], points, notes=list(staged.notes),
                  dropped=[f"cell {d.cell}: {d.first_line} ({d.reason})" for d in staged.dropped],
                  isolation=list(isolation.layers), visibility=visibility)
    names = list(STUDENT_CHECKS if options.visible_only else TEST_CHECKS)
    limits = Limits(call_seconds=options.call_seconds)
    ctx = Context(lambda *a: Outcome(False, error="not started", kind="import"), options.seed)
    found = scanned(staged)  # read here, from the source: nothing the student's code can undo
    own_tests = [c for c in found if c.category in (ATTENTION, LIBRARY) and c.component_hint.startswith("test")]
    ctx.forbidden += [c for c in found if c not in own_tests]
    for call in own_tests:  # comparing with PyTorch in one's own test is fine; calling it from the model is not
        grade.notes.append(f"{call.api} in your test {call.function} ({call.student_file} line {call.line}): "
                           "allowed there; the grader checks at run time that the model never calls it")
    with Sandbox(staged, limits, seed=options.child_seed, isolation=isolation) as box:
        imported = box.start()
        ctx.modules = dict((imported.value or {}).get("modules", {})) if isinstance(imported.value, dict) else {}
        if not imported.ok:
            grade.notes.append(f"import failed: {imported.error}")
        else:
            for module, status in ctx.modules.items():
                if status != "ok":
                    grade.notes.append(f"{module}.py: {status}")
        ctx.call = lambda probe, *args: box.call(f"{PROBES}:{probe}", *args)
        ctx.forbidden += imported.forbidden_calls
        run_checks(ctx, names)
        grade.output = box.output()
    training: list[CheckResult] = []
    if not options.visible_only:
        for recipe in options.recipes:
            judge = checkpoint_submission if options.training == "checkpoint" else train_submission
            run, results = judge(staged, ctx, recipe, options, isolation)
            grade.training.append(run)
            training += results
        trained = set(TRAINING_CHOICES[options.training])
        for name in training_check_names(points):
            if name.split(":")[0].removeprefix("training_") not in trained:
                training.append(CheckResult(name, False, f"not run (TRAINING={options.training})", skipped=True))
    charge_forbidden(ctx)  # again: calls made while training count too
    grade.results = list(ctx.results.values()) + training
    kinds = set(ctx.failures)
    grade.status = ("undecided" if grade.undecided else "timeout" if "timeout" in kinds
                    else "crashed" if kinds & {"crash", "memory"} else "ok")
    grade.forbidden = ctx.forbidden
    grade.seconds = time.perf_counter() - start
    return grade


def scanned(staged: StagedSubmission) -> list[ForbiddenCall]:
    """The static scan of the student's own files, located as the student knows them."""
    files = {}
    for path in staged.module_files:
        try:
            files[path.name] = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
    found = []
    for call in scan_files(files):
        file, line = staged.locate(call.student_file, call.line)
        found.append(ForbiddenCall(call.api, file, line, call.function, call.component_hint, call.category))
    return found


def train_submission(staged: StagedSubmission, ctx: Context, name: str, options: GradeOptions,
                     isolation: jail.Isolation | None = None) -> tuple[TrainingRun, list[CheckResult]]:
    """Train the student's ViT with the recipe ``name``; one CheckResult per threshold, decided
    by the accuracies the grader computed itself (``TrainingRun.measured``)."""
    options = options.resolved()
    recipe = options.recipe_for(name)  # the course's, else on a CPU the exercise's CPU recipe where it has one
    names = [training_check(name, t) for t in recipe.thresholds]
    run = TrainingRun(name, recipe.name)

    def verdicts(message: str, skipped: bool = False, undecided: bool = False) -> list[CheckResult]:
        """A threshold reached is passed whatever ended the run; one not reached is failed, or
        ``undecided`` when the machine ended the run before its budget."""
        best = max(run.measured, default=0.0)
        return [CheckResult(n, best >= t, message if best < t else f"reached {100 * best:.2f}%", skipped,
                            undecided and best < t)
                for n, t in zip(names, recipe.thresholds)]

    refused = _not_a_transformer(ctx)
    if refused:
        run.message = f"not trained: {refused}"
        return run, verdicts(run.message)
    try:
        data = _dataset(recipe.dataset, options.data_dir)  # held here; the children get parts of it
    except (DataNotFoundError, DataFormatError) as e:
        run.message = "skipped: " + "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
        return run, verdicts(run.message, skipped=True)

    device, time_limit = options.device, options.limit_for(recipe)
    gpu = device.startswith("cuda")
    threads = 1 if gpu else (options.threads or os.cpu_count() or 1)
    limits = Limits(call_seconds=time_limit + TRAINING_GRACE_SECONDS, import_seconds=60,
                    memory_bytes=None if gpu else 16 << 30, tree_memory_bytes=12 << 30, threads=threads, gpu=gpu,
                    gpu_memory_fraction=options.gpu_share)
    show = options.verbose
    if show:
        which = name if recipe.name == name else f"{name} (recipe {recipe.name})"
        print(f"  training {which} on {device} (stops at {100 * recipe.target_accuracy:.0f}% or after "
              f"{recipe.train.epochs} epochs / {time_limit:.0f} s) ...", file=sys.stderr, flush=True)
    model_kwargs = asdict(recipe.model)
    stats = {"mean": list(data.mean), "std": list(data.std)}
    train_split = {"name": data.name, "train_images": data.train_images, "train_labels": data.train_labels,
                   "classes": list(data.classes), **stats}
    problems: list[str] = []
    starved: list[str] = []  # why a measurement of the judge had no verdict
    with Sandbox(staged, limits, seed=options.child_seed, isolation=isolation) as trainer, \
            Sandbox(staged, limits, seed=options.child_seed, isolation=isolation) as judge:
        judge.start()
        best_weights: dict | None = None
        asked, budget = 0, evaluation_budget(recipe)
        first = torch.randperm(len(data.test_labels), generator=torch.Generator().manual_seed(
            derive_seed(options.seed, f"initial:{name}")))[:TRAIN_SAMPLE]

        def measure(question: object) -> dict:
            """The training child's weights -> logits from the judge -> accuracy, computed and kept
            here. The child hears only continue or stop, and no more often than its recipe plans:
            the first question is the untrained model, then one per planned evaluation."""
            nonlocal best_weights, asked
            asked += 1
            if asked > budget:
                problems.append(f"the run asked for more than the {budget} evaluations its recipe plans")
                return {"stop": True}
            weights = question.get("weights") if isinstance(question, dict) else None
            try:
                if asked == 1:  # before the first step, whatever the child says
                    run.initial, why = _accuracy(judge, ctx, model_kwargs, weights, data, stats, device,
                                                 data.test_images[first], data.test_labels[first])
                    if run.initial is None:
                        problems.append(why)
                    return {"stop": run.initial is None}
                accuracy, why = _accuracy(judge, ctx, model_kwargs, weights, data, stats, device)
            except _Undecided as e:
                starved.append(str(e))
                return {"stop": True}
            if accuracy is None:
                problems.append(why)
                return {"stop": True}
            run.measured.append(accuracy)
            if accuracy >= max(run.measured):
                best_weights = weights  # the weights behind the accuracy that decides the thresholds
            if accuracy >= recipe.target_accuracy and not run.flagged:
                run.flagged = too_fast(recipe, len(data.train_labels), asked - 1, accuracy)
            return {"stop": accuracy >= recipe.target_accuracy}

        def progress(update: object) -> None:
            """One line per evaluation: the run's own epochs and loss, the grader's accuracy."""
            history = checked_history(update)
            if show and history is not None and history["train_loss"] and run.measured:
                print(f"    {name}: {history['epochs']:5.2f} epochs  {history['seconds']:7.1f} s  "
                      f"loss {history['train_loss'][-1]:.3f}  test {100 * run.measured[-1]:6.2f}% (measured by the grader)",
                      file=sys.stderr, flush=True)

        started = time.perf_counter()
        outcome = trainer.request(f"{PROBES}:train",
                                  [model_kwargs, asdict(recipe.train), train_split, device,
                                   derive_seed(options.seed, f"training:{name}"), time_limit],
                                  on_ask=measure, on_update=progress)
        run.wall_seconds = time.perf_counter() - started
        ctx.forbidden += outcome.forbidden_calls
        if not outcome.ok:
            ctx.failures.append(outcome.kind)
        value = outcome.value if outcome.ok and isinstance(outcome.value, dict) else {}
        run.history = with_measured(checked_history(value.get("history") if outcome.ok else outcome.update),
                                    run.measured)
        weights = value.get("weights")
        if outcome.ok and _is_state(weights):
            image = data.test_images[0]
            shown = judge.call(f"{PROBES}:attention_map", model_kwargs, weights, image, stats["mean"], stats["std"], device)
            ctx.forbidden += shown.forbidden_calls
            if shown.ok and _is_map(shown.value, torch.float32):
                run.attention, run.image = shown.value, image.clone()
        refused = untrained_refusal(run.initial, data.num_classes, len(first)) or run.flagged
        if best_weights is not None and not refused and not starved:
            try:
                _, refused = _plausible(judge, ctx, model_kwargs, best_weights, max(run.measured), data, stats, device,
                                        derive_seed(options.seed, f"plausible:{name}"))
            except _Undecided as e:
                starved.append(str(e))
    best = max(run.measured, default=0.0)
    during = [c for c in outcome.forbidden_calls if c.category in CHARGED]
    if during:
        run.message = f"not counted: while training, the model used {during[0].api} ({during[0].student_file}:{during[0].line})"
        return run, [CheckResult(n, False, run.message) for n in names]
    if refused:
        run.message = f"not counted: {100 * best:.2f}% measured by the grader, but {refused}"
        return run, [CheckResult(n, False, run.message) for n in names]
    if starved:
        run.message = f"undecided: measuring the weights {starved[0]} ({100 * best:.2f}% measured so far); {UNDECIDED}"
        return run, verdicts(run.message, undecided=True)
    account = "" if run.history is None else (
        f" (the run's own account: {run.history['epochs']:.2f} epochs, {run.history['seconds']:.1f} s of training on "
        f"{run.history['device']}, stopped: {run.history['stop_reason']})")
    guarded = guard_verdict(outcome, run.history, run.wall_seconds, time_limit, threads)
    if guarded is not None:
        undecided, why = guarded
        done = f"after {run.history['epochs']:.2f} of its {recipe.train.epochs:g} epochs" if run.history else "before its budget"
        run.message = (f"{'undecided' if undecided else 'too slow'}: the grader's time guard ({time_limit:g} s of "
                       f"training) ended the run {done}, at {100 * best:.2f}% measured by the grader; {why}{account}")
        return run, verdicts(run.message, undecided=undecided)
    if not outcome.ok:
        run.message = f"training failed: {outcome.error}"
        if run.measured:
            run.message += f"; before that: {100 * best:.2f}% measured by the grader"
        if problems:
            run.message += f"; the evaluation stopped the run: {problems[0]}"
        if outcome.student_traceback:
            run.message += "\n" + outcome.student_traceback
        return run, verdicts(run.message)
    run.message = (f"{100 * best:.2f}% test accuracy, measured by the grader from the trained weights, after "
                   f"{run.wall_seconds:.1f} s of training timed by the grader (its evaluations included)")
    if problems:
        run.message += f"; the evaluation stopped the run: {problems[0]}"
    if run.history is not None:
        run.message += account
        if run.history["stop_reason"] == "nan loss":
            run.message += "; the loss became NaN"
    return run, verdicts(run.message)


def guard_verdict(outcome: Outcome, history: dict | None, wall_seconds: float, guard: float,
                  threads: int) -> tuple[bool, str] | None:
    """None when the training run ended on its own (the target, its budget, a crash); when the
    grader's time ``guard`` ended it: (undecided, why). The guard is several times what the budget
    needs, so a correct model meets it only on a machine too busy to give it a CPU: undecided
    (``sandbox.starved_by``). A run that had the CPU and still ran out is too slow: failed."""
    stopped = outcome.ok and history is not None and history["stop_reason"] == "time limit" and wall_seconds >= guard
    if not stopped and outcome.kind != "starved":  # a "timeout" is one step that hung: a failure of its own
        return None
    if outcome.cpu is None:
        return True, f"the grader cannot read how busy the machine was here; {UNDECIDED}"
    running, waiting = outcome.cpu
    if outcome.kind == "starved" or starved_by(outcome.cpu, wall_seconds, threads):
        return True, (f"it had a CPU for {running:.0f} s and waited {waiting:.0f} s for one in {wall_seconds:.0f} s; "
                      f"{UNDECIDED}")
    return False, (f"the machine gave it the CPU ({running:.0f} s on a CPU in {wall_seconds:.0f} s, {waiting:.0f} s "
                   "waiting for one): the model trains far more slowly than the kit's recipe expects (the reference "
                   "needs a small part of the guard)")


def evaluation_budget(recipe: Recipe) -> int:
    """How often a training run of ``recipe`` may have its weights measured: once untrained, at each
    evaluation its schedule plans, and once more where the time limit ends it between two."""
    return 2 + math.ceil(recipe.train.epochs * recipe.train.evals_per_epoch)


def chance_ceiling(classes: int, n: int) -> float:
    """The highest accuracy on ``n`` images that a model guessing at random reaches by chance (20 %
    for 10 classes; honest models with shuffled weights score 4.5-15.8 %)."""
    chance = 1 / classes
    return chance + max(chance, 4 * math.sqrt(chance * (1 - chance) / n))


def untrained_refusal(initial: float | None, classes: int, n: int) -> str:
    """Why training points are refused because the model knew the task before training ("" if not)."""
    if initial is None or initial <= chance_ceiling(classes, n):
        return ""
    return (f"before its first training step the model already scored {100 * initial:.2f}% (chance: "
            f"{100 / classes:.0f}%): its accuracy does not come from the training the grader ran "
            "(the instructor can look into it)")


def too_fast(recipe: Recipe, train_images: int, evaluation: int, accuracy: float) -> str:
    """Why passing the top threshold at the ``evaluation``-th planned evaluation is sooner than the
    reference ever did (its ENVELOPES figure, on the real data only), or ""."""
    envelope = ENVELOPES.get(recipe.name)
    if envelope is None or train_images != envelope.train_images or recipe.thresholds != ALL_RECIPES[recipe.name].thresholds:
        return ""  # no figure for this recipe, these data or the thresholds a course set
    epochs = evaluation / recipe.train.evals_per_epoch  # at most this much training had happened
    if epochs >= ENVELOPE_SHARE * envelope.fastest_epochs:
        return ""
    return (f"it reached {100 * accuracy:.2f}% after at most {epochs:.2f} epochs, where the reference needed at "
            f"least {envelope.fastest_epochs:g} over 10 seeds: that was not learned in this training "
            "(the instructor can look into it)")


def with_measured(history: dict | None, measured: list[float]) -> dict | None:
    """The run's own account with the grader's accuracies in place of its placeholders (the child
    never learns an accuracy); None when the two do not line up, one evaluation each."""
    if history is None or len(history["test_accuracy"]) != len(measured):
        return None
    return {**history, "test_accuracy": list(measured)}


def _accuracy(judge: Sandbox, ctx: Context, model_kwargs: dict, weights: object, data: ImageDataset, stats: dict,
              device: str, images: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> tuple[float | None, str]:
    """Accuracy of ``weights`` on ``images`` (default: the test split): the judge child returns
    logits for the images without their labels; the labels never leave this process."""
    if not _is_state(weights):
        return None, "the training run sent something that is not a state_dict"
    images, labels = (data.test_images, data.test_labels) if images is None else (images, labels)
    outcome = judge.call(f"{PROBES}:logits", model_kwargs, weights, images, stats["mean"], stats["std"], device)
    ctx.forbidden += outcome.forbidden_calls
    if outcome.kind == "starved":
        raise _Undecided(outcome.error)
    if not outcome.ok:
        return None, f"evaluating the weights failed: {outcome.error}"
    logits, n = outcome.value, len(labels)
    if not (isinstance(logits, torch.Tensor) and logits.dim() == 2 and logits.shape[0] == n
            and logits.shape[1] == data.num_classes and logits.dtype.is_floating_point):
        return None, f"the model gave logits of shape {tuple(getattr(logits, 'shape', ()))}, expected ({n}, {data.num_classes})"
    return float((logits.argmax(-1) == labels).double().mean()), ""


def _plausible(judge: Sandbox, ctx: Context, model_kwargs: dict, weights: dict, accuracy: float, data: ImageDataset,
               stats: dict, device: str, seed: int) -> tuple[float | None, str]:
    """Whether a test ``accuracy`` the judge measured for ``weights`` comes from those weights having
    learned the task: (the accuracy on a sample of training images, "") or (..., why not).

    Two measurements, both on samples drawn with the grader's seed: the same weights on training
    images (a model that learned the task does at least as well there, so doing clearly better on
    the test set means the predictions know it), and the weights shuffled within each tensor on test
    images (predictions that come from the weights fall to chance; a hand-written or hidden
    classifier, or memorised answers, do not). First of all, the same images must get the same
    logits at every batch size (``_batch_sizes_agree``)."""
    why = _batch_sizes_agree(judge, ctx, model_kwargs, weights, data, stats, device)
    if why:
        return None, why
    generator = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(data.train_labels), generator=generator)[:TRAIN_SAMPLE]
    train_accuracy, why = _accuracy(judge, ctx, model_kwargs, weights, data, stats, device,
                                    data.train_images[pick], data.train_labels[pick])
    if train_accuracy is None:
        return None, f"measuring it on training images failed: {why}"
    n_test, n_train = len(data.test_labels), len(pick)
    noise = 3 * math.sqrt(accuracy * (1 - accuracy) / n_test + train_accuracy * (1 - train_accuracy) / n_train)
    if accuracy - train_accuracy > max(TEST_SET_MARGIN, noise):  # beyond what small samples explain
        return train_accuracy, (f"only {100 * train_accuracy:.2f}% on training images: predictions that do better on the "
                                "test set than on images like those the model learned from were fitted to the test set "
                                "(the instructor can look into it)")
    pick = torch.randperm(len(data.test_labels), generator=generator)[:TRAIN_SAMPLE]
    chance, ceiling = 1 / data.num_classes, chance_ceiling(data.num_classes, len(pick))
    scores = []
    for _ in range(SHUFFLES):  # refused only if every shuffle scores above the ceiling
        shuffled = {k: _shuffled(v, generator) for k, v in weights.items()}
        score, why = _accuracy(judge, ctx, model_kwargs, shuffled, data, stats, device,
                               data.test_images[pick], data.test_labels[pick])
        if score is None:
            return train_accuracy, f"with its weights shuffled the model could not be measured ({why})"
        if score <= ceiling:
            return train_accuracy, ""
        scores.append(score)
    return train_accuracy, (f"with its weights shuffled it still scores {100 * min(scores):.2f}% (the lowest of "
                            f"{SHUFFLES} shuffles; chance: {100 * chance:.0f}%): its predictions do not come from its "
                            "weights, so they are not its transformer's (the instructor can look into it)")


# Batch sizes the same images are measured at: one image, the checks' sizes, training's and evaluation's.
BATCH_SIZES = (1, 3, 64, 128, 1000)
BATCH_IMAGES = 12  # images measured one (and three) at a time


def _batch_sizes_agree(judge: Sandbox, ctx: Context, model_kwargs: dict, weights: dict, data: ImageDataset,
                       stats: dict, device: str) -> str:
    """"" when the model gives the same test images the same logits at every size of BATCH_SIZES,
    else why not: a model that behaves one way on the checks' small batches and another on the
    grader's large ones (a CNN behind the transformer) is not the model that was checked."""
    images = data.test_images[:max(BATCH_SIZES)]
    rows: dict[int, torch.Tensor] = {}
    for size in sorted(BATCH_SIZES, reverse=True):
        some = images if size > BATCH_IMAGES else images[:BATCH_IMAGES]
        outcome = judge.call(f"{PROBES}:logits", model_kwargs, weights, some, stats["mean"], stats["std"], device, size)
        ctx.forbidden += outcome.forbidden_calls
        if outcome.kind == "starved":
            raise _Undecided(outcome.error)
        if not outcome.ok or not isinstance(outcome.value, torch.Tensor) or tuple(outcome.value.shape[:1]) != (len(some),):
            return f"measuring it at batch size {size} failed: {outcome.error or 'logits of the wrong shape'}"
        rows[size] = outcome.value.double()
    full = rows[max(BATCH_SIZES)]
    for size, got in rows.items():
        expected = full[:len(got)]
        if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-2, atol=1e-2):
            gap = (got - expected).abs().max().item() if got.shape == expected.shape else float("inf")
            return (f"the same test images got other logits at batch size {size} than at {max(BATCH_SIZES)} "
                    f"(largest difference {gap:.3g}): the model the grader measured is not the one its checks saw "
                    "(the instructor can look into it)")
    return ""


def _shuffled(tensor: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The values of a float tensor in a random order (same shape, same values); other tensors as they are."""
    if not tensor.is_floating_point() or tensor.numel() < 2:
        return tensor
    flat = tensor.reshape(-1)
    return flat[torch.randperm(flat.numel(), generator=generator)].reshape(tensor.shape)


def _not_a_transformer(ctx: Context) -> str | None:
    """Why the student's ViT cannot earn training points, when it cannot: it is not built from the
    student's TransformerBlocks and run through them (what the ViT checks' probe saw), or it uses a
    forbidden call. A ViT that runs them but computes something else than specified is trained:
    vit:forward has charged that mistake, and the accuracy its model reaches is its own."""
    from grader.checklib import RUNS_OWN_BLOCKS  # here: this function is all of grade.py this change touches

    runs = ctx.cache.get(RUNS_OWN_BLOCKS)
    if runs is None:
        return "the VisionTransformer could not be built and called (see vit:interface)"
    if not runs:
        return "the VisionTransformer does not run your own TransformerBlocks, each of them (see vit:interface)"
    cheats = forbidden_in_model(ctx)
    if cheats:
        return f"the model uses {cheats[0].api} ({cheats[0].student_file}:{cheats[0].line}), so it is not your transformer"
    return None


def checkpoint_submission(staged: StagedSubmission, ctx: Context, name: str, options: GradeOptions,
                          isolation: jail.Isolation | None = None) -> tuple[TrainingRun, list[CheckResult]]:
    """Measure the weights the student trained and submitted (``<recipe>.pt``) in the student's own
    VisionTransformer with the recipe's configuration: test accuracy (labels kept here) decides
    the thresholds; weights doing clearly better on the test set than on training images earn none."""
    recipe = replace(get_recipe(name), thresholds=options.recipe_for(name).thresholds)  # the course's thresholds
    names = [training_check(name, t) for t in recipe.thresholds]
    run = TrainingRun(name)
    file = f"{name}.pt"

    def verdicts(message: str, accuracy: float = 0.0, skipped: bool = False, undecided: bool = False) -> list[CheckResult]:
        return [CheckResult(n, accuracy >= t, message if accuracy < t else f"reached {100 * accuracy:.2f}%: {message}", skipped,
                            undecided)
                for n, t in zip(names, recipe.thresholds)]

    refused = _not_a_transformer(ctx)
    path = staged.checkpoints.get(name)
    if refused or path is None:
        run.message = f"{file} not graded: {refused}" if refused else (
            f"no {file} in the submission: save the trained weights with torch.save(model.state_dict(), '{file}') "
            "(the notebook does) and submit the file next to your modules")
        return run, verdicts(run.message)
    options = options.resolved()
    try:
        data = _dataset(recipe.dataset, options.data_dir)
    except (DataNotFoundError, DataFormatError) as e:
        run.message = f"skipped: {str(e).splitlines()[0]}"
        return run, verdicts(run.message, skipped=True)
    gpu = options.device.startswith("cuda")
    limits = Limits(call_seconds=300.0, import_seconds=60, memory_bytes=None if gpu else 16 << 30,
                    tree_memory_bytes=12 << 30, threads=1 if gpu else (options.threads or os.cpu_count() or 1), gpu=gpu,
                    gpu_memory_fraction=options.gpu_share)
    candidates = recipes_for(name)  # the weights may come from any recipe of the exercise (GPU or CPU)
    stats = {"mean": list(data.mean), "std": list(data.std)}
    started, before = time.perf_counter(), len(ctx.forbidden)
    with Sandbox(staged, limits, seed=options.child_seed, isolation=isolation) as judge:
        judge.start()
        loaded = judge.call(f"{PROBES}:checkpoint", [asdict(r.model) for r in candidates], str(path))
        ctx.forbidden += loaded.forbidden_calls
        weights, fits, why = _checkpoint_weights(loaded, file, len(candidates))
        accuracy = train_accuracy = None
        refused = starved = ""
        try:
            if loaded.kind == "starved":
                raise _Undecided(loaded.error)
            if weights is not None:
                run.config = candidates[fits].name
                model_kwargs = asdict(candidates[fits].model)
                accuracy, why = _accuracy(judge, ctx, model_kwargs, weights, data, stats, options.device)
            if accuracy is not None:
                train_accuracy, refused = _plausible(judge, ctx, model_kwargs, weights, accuracy, data, stats,
                                                     options.device, derive_seed(options.seed, f"plausible:{name}"))
        except _Undecided as e:
            starved, train_accuracy = str(e), None
        if train_accuracy is not None and not refused:
            shown = judge.call(f"{PROBES}:attention_map", model_kwargs, weights, data.test_images[0], stats["mean"],
                               stats["std"], options.device)
            ctx.forbidden += shown.forbidden_calls
            if shown.ok and _is_map(shown.value, torch.float32):
                run.attention, run.image = shown.value, data.test_images[0].clone()
    run.wall_seconds = time.perf_counter() - started
    during = [c for c in ctx.forbidden[before:] if c.category in CHARGED]
    if during:
        run.message = f"not counted: the model used {during[0].api} ({during[0].student_file}:{during[0].line})"
        return run, [CheckResult(n, False, run.message) for n in names]
    if starved:
        run.message = f"undecided: measuring {file} {starved}; {UNDECIDED}"
        return run, verdicts(run.message, undecided=True)
    if accuracy is None:
        run.message = f"{file} not graded: {why}"
        return run, verdicts(run.message)
    run.measured = [accuracy]
    if refused:
        run.message = f"{file} not counted: {100 * accuracy:.2f}% on the test set, but {refused}"
        return run, [CheckResult(n, False, run.message) for n in names]
    run.message = (f"{100 * accuracy:.2f}% test accuracy, measured by the grader from {file} (the {run.config} model): "
                   "the model was trained by the "
                   f"student, not by the grader ({100 * train_accuracy:.2f}% on {min(TRAIN_SAMPLE, len(data.train_labels))} "
                   "training images)")
    return run, verdicts(run.message, accuracy)


def _checkpoint_weights(loaded: Outcome, file: str, configurations: int) -> tuple[dict | None, int, str]:
    """The submitted state_dict and the index of the first configuration of the student's model it
    fits exactly; else None and why."""
    how = f"save model.state_dict() with torch.save(model.state_dict(), '{file}')"
    if not loaded.ok:
        return None, 0, f"it cannot be loaded with torch.load(weights_only=True) ({loaded.error.splitlines()[0]}): {how}"
    value = loaded.value if isinstance(loaded.value, dict) else {}
    expected = value.get("expected")
    if not (isinstance(expected, list) and len(expected) == configurations and all(
            isinstance(e, dict) and all(isinstance(v, list) for v in e.values()) for e in expected)):
        return None, 0, "the model's parameters could not be listed"
    state = value.get("state")
    if not _is_state(state):
        found = value.get("found", "something else")
        keys = value.get("keys") if isinstance(value.get("keys"), list) else []
        return None, 0, f"it holds a {found}{' with keys ' + ', '.join(map(str, keys)) if keys else ''}, not a state_dict: {how}"
    shapes = {k: list(v.shape) for k, v in state.items()}
    fits = next((i for i, e in enumerate(expected) if e == shapes), None)
    if fits is not None:
        return state, fits, ""
    # Measured against the configuration the student meant: the one it misses least.
    missing, extra, wrong = min((_misfit(shapes, e) for e in expected), key=lambda m: sum(map(len, m)))
    problems = [f"missing keys: {', '.join(missing[:6])}" if missing else "",
                f"unexpected keys: {', '.join(extra[:6])}" if extra else "",
                f"wrong shapes: {'; '.join(wrong[:4])}" if wrong else ""]
    return None, 0, ("its weights do not fit your VisionTransformer built with the recipe's configuration ("
                     + "; ".join(p for p in problems if p) + "): train the model the notebook builds and save its state_dict")


def _misfit(shapes: dict[str, list[int]], expected: dict[str, list[int]]) -> tuple[list[str], list[str], list[str]]:
    """What keeps weights of ``shapes`` from loading into a model whose parameters are ``expected``:
    the missing keys, the unexpected keys, the wrong shapes."""
    return ([k for k in expected if k not in shapes], [k for k in shapes if k not in expected],
            [f"{k} {shapes[k]} (expected {expected[k]})" for k in expected if k in shapes and shapes[k] != expected[k]])


@functools.lru_cache(maxsize=2)
def _dataset(name: str, data_dir: str) -> ImageDataset:
    """Loaded once per grading process: a class's batch shares it (the children get copies)."""
    return load_dataset(name, data_dir)


def _is_state(value: object) -> bool:
    return isinstance(value, dict) and bool(value) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


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
