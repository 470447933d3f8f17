"""The course file: one TOML file an instructor edits (``course.toml`` at the kit's root), read by
``make grade``, ``make autograder`` and ``make handout`` (``COURSE=`` another file; ``--course``).
Everything in it is optional: what it leaves out keeps the kit's defaults (the check table of
``grader.checks``, the kit's recipe for each exercise and each recipe's own guard, MNIST
training, Gradescope's default timeout).

    [grading]
    training = "mnist"                # what grading trains: none, mnist, all or checkpoint
    gradescope_timeout_minutes = 10   # the timeout set in Gradescope's Autograder Settings

    [recipes]                         # which recipe trains an exercise, its budget in epochs, its thresholds
    mnist = { recipe = "mnist-sheet-6x8", epochs = 2, thresholds = [0.9, 0.94] }

    [guards]                          # the wall-clock guard on training seconds, per recipe
    mnist = 600

    [checks]                          # points and visibility per check (--rubric-template lists them)
    "vit:forward" = { points = 1, visibility = "after_due_date" }

An exercise's thresholds name its training checks (``training_mnist:90%``): ``[checks]`` gives
them points like any other check (2 each by default). A guard is not a budget: a recipe trains its epochs (stopping early at its target); the guard
ends a run only on a machine too slow to finish them, and such a run is undecided there, not
failed (``grader.grade.guard_verdict``).
"""
from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from grader.rubric import RubricError
from reference.configs import ALL_RECIPES, RECIPES, Recipe, get_recipe

COURSE_FILE = "course.toml"  # its name at the kit's root and in the Gradescope bundle
TRAINING = ("none", "mnist", "all", "checkpoint")  # grader.grade.TRAINING_CHOICES (a test keeps them equal)
SECTIONS = {"grading": ("training", "gradescope_timeout_minutes"), "recipes": None, "guards": None, "checks": None}
# Gradescope's run ends at its timeout whatever is left: the checks, the measurements of the
# weights and the image's start get this share of it, training the rest (240 s of the default 10 min).
GRADESCOPE_TRAINING_SHARE = 0.4
GRADESCOPE_DEFAULT_MINUTES = 10.0


class CourseError(RubricError):
    """The course file is missing, not TOML, or holds settings that do not exist; says which."""


@dataclass(frozen=True)
class Course:
    """What a course file sets; None or empty where it keeps the kit's default."""

    training: str | None = None
    gradescope_timeout_minutes: float | None = None
    recipes: dict[str, tuple[str | None, float | None]] = field(default_factory=dict)  # exercise -> (recipe, epochs)
    thresholds: dict[str, tuple[float, ...]] = field(default_factory=dict)  # exercise -> its test accuracies to reach
    guards: dict[str, float] = field(default_factory=dict)  # recipe name -> seconds
    checks: dict[str, object] = field(default_factory=dict)  # check name -> points or {points, visibility}

    def recipe_for(self, exercise: str, kit: Recipe) -> Recipe:
        """The recipe this course trains ``exercise`` with: the one it names, else ``kit`` (the kit's
        own for this device), with the budget and thresholds the course sets."""
        name, epochs = self.recipes.get(exercise, (None, None))
        recipe = get_recipe(name) if name else kit
        if epochs is not None:
            recipe = replace(recipe, train=replace(recipe.train, epochs=epochs))
        return replace(recipe, thresholds=self.thresholds[exercise]) if exercise in self.thresholds else recipe

    @property
    def gradescope_guard(self) -> float:
        """The training guard in the Gradescope bundle: its share of Gradescope's timeout."""
        return round(GRADESCOPE_TRAINING_SHARE * 60 * (self.gradescope_timeout_minutes or GRADESCOPE_DEFAULT_MINUTES))


def read_course(path: str | Path) -> Course:
    """The course file at ``path``, checked whole: a CourseError names every problem."""
    return _read(str(Path(path).resolve()))


@functools.lru_cache(maxsize=8)
def _read(path: str) -> Course:
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise CourseError(f"cannot read the course file {path}: {e.strerror}") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise CourseError(f"{path}: not valid TOML ({e})") from e
    problems = [f"unknown section [{s}] (the sections are {', '.join(SECTIONS)})" for s in raw if s not in SECTIONS]
    problems += [f"[{s}] must be a table" for s in SECTIONS if s in raw and not isinstance(raw[s], dict)]
    grading = raw.get("grading") if isinstance(raw.get("grading"), dict) else {}
    guards = raw.get("guards") if isinstance(raw.get("guards"), dict) else {}
    chosen = raw.get("recipes") if isinstance(raw.get("recipes"), dict) else {}
    recipes, thresholds, why = _recipes(chosen)
    problems += why
    checks = raw.get("checks") if isinstance(raw.get("checks"), dict) else {}
    problems += [f"unknown setting grading.{k} (the settings are {', '.join(SECTIONS['grading'])})"
                 for k in grading if k not in SECTIONS["grading"]]
    training = grading.get("training")
    if training is not None and training not in TRAINING:
        problems.append(f"grading.training must be one of {', '.join(TRAINING)}, not {training!r}")
    minutes = grading.get("gradescope_timeout_minutes")
    if minutes is not None and not _positive(minutes):
        problems.append(f"grading.gradescope_timeout_minutes must be a number > 0, not {minutes!r}")
    problems += [f"guards.{k}: no such recipe (the recipes are {', '.join(ALL_RECIPES)})" for k in guards if k not in ALL_RECIPES]
    problems += [f"guards.{k} must be a number of seconds > 0, not {v!r}" for k, v in guards.items() if not _positive(v)]
    if problems:
        raise CourseError(f"{path}: " + "; ".join(problems))
    course = Course(training=training, gradescope_timeout_minutes=None if minutes is None else float(minutes),
                    recipes=recipes, thresholds=thresholds, guards={k: float(v) for k, v in guards.items()},
                    checks=dict(checks))
    from grader.checks import table_for
    from grader.rubric import apply_entries

    table = table_for(thresholds)  # the course's own training checks, named by its thresholds
    apply_entries(course.checks, {n: c.points for n, c in table.items()}, {n: c.visibility for n, c in table.items()},
                  path)  # the checks, checked now: CourseError's parent names them
    return course


def _recipes(chosen: dict) -> tuple[dict[str, tuple[str | None, float | None]], dict[str, tuple[float, ...]], list[str]]:
    """[recipes]: exercise -> "recipe" or {recipe = ..., epochs = ..., thresholds = [...]}, each
    optional; the choices, the thresholds and the problems. A recipe may train an exercise when it
    trains on the exercise's data."""
    found, thresholds, problems = {}, {}, []
    for exercise, entry in chosen.items():
        entry = {"recipe": entry} if isinstance(entry, str) else entry
        if exercise not in RECIPES:
            problems.append(f"recipes.{exercise}: no such exercise (the exercises are {', '.join(RECIPES)})")
            continue
        if not isinstance(entry, dict) or set(entry) - {"recipe", "epochs", "thresholds"}:
            problems.append(f"recipes.{exercise}: a recipe's name, or a table of recipe, epochs and thresholds")
            continue
        name, epochs, levels = entry.get("recipe"), entry.get("epochs"), entry.get("thresholds")
        if name is not None and (not isinstance(name, str) or name not in ALL_RECIPES):
            problems.append(f"recipes.{exercise}: {name!r} is no recipe (the recipes are {', '.join(ALL_RECIPES)})")
        elif name is not None and ALL_RECIPES[name].dataset != RECIPES[exercise].dataset:
            problems.append(f"recipes.{exercise}: {name} trains on other data than the exercise")
        elif epochs is not None and not _positive(epochs):
            problems.append(f"recipes.{exercise}.epochs must be a number > 0, not {epochs!r}")
        elif levels is not None and not _thresholds(levels):
            problems.append(f"recipes.{exercise}.thresholds must be increasing test accuracies between 0 and 1, "
                            f"a whole percent apart (e.g. [0.25, 0.5, 0.7]), not {levels!r}")
        else:
            if name is not None or epochs is not None:
                found[exercise] = (name, None if epochs is None else float(epochs))
            if levels is not None:
                thresholds[exercise] = tuple(float(t) for t in levels)
    return found, thresholds, problems


def _thresholds(levels: object) -> bool:
    """A non-empty, increasing list of accuracies in (0, 1] whose check names (whole percents) differ."""
    if not isinstance(levels, list) or not levels or not all(_positive(t) and t <= 1 for t in levels):
        return False
    percents = [round(100 * t) for t in levels]
    return all(a < b for a, b in zip(levels, levels[1:])) and len(set(percents)) == len(percents) and percents[0] > 0


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
