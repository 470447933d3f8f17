"""The hidden checks as one table, and how they run.

Each check is a pytest test in ``grader/hidden/`` entered in the table by ``@check`` (its name,
points, whether students see it in ``make check``, when Gradescope shows it); the training
checks are rows of the same table, decided by ``grader.grade``. The rubric, the students' subset,
the component list and the report's descriptions all come from ``CHECKS``. ``run_checks`` runs
the tests with pytest, in this process (the grader's), against a ``ctx`` fixture that talks to
the sandbox: only the probes run the student's code, in the child.

An instructor adds a check by writing a test there (see ``grader.checklib``).
"""
from __future__ import annotations

import contextlib
import importlib
import io
import os
import pkgutil
from pathlib import Path
from typing import Mapping, Sequence

import pytest

from grader.checklib import CHARGED, TABLE, Check, CheckFailed, CheckResult, Context, Runner, forbidden_owner
from grader import hidden
from grader.integrity import CNN, DYNAMIC, REFERENCE, ForbiddenCall
from reference.configs import RECIPES

HIDDEN = Path(hidden.__file__).resolve().parent
MODULES = ("test_attention", "test_blocks", "test_vit")  # their checks run in this order; any other module after them
CHECK_MODULES = (*MODULES, *sorted({m.name for m in pkgutil.iter_modules([str(HIDDEN)])} - set(MODULES)))
for _module in CHECK_MODULES:
    importlib.import_module(f"{hidden.__name__}.{_module}")  # fills TABLE
TRAINING_POINTS = 2.0  # per threshold of every recipe


def training_check(exercise: str, threshold: float) -> str:
    """The name of the check that ``exercise``'s test accuracy reaches ``threshold``."""
    return f"training_{exercise}:{round(100 * threshold)}%"


def table_for(thresholds: Mapping[str, Sequence[float]] | None = None) -> dict[str, Check]:
    """The whole table: the hidden checks, then ``training_<exercise>:<threshold>%`` for each
    exercise's thresholds (a course file's, else its recipe's): the grader trains the ViT and
    measures the accuracy itself."""
    training = {}
    for r in RECIPES.values():
        for t in (thresholds or {}).get(r.name, r.thresholds):
            name = training_check(r.name, t)
            training[name] = Check(name, TRAINING_POINTS, description=f"the grader trains your ViT on {r.dataset} "
                                                                      f"and measures >= {round(100 * t)}% test accuracy")
    return {**TABLE, **training}


def description(name: str) -> str:
    """What the check ``name`` tests, in one line (a training check's at any threshold)."""
    check = CHECKS.get(name)
    if check is None and name.startswith("training_") and name.endswith("%") and ":" in name:
        exercise, _, percent = name.removeprefix("training_").partition(":")
        check = table_for({exercise: [float(percent[:-1]) / 100]}).get(name)
    return check.description if check else ""


CHECKS: dict[str, Check] = table_for()
COMPONENTS: tuple[str, ...] = tuple(dict.fromkeys(c.component for c in CHECKS.values()))
STUDENT_CHECKS: tuple[str, ...] = tuple(n for n, c in CHECKS.items() if c.student)
TEST_CHECKS: tuple[str, ...] = tuple(n for n, c in CHECKS.items() if c.function is not None)  # not training


def run_checks(ctx: Context, names: list[str] | None = None) -> list[CheckResult]:
    """Run the checks (all, or ``names``) in the table's order with pytest; then charge forbidden
    calls to their components. A check pytest could not run at all is failed, saying so."""
    names = [n for n in (names or TEST_CHECKS) if n in TEST_CHECKS]
    # Quiet and lean: the verdicts are recorded by _Runner; pytest's tracebacks, its cache and its
    # end-of-session garbage collections (about 0.4 s a submission) are not needed.
    args = [str(HIDDEN), "-c", os.devnull, "--rootdir", str(HIDDEN), "-q", "--tb=no", "-rN", "--assert=plain",
            "--capture=no", "-W", "ignore", *(f"-pno:{p}" for p in ("cacheprovider", "unraisableexception", "threadexception"))]
    with _no_plugin_autoload(), contextlib.redirect_stdout(io.StringIO()) as said:
        status = pytest.main(args, plugins=[Runner(ctx, names)])
    if status not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED) and names:
        raise RuntimeError(f"pytest could not run the hidden checks (exit status {status}):\n{said.getvalue()[-3000:]}")
    for name in names:
        if name not in ctx.results:
            ctx.record(name, CheckFailed("the grader could not run this check"))
    ctx.results = {n: ctx.results[n] for n in [*names, *ctx.results] if n in ctx.results}  # the table's order
    charge_forbidden(ctx)
    return list(ctx.results.values())


@contextlib.contextmanager
def _no_plugin_autoload() -> object:
    """Only pytest's own plugins and ours: whatever else is installed stays out of grading."""
    before = os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"]
        else:
            os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = before


def charge_forbidden(ctx: Context) -> None:
    """A check whose component used library attention (or timm, or dynamic code) fails; a
    submission that imports the reference or the grader fails in every component."""
    charged: dict[str, list[ForbiddenCall]] = {}
    for call in ctx.forbidden:
        if call.category == REFERENCE:
            for component in COMPONENTS:
                charged.setdefault(component, []).append(call)
        elif call.category in CHARGED:
            charged.setdefault(forbidden_owner(call), []).append(call)
    for component, calls in charged.items():
        seen = sorted({f"{c.api} at {c.student_file}:{c.line} (in {c.function})" for c in calls})
        if any(c.category == REFERENCE for c in calls):
            why = "a submission that uses the reference solution or the grader earns no points"
        elif all(c.category == DYNAMIC for c in calls):
            why = "code the grader cannot see through (exec, eval, interpreter internals) is not accepted in the homework"
        elif all(c.category == CNN for c in calls):
            why = ("a convolution other than a patch embedding (kernel = stride) makes a CNN, which earns no points "
                   "in place of the transformer")
        else:
            why = "write the attention yourself, library attention earns no points"
        message = "uses " + "; ".join(seen[:3]) + ": " + why
        for name, result in ctx.results.items():
            if result.component == component and not result.skipped:
                ctx.results[name] = CheckResult(name, False, message)


def forbidden_in_model(ctx: Context) -> list[ForbiddenCall]:
    """Forbidden calls in components the ViT runs: the trained model is then not the student's transformer."""
    model_parts = {"attention", "multihead", "feedforward", "transformer_block", "patchify", "vit"}
    return [c for c in ctx.forbidden if c.category in CHARGED and forbidden_owner(c) in model_parts]
