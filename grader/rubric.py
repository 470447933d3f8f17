"""The rubric: points per check, from a JSON file (default: grader/rubric.json)."""
from __future__ import annotations

import json
from pathlib import Path

from grader.checks import CHECKS
from reference.configs import RECIPES

DEFAULT_RUBRIC = Path(__file__).resolve().parent / "rubric.json"


class RubricError(ValueError):
    """The rubric file is missing, unreadable or names checks that do not exist."""


def training_check_names() -> list[str]:
    """``training_<recipe>:<threshold>%`` for every recipe's thresholds."""
    return [f"training_{r.name}:{round(100 * t)}%" for r in RECIPES.values() for t in r.thresholds]


def load_rubric(path: str | Path | None = None) -> dict[str, float]:
    """Points per check name; every check must be listed, with a non-negative number."""
    path = Path(path) if path is not None else DEFAULT_RUBRIC
    try:
        raw = json.loads(path.read_text())
    except OSError as e:
        raise RubricError(f"cannot read the rubric {path}: {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise RubricError(f"{path}: not valid JSON ({e})") from e
    points = {k: v for k, v in raw.items() if not k.startswith("_")}
    known = set(CHECKS) | set(training_check_names())
    unknown = sorted(set(points) - known)
    missing = sorted(known - set(points))
    bad = sorted(k for k, v in points.items() if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0)
    problems = [f"unknown checks: {', '.join(unknown)}" if unknown else "",
                f"checks without points: {', '.join(missing)}" if missing else "",
                f"points must be numbers >= 0: {', '.join(bad)}" if bad else ""]
    problems = [p for p in problems if p]
    if problems:
        raise RubricError(f"{path}: " + "; ".join(problems))
    return {k: float(v) for k, v in points.items()}
