"""The rubric: points per check, from a JSON file (default: grader/rubric.json).

An entry is a number of points, or ``{"points": 1, "visibility": "after_due_date"}``: when
Gradescope shows that check to the student (``visible``, ``hidden``, ``after_due_date`` or
``after_published``; default ``visible``)."""
from __future__ import annotations

import json
from pathlib import Path

from grader.checks import CHECKS
from reference.configs import RECIPES

DEFAULT_RUBRIC = Path(__file__).resolve().parent / "rubric.json"
VISIBILITIES = ("visible", "hidden", "after_due_date", "after_published")


class RubricError(ValueError):
    """The rubric file is missing, unreadable or names checks that do not exist."""


def training_check_names() -> list[str]:
    """``training_<recipe>:<threshold>%`` for every recipe's thresholds."""
    return [f"training_{r.name}:{round(100 * t)}%" for r in RECIPES.values() for t in r.thresholds]


def load_rubric(path: str | Path | None = None) -> dict[str, float]:
    """Points per check name; every check must be listed, with a non-negative number."""
    return read_rubric(path)[0]


def load_visibility(path: str | Path | None = None) -> dict[str, str]:
    """When Gradescope shows each check to the student (see the module docstring)."""
    return read_rubric(path)[1]


def read_rubric(path: str | Path | None = None) -> tuple[dict[str, float], dict[str, str]]:
    """(points, visibility) per check name; a RubricError that names every problem."""
    path = Path(path) if path is not None else DEFAULT_RUBRIC
    try:
        raw = json.loads(path.read_text())
    except OSError as e:
        raise RubricError(f"cannot read the rubric {path}: {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise RubricError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(raw, dict):
        raise RubricError(f"{path}: expected an object of check names to points")
    entries = {k: v for k, v in raw.items() if not k.startswith("_")}
    points = {k: v.get("points") if isinstance(v, dict) else v for k, v in entries.items()}
    visibility = {k: v.get("visibility", "visible") if isinstance(v, dict) else "visible" for k, v in entries.items()}
    known = set(CHECKS) | set(training_check_names())
    unknown = sorted(set(points) - known)
    missing = sorted(known - set(points))
    bad = sorted(k for k, v in points.items() if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0)
    unseen = sorted(k for k, v in visibility.items() if v not in VISIBILITIES)
    problems = [f"unknown checks: {', '.join(unknown)}" if unknown else "",
                f"checks without points: {', '.join(missing)}" if missing else "",
                f"points must be numbers >= 0: {', '.join(bad)}" if bad else "",
                f"visibility must be one of {', '.join(VISIBILITIES)}: {', '.join(unseen)}" if unseen else ""]
    problems = [p for p in problems if p]
    if problems:
        raise RubricError(f"{path}: " + "; ".join(problems))
    return {k: float(v) for k, v in points.items()}, visibility
