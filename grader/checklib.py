"""What a hidden check is written with: the ``check`` decorator that enters it in the table
(its name, points, who sees it), the ``Context`` that talks to the sandbox, and the comparisons.

A check is a pytest test function in ``grader/hidden/`` that takes the ``ctx`` fixture: it draws
its inputs from ``ctx``'s seeded generator, sends them to the student's code with ``ctx.run`` and
compares the raw outputs that come back with values computed here (PyTorch's own layers with the
student's weights copied in, or a composite's specification put together from what its own
sub-modules returned). It fails by raising ``CheckFailed`` (``expect``, ``compare``) with a
message the student can act on. Nothing the child says is a verdict.
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from torch import Tensor, nn

# Relative imports of modules that need only torch: the handout carries this file, with them, to
# run the students' checks in its visible tests (course.visible_checks).
from .integrity import ATTENTION, CNN, DYNAMIC, LIBRARY, REFERENCE, ForbiddenCall
from .seeds import derive_seed

# The interface name a forbidden call happened in -> the component charged for it.
OWNER = {
    "scaled_dot_product_attention": "attention", "ScaledDotProductAttention": "attention",
    "MultiHeadSelfAttention": "multihead", "FeedForwardBlock": "feedforward",
    "SelfAttentionBlock": "residual_block", "TransformerBlock": "transformer_block",
    "patchify": "patchify", "VisionTransformer": "vit",
}
FILE_OWNER = {"attention.py": "attention", "blocks.py": "transformer_block", "vit.py": "vit"}
# The module (of the template's layout) that defines each component.
COMPONENT_MODULE = {"attention": "attention", "multihead": "attention", "feedforward": "blocks",
                    "residual_block": "blocks", "transformer_block": "blocks", "patchify": "vit", "vit": "vit"}
CHARGED = (ATTENTION, CNN, LIBRARY, REFERENCE, DYNAMIC)  # categories of forbidden calls that cost points
GELU_FORMS = ("none", "tanh")  # F.gelu's exact form and its tanh approximation: both are GELU
ATOL = RTOL = 1e-4  # float32 with a different but correct order of operations stays well inside


# ctx.cache: whether every VisionTransformer the checks built is an nn.Sequential of the student's
# TransformerBlocks that its forward runs, each of them (the training gate reads it)
RUNS_OWN_BLOCKS = "vit:runs_own_blocks"
PACKAGE_NAME = "student_submission"  # what a submission is imported as (grader.submission stages it so)
VISIBILITIES = ("visible", "hidden", "after_due_date", "after_published")  # when Gradescope shows a check


@dataclass(frozen=True)
class Check:
    """One row of the table: a check, what it is worth and who sees it."""

    name: str  # "component:check"
    points: float
    student: bool = False  # also in `make check`, the students' quick check
    visibility: str = "visible"  # when Gradescope shows it to the student (VISIBILITIES)
    description: str = ""  # what it tests, in one line (the test's docstring)
    function: Callable[..., None] | None = None  # the pytest test; None for the training checks

    @property
    def component(self) -> str:
        return self.name.split(":", 1)[0]


TABLE: dict[str, Check] = {}  # every hidden check, in the order the modules define them


def check(name: str, points: float, *, student: bool = False, visibility: str = "visible") -> Callable:
    """Enter the decorated test in the table as the check ``name`` ("component:check")."""
    if ":" not in name or visibility not in VISIBILITIES or points < 0:
        raise ValueError(f"check {name!r}: the name must be component:check, points >= 0, visibility in {VISIBILITIES}")

    def enter(test: Callable[..., None]) -> Callable[..., None]:
        known = TABLE.get(name)
        if known is not None and known.function is not None and known.function.__qualname__ != test.__qualname__:
            raise ValueError(f"two checks named {name!r}: {known.function.__qualname__} and {test.__qualname__}")
        description = ((test.__doc__ or "").strip().splitlines() or [""])[0]
        TABLE[name] = Check(name, float(points), student, visibility, description, test)
        test.check_name = name  # type: ignore[attr-defined]  # how the runner finds a collected test's row
        return test

    return enter


@dataclass
class Outcome:
    """What one call of a probe (or the import) did, as ``Context.run`` reads it (``grader.sandbox``
    makes them for a child, ``grader.local`` in this process). ``value`` is plain data; ``error`` is one line."""

    ok: bool
    value: object | None = None
    error: str | None = None
    kind: str | None = None  # one of KINDS when not ok
    student_traceback: str = ""  # frames in the student's files, then the exception line
    forbidden_calls: list[ForbiddenCall] = field(default_factory=list)
    output: str = ""  # the tail of the student's stdout/stderr during this request
    update: object | None = None  # the last value the probe sent with worker.report(), also after a failure
    cpu: tuple[float, float] | None = None  # the worker's seconds (on a CPU, waiting for one) during the request


class CheckFailed(Exception):
    """A check's verdict: the message says what was wrong."""


class CheckUndecided(Exception):
    """No verdict: the grading machine was too busy for the student's code to finish in time
    (``sandbox`` kind "starved"). Not a CheckFailed, so that no check takes it for a wrong answer."""


@dataclass
class CheckResult:
    name: str  # "component:check"
    passed: bool
    message: str = ""
    skipped: bool = False  # not run (e.g. no data for training); worth no points either way
    undecided: bool = False  # the machine was too slow or busy to decide: not passed, to be graded again

    @property
    def component(self) -> str:
        return self.name.split(":", 1)[0]


@dataclass
class Context:
    """What a check needs: a way to call probes, a seeded generator, and what is known so far."""

    call: Callable[..., Any]  # call(probe, *args) -> Outcome: a probe of grader.probes by its name
    seed: int  # the deployment's secret; the generator draws with seeds derived from it
    generator: torch.Generator = field(init=False)
    forbidden: list[ForbiddenCall] = field(default_factory=list)
    results: dict[str, CheckResult] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)  # probe values shared by several checks
    modules: dict[str, str] = field(default_factory=dict)  # the submission's module -> "ok" or why its import failed
    failures: list[str] = field(default_factory=list)  # the kind of every failed call (sandbox.KINDS)
    # checks ``passed`` may decide on demand when their component has no verdict yet (a selection
    # of checks that leaves out what a later one builds on, e.g. one file of the handout's tests)
    pending: dict[str, Callable[..., None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.generator = torch.Generator()
        self.reseed("checks")

    def reseed(self, purpose: str) -> None:
        """Draw from here on with the seed of ``purpose`` (each check its own, ``"check:<name>"``):
        derived one way from the secret ``seed``, so that inputs the child sees reveal nothing of it."""
        self.generator.manual_seed(derive_seed(self.seed, purpose))

    def randn(self, *shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
        return torch.randn(*shape, generator=self.generator, dtype=dtype)

    def mask(self, t_q: int, t_k: int) -> Tensor:
        mask = torch.rand(t_q, t_k, generator=self.generator) > 0.4
        mask[:, 0] = True  # a fully masked row has no defined softmax
        return mask

    def run(self, probe: str, *args: Any) -> Any:
        """The probe's value, or CheckFailed with the child's error and the student's traceback."""
        outcome = self.call(probe, *args)
        self.forbidden += outcome.forbidden_calls
        if not outcome.ok:
            self.failures.append(outcome.kind)
            if outcome.kind == "starved":
                raise CheckUndecided(outcome.error)
            trace = f"\n{outcome.student_traceback}" if outcome.student_traceback else ""
            raise CheckFailed(f"{outcome.error}{trace}")
        return outcome.value

    def import_failure(self, component: str) -> str | None:
        """Why the module defining ``component`` could not be imported, when it could not: in the
        template's layout its own module; in one file (a .py, a notebook), that file."""
        failed = {m: why for m, why in self.modules.items() if why != "ok"}
        module = COMPONENT_MODULE.get(component)
        if module in self.modules:
            return None if module not in failed else f"{module}.py could not be imported: {failed[module]}"
        return next((f"{m}.py could not be imported: {why}" for m, why in failed.items()), None)

    def passed(self, component: str) -> bool:
        """Whether every check of ``component`` run so far passed, and its code used no library attention;
        CheckUndecided when one of them has no verdict."""
        if not any(r.component == component for r in self.results.values()):
            for name, function in list(self.pending.items()):
                if name.split(":", 1)[0] == component and name not in self.results:
                    self.decide(name, function)
        own = [r for r in self.results.values() if r.component == component and not r.skipped]
        if any(r.undecided for r in own):  # a verdict built on no verdict is none either
            raise CheckUndecided(f"not decided: it builds on {component}, which the busy grading machine left undecided")
        charged = any(forbidden_owner(c) == component for c in self.forbidden if c.category in CHARGED)
        return bool(own) and all(r.passed for r in own) and not charged

    def decide(self, name: str, function: Callable[..., None]) -> CheckResult:
        """Run the check ``name`` now, on its own inputs, and record its verdict; the generator of
        the check that asked is left where it was."""
        state = self.generator.get_state()
        self.reseed(f"check:{name}")
        try:
            function(self)
            error = None
        except Exception as e:  # noqa: BLE001 -- a check's failure, as the runner would record it
            error = e
        finally:
            self.generator.set_state(state)
        self.record(name, error)
        return self.results[name]

    def record(self, name: str, error: BaseException | None) -> None:
        """The verdict of a check that ran: passed, or failed (undecided) with what the student reads;
        a module that could not be imported is named as the cause."""
        result = CheckResult(name, error is None, failure_message(error), undecided=isinstance(error, CheckUndecided))
        failure = self.import_failure(result.component)
        if failure and not result.passed and not result.undecided:  # the cause, not "does not define 'X'"
            result = CheckResult(name, False, f"{failure} (so this check could not run)")
        self.results[name] = result


def compare(actual: Any, expected: Tensor, what: str, atol: float = ATOL, rtol: float = RTOL,
            same_nan: bool = False) -> None:
    """CheckFailed unless ``actual`` is a tensor of ``expected``'s shape and values. With
    ``same_nan``, NaN is accepted where ``expected`` has NaN too (a spec built from the student's
    own function inherits its NaN)."""
    if not isinstance(actual, Tensor):
        raise CheckFailed(f"{what}: expected a tensor, got {type(actual).__name__}")
    if tuple(actual.shape) != tuple(expected.shape):
        raise CheckFailed(f"{what}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}")
    actual, expected = actual.detach().double(), expected.detach().double()
    if same_nan:
        both = torch.isnan(actual) & torch.isnan(expected)
        actual, expected = actual.masked_fill(both, 0.0), expected.masked_fill(both, 0.0)
    if not torch.isfinite(actual).all():
        raise CheckFailed(f"{what}: contains NaN or infinity")
    diff = (actual - expected).abs()
    tolerance = atol + rtol * expected.abs()
    if (diff > tolerance).any():  # the element furthest outside its tolerance, not merely the largest difference
        flat = int((diff - tolerance).argmax())
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape))
        raise CheckFailed(f"{what}: at index {index} got {actual[index].item():.5g}, expected "
                          f"{expected[index].item():.5g} (difference {diff[index].item():.3g}, tolerance "
                          f"{tolerance[index].item():.3g} = {atol:g} + {rtol:g} x |expected|)")


def compare_naming(actual: Any, expected: Tensor, mistakes: dict[str, Any], what: str) -> None:
    """``compare``, and when ``actual`` is not ``expected``, the known mistake it matches is named
    instead of an index: ``mistakes`` maps each cause (what is wrong and what to do) to what the
    student's code would give with that mistake, computed here from the same inputs and weights
    (or a function computing it, for a value the child may not have sent)."""
    try:
        compare(actual, expected, what)
    except CheckFailed:
        for cause, wrong in mistakes.items():
            try:
                if close(actual, wrong() if callable(wrong) else wrong):
                    raise CheckFailed(cause) from None
            except (KeyError, TypeError, RuntimeError, IndexError):  # the child gave no such value, or a malformed one
                continue
        raise


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def expect_linear(info: Any, name: str, in_features: int, out_features: int, bias: bool, role: str = "") -> None:
    """CheckFailed unless the module's attribute ``name`` (described by the child: a dict for an
    nn.Linear, else its type's name or "missing") is nn.Linear(in_features, out_features, bias)."""
    wanted = f"`self.{name} = nn.Linear({in_features}, {out_features}, bias={bias})`"
    said = f"the interface's {role or f'`{name}`'} is {wanted}"
    expect(info != "missing", f"{said}; found no attribute `{name}` (an attribute, or a property returning the layer forward uses)")
    expect(isinstance(info, dict), f"{said}; found a{'n' if str(info)[:1] in 'AEIOU' else ''} {info}")
    got = (info["in"], info["out"], info["bias"])
    expect(got == (in_features, out_features, bias), f"{said}; found in={got[0]}, out={got[1]}, bias={got[2]}")


def is_student_class(classes: Any, name: str) -> bool:
    """Whether a module described by the child (its classes, most derived first) is, or derives
    from, the submission's own class ``name``."""
    return isinstance(classes, list) and any(
        isinstance(c, list) and len(c) == 2 and str(c[0]).startswith(PACKAGE_NAME + ".") and c[1] == name
        for c in classes)


EPS_RANGE = (1e-12, 1e-5)  # a LayerNorm's eps as Hugging Face (1e-12), timm (1e-6) and PyTorch (1e-5) write it


@dataclass(frozen=True)
class LayerNormFit:
    """What a module computes when it is a LayerNorm over the last axis: its per-feature scale and
    shift, and the eps under the square root."""

    weight: Tensor  # (D,)
    bias: Tensor  # (D,)
    eps: float


def layer_norm_affine(x: Tensor, out: Any, eps: float | None = None) -> LayerNormFit | None:
    """The LayerNorm over the last axis that ``out`` is of ``x``, whatever the module's class or
    parameter names; else None. The per-feature affine map is fitted by least squares from the
    module's own output; ``eps`` is the module's own (read from an nn.LayerNorm) or, when None,
    fitted from the rows of small variance. Either way it must lie in EPS_RANGE."""
    if not isinstance(out, Tensor) or tuple(out.shape) != tuple(x.shape) or not out.dtype.is_floating_point:
        return None
    x2 = x.detach().double().reshape(-1, x.shape[-1])  # (N, D)
    y = out.detach().double().reshape(-1, x.shape[-1])  # (N, D)
    centred, var = x2 - x2.mean(-1, keepdim=True), x2.var(-1, unbiased=False, keepdim=True)  # (N, D), (N, 1)

    def affine(e: float, rows: Tensor) -> tuple[Tensor, Tensor]:
        z = centred[rows] / (var[rows] + e).sqrt()  # (n, D)
        zc, yc = z - z.mean(0), y[rows] - y[rows].mean(0)
        weight = (zc * yc).sum(0) / (zc * zc).sum(0).clamp_min(1e-12)
        return weight, y[rows].mean(0) - weight * z.mean(0)

    every = torch.ones(len(y), dtype=torch.bool)
    if eps is None:  # y - bias = weight * centred / sqrt(var + eps): each row's scale gives var + eps
        eps, rows = EPS_RANGE[1], var[:, 0] >= 0.1 * var.max()  # first the widest rows: there eps hardly shows
        smallest = var[:, 0] <= var[:, 0].quantile(0.25)  # where eps shows; elsewhere rounding dominates
        for _ in range(3):  # each pass refines the affine map with a better eps, and the eps with it
            weight, bias = affine(eps, rows)
            scaled = weight * centred  # (N, D)
            inverse_std = (scaled * (y - bias)).sum(-1) / (scaled * scaled).sum(-1).clamp_min(1e-300)  # (N,)
            estimates = inverse_std.clamp_min(1e-300).pow(-2) - var[:, 0]
            eps, rows = float(estimates[smallest].median().clamp(*EPS_RANGE)), every
    if not EPS_RANGE[0] <= eps <= EPS_RANGE[1]:
        return None
    weight, bias = affine(eps, every)
    if not close(y, centred / (var + eps).sqrt() * weight + bias):
        return None
    return LayerNormFit(weight.float(), bias.float(), eps)


def compare_any(actual: Any, expected: dict[str, Tensor], what: str) -> str:
    """``compare`` against each accepted form (e.g. exact and tanh GELU); the name of the closest
    form that matches, else the failure against the first form."""
    passing, first = [], None
    for name, value in expected.items():
        try:
            compare(actual, value, what)
            passing.append(((actual.detach().double() - value.detach().double()).abs().max().item(), name))
        except CheckFailed as e:
            first = first or e
    if not passing:
        raise first  # type: ignore[misc]
    return min(passing)[1]


def class_name(classes: Any) -> str:
    return classes[0][1] if isinstance(classes, list) and classes and isinstance(classes[0], list) else str(classes)


def copy_to_mha(state: dict[str, Tensor], d_model: int, num_heads: int, bias: bool) -> nn.MultiheadAttention:
    mha = nn.MultiheadAttention(d_model, num_heads, bias=bias, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([state[f"{p}.weight"] for p in ("w_q", "w_k", "w_v")]))
        mha.out_proj.weight.copy_(state["w_o.weight"])
        if bias:
            mha.in_proj_bias.copy_(torch.cat([state[f"{p}.bias"] for p in ("w_q", "w_k", "w_v")]))
            mha.out_proj.bias.copy_(state["w_o.bias"])
    return mha.eval()


def need(state: dict[str, Tensor], *keys: str) -> None:
    missing = [k for k in keys if k not in state]
    expect(not missing, f"parameters not found where the interface puts them: {', '.join(missing)} (the interface's "
                        "attributes, or properties returning the layers forward uses; a fused projection is not the interface)")


def close(actual: Any, expected: Tensor, same_nan: bool = False) -> bool:
    """Whether ``compare`` would pass."""
    try:
        compare(actual, expected, "", same_nan=same_nan)
    except CheckFailed:
        return False
    return True


def check_dropout(ctx: Context, name: str, args: list, x: Tensor) -> None:
    """The module ``name(*args)``: deterministic in eval mode, random in train mode (its dropout is applied)."""
    value = ctx.run("dropout_modes", name, args, x)
    compare(value["eval"][0], value["eval"][1], "eval mode must be deterministic (dropout off)")
    expect(not torch.allclose(value["train"][0], value["train"][1]),
           f"with dropout={args[-1]} two forwards in train mode gave the same output: dropout is not applied")


def forbidden_owner(call: ForbiddenCall) -> str:
    """The component charged for a forbidden call: where it was made."""
    return OWNER.get(call.component_hint) or FILE_OWNER.get(call.student_file, "vit")


def failure_message(error: BaseException | None) -> str:
    """What the student reads: the check's own message; for anything else, what kind of output
    the grader did not expect (never the grader's traceback)."""
    if error is None:
        return ""
    if isinstance(error, (CheckFailed, CheckUndecided)):
        return str(error)
    if isinstance(error, AssertionError):  # an instructor's plain assert: its message, or where it failed
        said = (str(error).splitlines() or [""])[0]  # the first line: pytest's rewritten asserts explain below it
        frames = traceback.extract_tb(error.__traceback__)
        where = f"failed at {Path(frames[-1].filename).name} line {frames[-1].lineno}: {frames[-1].line}" if frames else "failed"
        return said or where
    return (f"unexpected output ({type(error).__name__}: {error}); "
            "see the docstrings for what each function returns")


class Runner:
    """The pytest plugin that runs checks: gives the tests ``ctx``, runs the selected checks in
    ``names``' order (other tests after them, as collected) and records each verdict in
    ``ctx.results`` as it comes (a later check may ask ``ctx.passed``). The grader runs the hidden
    checks with it (``grader.checks``); the handout's visible tests run the students' checks with it."""

    def __init__(self, ctx: Context, names: list[str]) -> None:
        self.ctx, self.names = ctx, names
        ctx.pending = {n: TABLE[n].function for n in names if n in TABLE and TABLE[n].function is not None}

    @pytest.fixture(name="ctx")
    def _ctx(self) -> Context:
        return self.ctx

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        by_name = {_check_name(i): i for i in items if _check_name(i) is not None}
        chosen = [by_name[n] for n in self.names if n in by_name]
        others = [i for i in items if _check_name(i) is None]
        config.hook.pytest_deselected(items=[i for i in items if i not in chosen and i not in others])
        items[:] = chosen + others

    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        """Each check draws its inputs from its own seed: the same inputs whichever checks ran before."""
        self.ctx.reseed(f"check:{_check_name(item) or item.name}")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo) -> object:
        outcome = yield
        name = _check_name(item)
        if name is None or (call.when != "call" and call.excinfo is None):
            return
        if name not in self.ctx.results:
            self.ctx.record(name, None if call.excinfo is None else call.excinfo.value)
        report = outcome.get_result()
        if report.failed:  # the check's verdict in its own words, not the check's source
            report.longrepr = f"{name}: {self.ctx.results[name].message}"


def _check_name(item: pytest.Item) -> str | None:
    return getattr(getattr(item, "function", None), "check_name", None)
