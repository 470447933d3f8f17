"""The rubric: points and visibility per check. The table (``grader.checks.CHECKS``) is the
default; a course changes it with a JSON file (``--rubric``) that names only what it changes.

An entry is a number of points, or ``{"points": 1, "visibility": "after_due_date"}``: when
Gradescope shows that check to the student (``visible``, ``hidden``, ``after_due_date`` or
``after_published``). Keys starting with ``_`` are comments. ``python -m grader --rubric-template``
prints the whole table in this form, to start from.
"""
from __future__ import annotations

import json
from pathlib import Path

from grader.checklib import VISIBILITIES
from grader.checks import CHECKS


class RubricError(ValueError):
    """The rubric file is missing, unreadable or names checks that do not exist."""


def training_check_names(points: dict[str, float] | None = None) -> list[str]:
    """``training_<exercise>:<threshold>%`` for every exercise's thresholds: the kit's, or those of
    the rubric ``points`` (``read_rubric``'s, which a course file names by its thresholds)."""
    return [n for n in (points or CHECKS) if n.startswith("training_")]


def load_rubric(path: str | Path | None = None, course: str | Path | None = None) -> dict[str, float]:
    """Points per check name (``read_rubric``)."""
    return read_rubric(path, course)[0]


def load_visibility(path: str | Path | None = None) -> dict[str, str]:
    """When Gradescope shows each check to the student (see the module docstring)."""
    return read_rubric(path)[1]


def rubric_template() -> str:
    """The table as a rubric file: every check with its points and visibility."""
    return json.dumps({"_comment": "points and visibility per check; a rubric file may list only the checks it changes",
                       **{n: {"points": c.points, "visibility": c.visibility} for n, c in CHECKS.items()}}, indent=2) + "\n"


def read_rubric(path: str | Path | None = None, course: str | Path | None = None) -> tuple[dict[str, float], dict[str, str]]:
    """(points, visibility) per check name: the table, changed by the course file's ``[checks]``
    (``grader.course``), then by the JSON rubric at ``path``; a RubricError (a CourseError for the
    course file) that names every problem."""
    table = CHECKS
    if course is not None:
        from grader.checks import table_for
        from grader.course import read_course

        table = table_for(read_course(course).thresholds)  # its training checks are named by its thresholds
    points = {n: c.points for n, c in table.items()}
    visibility = {n: c.visibility for n, c in table.items()}
    if course is not None:
        apply_entries(read_course(course).checks, points, visibility, str(course))
    if path is None:
        return points, visibility
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except OSError as e:
        raise RubricError(f"cannot read the rubric {path}: {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise RubricError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(raw, dict):
        raise RubricError(f"{path}: expected an object of check names to points")
    apply_entries({k: v for k, v in raw.items() if not k.startswith("_")}, points, visibility, str(path))
    return points, visibility


def apply_entries(entries: dict, points: dict[str, float], visibility: dict[str, str], where: str) -> None:
    """Change ``points`` and ``visibility`` by ``entries`` (check name -> points, or {"points": ...,
    "visibility": ...}), after checking every one: a RubricError naming all problems, and nothing changed."""
    given = {k: v.get("points", points.get(k)) if isinstance(v, dict) else v for k, v in entries.items()}
    shown = {k: v.get("visibility", visibility.get(k)) for k, v in entries.items() if isinstance(v, dict)}
    unknown = sorted(set(entries) - set(points))  # the checks of the table in use (a course's training checks)
    bad = sorted(k for k, v in given.items() if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0)
    unseen = sorted(k for k, v in shown.items() if v not in VISIBILITIES)
    extra = sorted(k for k, v in entries.items() if isinstance(v, dict) and set(v) - {"points", "visibility"})
    problems = [f"unknown checks: {', '.join(unknown)} (python -m grader --rubric-template lists them)" if unknown else "",
                f"points must be numbers >= 0: {', '.join(bad)}" if bad else "",
                f"visibility must be one of {', '.join(VISIBILITIES)}: {', '.join(unseen)}" if unseen else "",
                f"an entry holds only points and visibility: {', '.join(extra)}" if extra else ""]
    problems = [p for p in problems if p]
    if problems:
        raise RubricError(f"{where}: " + "; ".join(problems))
    points.update({k: float(v) for k, v in given.items()})
    visibility.update(shown)
