"""Grade submissions into output folders: one (``grade_one``), or a whole class (``grade_class``)
with a gradebook (``OUT/gradebook.csv``) and an index page (``OUT/index.html``).

A class is a folder with one submission per entry (a folder, ``.py``, ``.ipynb`` or ``.zip``;
the entry's name is the student's). Every submission gets ``OUT/<name>/`` (names made unique),
and one that cannot be read or graded costs only its own row. A re-run skips a submission whose
content, grader and options are unchanged (``force`` regrades); ``jobs`` worker processes grade
side by side, each training child with its share of the cores, so that workers never
oversubscribe the machine.
"""
from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import hashlib
import hmac
import io
import json
import multiprocessing
import os
import secrets
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from grader.checks import COMPONENTS, TEST_CHECKS
from grader.grade import TRAINING_CHOICES, GradeOptions, grade_submission
from grader.jail import IsolationError
from grader.report import write_new, summary, write_failure, write_reports
from grader.scratch import temporary_folder
from grader.rubric import training_check_names
from grader.submission import SubmissionError

STATUSES = ("ok", "undecided", "timeout", "crashed", "unreadable", "grader-error")
KINDS = (".py", ".ipynb", ".zip")
EXERCISE_MODULES = ("attention", "blocks", "vit")
KEY_FILE = "grade.json"  # OUT/<name>/grade.json: what a re-run needs to skip an unchanged submission
_KIT = Path(__file__).resolve().parent.parent
# What a student reads when the grading machine cannot isolate their code (details: the instructor's log).
MISCONFIGURED = ("the autograder is misconfigured: it could not isolate your code on the grading machine, so "
                 "nothing was graded; this is not your fault: tell your instructor")


@dataclass
class Row:
    """One submission's line of the gradebook."""

    student: str
    status: str  # STATUSES
    score: float = 0.0
    max_score: float = 0.0
    components: dict[str, float] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)  # every check that ran -> passed
    mnist_accuracy: float | None = None  # measured by the grader
    seconds: float = 0.0
    message: str = ""  # why it could not be graded
    reused: bool = False  # unchanged since the last run: not graded again


def submission_name(path: Path) -> str:
    return path.resolve().name.removesuffix(".zip").removesuffix(".ipynb").removesuffix(".py") or "submission"


def rubric_total(points: dict[str, float], training: str) -> float:
    """The points a submission can get with ``--training``: the max_score of one that could not
    be graded (Gradescope needs a max_score > 0 to record the 0)."""
    recipes = TRAINING_CHOICES[training]
    names = [*TEST_CHECKS, *(n for n in training_check_names(points) if n.split(":")[0].removeprefix("training_") in recipes)]
    return sum(points.get(n, 0.0) for n in names)


def _write_failure(path: Path, out_dir: Path, name: str, max_score: float, output: str, details: str | None = None) -> None:
    """Leave a results.json that says why ``path`` got no grade; a folder we cannot write is said, not raised."""
    try:
        write_failure(out_dir, name, max_score, output, details)
    except OSError as e:
        print(f"error: {path}: cannot write the reports to {out_dir}: {e}", file=sys.stderr)


def grade_one(path: Path, out_dir: Path, name: str, options: GradeOptions, max_score: float, quiet: bool = False) -> Row:
    """Grade ``path`` into ``out_dir`` and return its row. Never raises (but for
    KeyboardInterrupt): one submission never stops a batch. ``quiet``: no table, only errors."""
    if not quiet:
        print(f"grading {path} ...", file=sys.stderr, flush=True)
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731 - errors are said even when quiet
    try:
        with temporary_folder("grader-") as work:
            grade = grade_submission(path, Path(work), options)
        table = summary(grade, name)
        write_reports(grade, out_dir, name)
    except IsolationError as e:  # the instructor's to fix; the student reads only that it is not their fault
        say(f"error: {path}: {e}")
        _write_failure(path, out_dir, name, max_score, MISCONFIGURED, str(e))
        return Row(name, "grader-error", max_score=max_score, message="the jail is not available")
    except SubmissionError as e:  # the message says what is wrong and what to do
        say(f"error: {path}: {e}")
        _write_failure(path, out_dir, name, max_score, str(e))
        return Row(name, "unreadable", max_score=max_score, message=str(e))
    except Exception as e:  # a bug of the grader, or something the student did that it did not foresee
        reason = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
        say(f"error: {path}: the grader failed: {reason} (traceback in {out_dir / 'grader-error.txt'})")
        _write_failure(path, out_dir, name, max_score,
                       f"the grader failed on this submission: {reason}; the instructor has the details",
                       traceback.format_exc())
        return Row(name, "grader-error", max_score=max_score, message=reason)
    if not quiet:
        print(table)
        print(f"  reports: {out_dir / 'results.json'}, {out_dir / 'report.html'}")
    components: dict[str, float] = {}
    for r in grade.results:
        components[r.component] = components.get(r.component, 0.0) + grade.score_of(r)[0]
    mnist = [max(run.measured) for run in grade.training if run.recipe == "mnist" and run.measured]
    return Row(name, grade.status, grade.score, grade.max_score, components,
               {r.name: r.passed for r in grade.results if not r.skipped and not r.undecided}, mnist[0] if mnist else None,
               round(grade.seconds, 2))


# --- a class -----------------------------------------------------------------------------------

def submission_entries(folder: Path) -> list[Path]:
    """The submissions in a class folder: its folders, .py, .ipynb and .zip files, by name."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith((".", "_")) and not p.is_symlink()
                  and (p.is_dir() or p.suffix.lower() in KINDS))


def _holds_modules(folder: Path, depth: int = 3) -> bool:
    """Whether an exercise module lies in ``folder`` or up to ``depth`` levels below (a zipped folder)."""
    if any((folder / f"{m}.py").is_file() for m in EXERCISE_MODULES):
        return True
    return depth > 0 and any(_holds_modules(p, depth - 1) for p in sorted(folder.iterdir())[:50]
                             if p.is_dir() and not p.is_symlink())


def is_class_folder(path: Path) -> bool:
    """A folder of several submissions, rather than one submission: it holds no exercise module
    itself, and more than one entry is a submission (a file of a submission's kind, or a folder
    with exercise modules in it; a student's data/ folder is not)."""
    if not path.is_dir() or any((path / f"{m}.py").is_file() for m in EXERCISE_MODULES):
        return False
    return sum(p.is_file() or _holds_modules(p) for p in submission_entries(path)) > 1


def unique_names(paths: list[Path]) -> list[str]:
    """Output folder names: the submissions' names, numbered where two are the same."""
    names, seen = [], {}
    for path in paths:
        base = submission_name(path)
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return names


def _hash_path(path: Path, digest: "hashlib._Hash") -> None:
    """Feed a submission's content (names and bytes, links not followed) into ``digest``."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    for file in files:
        digest.update(str(file.relative_to(path) if file != path else file.name).encode() + b"\0")
        digest.update(file.read_bytes())


def kit_version() -> str:
    """A digest of the grader and the reference (which the checks compare with): a change to
    either grades everything again."""
    digest = hashlib.sha256()
    for folder in ("grader", "reference"):
        for file in sorted((_KIT / folder).rglob("*.py")):
            digest.update(file.read_bytes())
    return digest.hexdigest()


def grade_key(path: Path, options: GradeOptions, kit: str) -> str:
    """What a grade depends on: the submission's content, the kit's code and the options."""
    digest = hashlib.sha256(kit.encode())
    # what decides the grade; not the resources (threads, GPU share), which JOBS changes
    decisive = {k: v for k, v in dataclasses.asdict(options).items() if k not in ("threads", "gpu_share", "verbose")}
    digest.update(json.dumps(decisive, sort_keys=True, default=str).encode())
    _hash_path(path, digest)
    return digest.hexdigest()


def _signing_key() -> bytes:
    """The grader's own secret (``~/.cache/vitkit/batch.key``, readable by the grader's user only):
    a saved row is reused only with its signature, so a row planted in the output folder is not."""
    path = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vitkit" / "batch.key"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another worker made it meanwhile
            return path.read_bytes()
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
        return path.read_bytes()


def _signature(key: str, row: dict) -> str:
    message = json.dumps({"key": key, "row": row}, sort_keys=True).encode()
    return hmac.new(_signing_key(), message, hashlib.sha256).hexdigest()


def saved_row(out_dir: Path, key: str) -> Row | None:
    """The row of the last run when it graded the same thing (OUT/<name>/grade.json, signed)."""
    try:
        saved = json.loads((out_dir / KEY_FILE).read_text())
        if (saved.get("key") == key and (out_dir / "results.json").is_file()
                and hmac.compare_digest(str(saved.get("signature")), _signature(key, saved["row"]))):
            return dataclasses.replace(Row(**saved["row"]), reused=True)
    except (OSError, ValueError, TypeError, KeyError):
        pass
    return None


def reused_row(out_dir: Path, key: str) -> Row | None:
    """``saved_row`` when the last run decided it: an undecided grade is graded again."""
    row = saved_row(out_dir, key)
    return row if row is not None and row.status != "undecided" else None


def grade_entry(path: Path, out_dir: Path, name: str, options: GradeOptions, max_score: float, key: str) -> Row:
    """One submission of a class, in a worker: graded quietly, its key and row saved, signed."""
    row = grade_one(path, out_dir, name, options, max_score, quiet=True)
    saved = dataclasses.asdict(row)
    try:
        write_new(out_dir / KEY_FILE, json.dumps({"key": key, "row": saved, "signature": _signature(key, saved)}) + "\n")
    except OSError:
        pass  # no reuse next time; the grade itself is written
    return row


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def grade_class(paths: list[Path], out: Path, options: GradeOptions, max_score: float, jobs: int = 1,
                force: bool = False) -> list[Row]:
    """Grade ``paths`` into ``out/<name>/`` with ``jobs`` worker processes; write the gradebook
    and the index page; return the rows in the order of ``paths``."""
    jobs = max(1, min(jobs, len(paths)))
    options = dataclasses.replace(options, threads=options.threads or max(1, (os.cpu_count() or 1) // jobs),
                                  gpu_share=options.gpu_share or (0.9 / jobs if jobs > 1 else None))
    names = unique_names(paths)
    kit = kit_version()
    rows: dict[int, Row] = {}
    todo = []
    for i, (path, name) in enumerate(zip(paths, names)):
        key = grade_key(path, options, kit) if path.exists() else ""
        reused = None if force or not key else reused_row(out / name, key)
        if reused is not None:
            rows[i] = reused
        else:
            todo.append((i, path, name, key))
    started, done = time.perf_counter(), 0
    print(f"grading {len(todo)} of {len(paths)} submissions into {out}/ ({len(paths) - len(todo)} unchanged and decided "
          f"since the last run; {jobs} worker{'s' if jobs > 1 else ''}, {options.threads} thread(s) each)", file=sys.stderr)

    def finished(i: int, row: Row) -> None:
        nonlocal done
        rows[i], done = row, done + 1
        left = (time.perf_counter() - started) / done * (len(todo) - done)
        print(f"  [{done}/{len(todo)}] {row.student}: {row.score:g} / {row.max_score:g} {row.status}"
              f"{'' if done == len(todo) else f'   (about {_duration(left)} left)'}", file=sys.stderr, flush=True)

    if jobs == 1:
        for i, path, name, key in todo:
            finished(i, grade_entry(path, out / name, name, options, max_score, key))
    else:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no state of this one is shared
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker,
                                                    initargs=(options.threads,)) as pool:
            futures = {pool.submit(grade_entry, path, out / name, name, options, max_score, key): (i, name)
                       for i, path, name, key in todo}
            for future in concurrent.futures.as_completed(futures):
                i, name = futures[future]
                try:
                    row = future.result()
                except Exception as e:  # a worker died (killed, out of memory): its row says so, the rest go on
                    row = Row(name, "grader-error", max_score=max_score, message=f"the worker failed: {type(e).__name__}: {e}")
                finished(i, row)
    ordered = [rows[i] for i in range(len(paths))]
    write_gradebook(ordered, out)
    write_index(ordered, out)
    return ordered


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


# --- the gradebook and the index page -----------------------------------------------------------

# What makes a spreadsheet read a cell as a formula (= + - @), or strip its start and then do so
# (a tab, a CR; a newline too): a text cell starting with one is shown, never run.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


def _text_cell(text: str) -> str:
    """A gradebook text cell a spreadsheet shows and never runs (CSV injection: a student names their
    submission): one starting with = + - @, a tab or a CR gets a leading ', the spreadsheet's "text"."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _number_cell(value: float | None, number_format: str = "g") -> str:
    """A number the grader computed, as a number: never quoted (a negative one would still be a
    number, not a formula); empty for none."""
    return "" if value is None else format(value, number_format)


def write_gradebook(rows: list[Row], out: Path) -> None:
    """OUT/gradebook.csv: student, total, one column per component, status, MNIST accuracy, seconds."""
    components = [c for c in COMPONENTS if any(c in r.components for r in rows)]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    header = ["student", "total", "max", *components, "status", "mnist_accuracy", "seconds"]
    writer.writerow([_text_cell(h) for h in header])
    for r in rows:
        accuracy = None if r.mnist_accuracy is None else 100 * r.mnist_accuracy
        writer.writerow([_text_cell(r.student), _number_cell(r.score), _number_cell(r.max_score),
                         *(_number_cell(r.components.get(c, 0.0)) for c in components), _text_cell(r.status),
                         _number_cell(accuracy, ".2f"), _number_cell(r.seconds)])
    out.mkdir(parents=True, exist_ok=True)
    write_new(out / "gradebook.csv", buffer.getvalue())


INDEX = jinja2.Template("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Grades</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 80em; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; } td, th { border: 1px solid #ccc; padding: .25em .5em; text-align: left; }
td.n { text-align: right; } .bar { background: #4a7bd0; height: 1em; display: inline-block; vertical-align: middle; }
.ok { color: #17692b; } .bad { color: #a31515; }
</style></head><body>
<h1>{{ rows|length }} submissions</h1>
<p>Mean {{ "%.2f"|format(mean) }} / {{ "%g"|format(top) }}; {{ graded }} graded, {{ rows|length - graded }} not
({% for s, n in statuses.items() %}{{ s }}: {{ n }}{% if not loop.last %}, {% endif %}{% endfor %}).
<a href="gradebook.csv">gradebook.csv</a></p>
<h2>Scores</h2>
<table><tr><th>score</th><th>submissions</th></tr>
{% for label, n in histogram %}<tr><td>{{ label }}</td><td><span class="bar" style="width: {{ 20 * n }}px"></span> {{ n }}</td></tr>
{% endfor %}</table>
<h2>Checks: which exercise the class got wrong</h2>
<table><tr><th>check</th><th>passed</th><th></th></tr>
{% for name, passed, ran in checks %}<tr><td>{{ name }}</td><td class="n">{{ passed }} / {{ ran }}</td>
<td><span class="bar" style="width: {{ (200 * passed / ran)|round|int }}px"></span> {{ (100 * passed / ran)|round|int }}%</td></tr>
{% endfor %}</table>
<h2>Submissions</h2>
<table><tr><th>student</th><th>total</th>{% for c in components %}<th>{{ c }}</th>{% endfor %}<th>status</th><th>MNIST</th><th>seconds</th></tr>
{% for r in rows %}<tr><td><a href="{{ r.student|urlencode }}/report.html">{{ r.student }}</a></td><td class="n">{{ "%g"|format(r.score) }} / {{ "%g"|format(r.max_score) }}</td>
{% for c in components %}<td class="n">{{ "%g"|format(r.components.get(c, 0)) }}</td>{% endfor %}
<td class="{{ 'ok' if r.status == 'ok' else 'bad' }}" title="{{ r.message }}">{{ r.status }}{% if r.reused %} (unchanged){% endif %}</td>
<td class="n">{{ "%.2f"|format(100 * r.mnist_accuracy) if r.mnist_accuracy is not none else "" }}</td><td class="n">{{ "%g"|format(r.seconds) }}</td></tr>
{% endfor %}</table>
</body></html>
""", autoescape=True)


def write_index(rows: list[Row], out: Path) -> None:
    """OUT/index.html: the score distribution, each check's pass rate, and every row with a link to its report."""
    graded = [r for r in rows if r.status not in ("unreadable", "grader-error")]
    top = max((r.max_score for r in rows), default=0.0)
    bins = [0] * 10
    for r in rows:
        bins[min(9, int(10 * r.score / top)) if top else 0] += 1
    histogram = [(f"{10 * i}-{10 * (i + 1)}%", n) for i, n in enumerate(bins)]
    names = list(dict.fromkeys(n for r in rows for n in r.checks))
    checks = [(n, sum(r.checks.get(n, False) for r in rows), sum(n in r.checks for r in rows)) for n in names]
    statuses = {s: sum(r.status == s for r in rows) for s in STATUSES if any(r.status == s for r in rows)}
    components = [c for c in COMPONENTS if any(c in r.components for r in rows)]
    html = INDEX.render(rows=rows, graded=len(graded), top=top, mean=sum(r.score for r in rows) / max(1, len(rows)),
                        histogram=histogram, checks=checks, statuses=statuses, components=components)
    out.mkdir(parents=True, exist_ok=True)
    write_new(out / "index.html", html)
