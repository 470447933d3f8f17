"""Render a Grade: Gradescope's results.json, a self-contained report.html, a terminal table."""
from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import secrets
import stat
from pathlib import Path

import jinja2

from grader.checks import COMPONENTS, description
from grader.grade import Grade
from grader.scratch import remove_tree

REFERENCE_RESULTS = Path(__file__).resolve().parent.parent / "reference" / "results"

HTML = jinja2.Template("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Grade: {{ name }}</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 70em; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; } td, th { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
.pass { color: #17692b; } .fail { color: #a31515; } .skip { color: #777; } .undecided { color: #9a5b00; }
pre { background: #f6f6f6; padding: .6em; overflow-x: auto; white-space: pre-wrap; margin: .3em 0; }
img { max-width: 100%; }
</style></head><body>
<h1>{{ name }}: {{ "%.2f"|format(grade.score) }} / {{ "%.2f"|format(grade.max_score) }}</h1>
{% if grade.undecided %}<p class="undecided"><strong>Not final:</strong> {{ undecided_note }}</p>{% endif %}
<p>Kind: {{ grade.kind }} · seed {{ grade.seed }} · graded in {{ "%.1f"|format(grade.seconds) }} s</p>
<h2>Per component</h2>
<table><tr><th>component</th><th>score</th><th>checks passed</th></tr>
{% for c in components %}<tr><td>{{ c.name }}</td><td>{{ "%.2f"|format(c.score) }} / {{ "%.2f"|format(c.max) }}</td><td>{{ c.passed }} / {{ c.total }}{% if c.skipped %} ({{ c.skipped }} skipped){% endif %}</td></tr>
{% endfor %}</table>
{% if forbidden %}<h2>Library attention found</h2><ul>{% for f in forbidden %}<li><code>{{ f }}</code></li>{% endfor %}</ul>{% endif %}
{% if grade.notes %}<h2>Notes</h2><ul>{% for n in grade.notes %}<li><pre>{{ n }}</pre></li>{% endfor %}</ul>{% endif %}
<h2>Checks</h2><p>Failed checks first. Each says what it tests; the result says what was found.</p>
<table><tr><th>check</th><th>what it tests</th><th>points</th><th>result</th></tr>
{% for r in rows %}<tr><td>{{ r.name }}</td><td>{{ r.description }}</td><td>{{ r.points }}</td><td class="{{ r.css }}">{{ r.status }}{% if r.message %}<pre>{{ r.message }}</pre>{% endif %}</td></tr>
{% endfor %}</table>
{% for t in training %}<h2>Training: {{ t.recipe }}</h2><p>{{ t.message }}</p>
{% if t.curves %}<img alt="training curves" src="data:image/png;base64,{{ t.curves }}">{% endif %}
{% if t.attention %}<img alt="attention map of the first block" src="data:image/png;base64,{{ t.attention }}">{% endif %}
{% endfor %}
{% if grade.dropped %}<h2>Dropped from the notebook</h2><p>Only imports, definitions and simple constants are graded.</p>
<ul>{% for d in grade.dropped %}<li><code>{{ d }}</code></li>{% endfor %}</ul>{% endif %}
{% if grade.output %}<h2>Output of the submission (tail)</h2><pre>{{ grade.output }}</pre>{% endif %}
{% if grade.isolation %}<h2>Isolation</h2><p>How the student's code was isolated from the grading machine:</p>
<ul>{% for line in grade.isolation %}<li>{{ line }}</li>{% endfor %}</ul>{% endif %}
</body></html>
""", autoescape=True)

# A submission that could not be graded: results.json says why, this page the same.
FAILURE_HTML = jinja2.Template("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Grade: {{ name }}</title></head>
<body style="font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 70em; padding: 0 1em;">
<h1>{{ name }}: 0.00 / {{ "%.2f"|format(max_score) }}</h1>
<p>Not graded:</p><pre style="white-space: pre-wrap;">{{ output }}</pre>
</body></html>
""", autoescape=True)


def _status(result) -> tuple[str, str]:
    if result.skipped:
        return "skipped", "skip"
    if result.undecided:
        return "undecided", "undecided"
    return ("passed", "pass") if result.passed else ("failed", "fail")


def undecided_note(grade: Grade) -> str:
    """What a grade with undecided checks means, for whoever reads it."""
    n = len(grade.undecided)
    return (f"{n} check{'s' if n > 1 else ''} undecided: the grading machine was too slow or too busy to decide "
            f"{'them' if n > 1 else 'it'}, which is not a verdict on the code; grading it again decides "
            f"{'them' if n > 1 else 'it'}")


# Untrusted text (the name of a submission, a folder or a file, notes and messages that quote
# one, what the student's code raised) reaches results.json only through ``escape``, for the
# format its field declares: Gradescope renders "md" as Markdown, raw HTML included, and shows
# "text" as it is. report.html needs none of this: jinja2 escapes it (autoescape=True).
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SHOWN_AS = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_MD_PUNCTUATION = re.compile(r"([\\`*_{}\[\]#|~$])")  # what Markdown reads anywhere in a line
_MD_LINE_START = re.compile(r"^(\s*)([-+]|\d{1,9}[.)](?=\s|$))")  # a list item or a rule, at a line's start
_HTML_CHARACTERS = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def _visible(text: str, keep: str = "") -> str:
    """``text`` with every control, line-breaking or direction-changing character but those in
    ``keep`` written as its escape (``\\n``, ``\\x1b``, ``\\u202e``): a name stays on its line and
    shows what it holds, it cannot start a line of its own or hide the text around it."""
    def shown(match: re.Match) -> str:
        c = match.group()
        if c in keep:
            return c
        return _SHOWN_AS.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
    return _INVISIBLE.sub(shown, text)


def _md_inline(text: str) -> str:
    """``text`` as one line of Markdown that shows it literally: no new line, block or list item,
    no emphasis, code, link, table or math, and raw HTML as entities (``&lt;script&gt;``)."""
    line = _MD_PUNCTUATION.sub(r"\\\1", _visible(text))
    line = "".join(_HTML_CHARACTERS.get(c, c) for c in line)
    return _MD_LINE_START.sub(lambda m: m.group(1) + m.group(2)[:-1] + "\\" + m.group(2)[-1], line)


def _md_code_block(text: str) -> str:
    """Several lines (a traceback) as a fenced code block, where Markdown and HTML are shown, not
    read; the fence is longer than any run of backticks inside, so nothing inside closes it."""
    body = _visible(text.replace("\r\n", "\n").replace("\r", "\n"), keep="\n\t")
    fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", body)), default=0))
    return f"{fence}\n{body}\n{fence}"


def escape(text: str, output_format: str, block: bool = False) -> str:
    """Untrusted ``text`` for a results.json field declared ``output_format`` ("md" or "text").
    By default one line (a list item, a line of a paragraph) that nothing in it can break or end;
    with ``block``, text that stands as a Markdown block of its own may keep its lines, in a code
    block. Plain text has nothing to escape but the characters that break or hide lines."""
    if output_format == "text":
        return _visible(text)
    if output_format != "md":
        raise ValueError(f"no escaping for output_format {output_format!r}: use 'md' or 'text'")
    return _md_code_block(text) if block and ("\n" in text or "\r" in text) else _md_inline(text)


def _md(text: str) -> str:
    """``text`` as a Markdown block of its own: one escaped line, or a code block for several."""
    return escape(text, "md", block=True)


def _training_summary(run) -> str:
    return f"**{escape(run.recipe, 'md')}**: " + escape((run.message or "not run").splitlines()[0], "md")


def _training_html(test: dict, figure: dict) -> None:
    """A training test's output as HTML, with the run's curves and attention map embedded (the
    student on Gradescope sees no report.html)."""
    images = "".join(f'<p><img alt="{alt}" style="max-width: 100%" src="data:image/png;base64,{figure[key]}"></p>'
                     for key, alt in (("curves", "training curves"), ("attention", "attention map of the first block"))
                     if figure.get(key))
    test["output"] = f"<pre>{html.escape(test['raw'])}</pre>{images}"
    test["output_format"] = "html"


def gradescope_results(grade: Grade, figures: list[dict] | None = None) -> dict:
    """results.json as Gradescope reads it (``grader/results.schema.json``): one test per check
    that ran, numbered by component, tagged with it, its points and visibility from the rubric;
    checks that did not run are listed in the overall output, not shown as failures. The first
    test of each training run shows its curves and attention map (``figures``, from
    ``training_figures``). Students read it: how their code was isolated, and the seed, are in
    report.html and the log only."""
    figures = training_figures(grade) if figures is None else figures
    shown = {f"training_{run.recipe}": figure for run, figure in zip(grade.training, figures)}
    tests, not_run = [], []
    components = [c for c in COMPONENTS if any(r.component == c for r in grade.results)]
    components += sorted({r.component for r in grade.results} - set(components))
    counters = dict.fromkeys(components, 0)
    said_once = failure_messages(grade)
    for r in grade.results:
        if r.skipped:
            not_run.append(f"- {escape(r.name, 'md')}: {escape(r.message or 'not run', 'md')}")
            continue
        counters[r.component] += 1
        score, worth = grade.score_of(r)
        described = description(r.name)
        said = said_once.get(r.name) or r.message or "passed"
        test = {
            "name": r.name, "number": f"{components.index(r.component) + 1}.{counters[r.component]}",
            "score": score, "max_score": worth, "status": "passed" if r.passed else "failed",
            "output": (f"*{escape(described, 'md')}*\n\n" if described else "") + _md(said),
            "output_format": "md", "tags": [r.component],
            "visibility": grade.visibility.get(r.name, "visible"),
        }
        if r.undecided:  # neither passed nor failed: Gradescope has no third status, so none is given
            del test["status"]
            test["output"] = "**Undecided** (not a verdict on your code)\n\n" + test["output"]
            test["extra_data"] = {"undecided": True}
        figure = shown.pop(r.component, None)
        if figure is not None and (figure["curves"] or figure["attention"]):
            test["raw"] = ((f"{described}\n\n" if described else "")
                           + ("Undecided (not a verdict on your code)\n\n" if r.undecided else "") + _visible(said, keep="\n\t"))
            _training_html(test, figure)
            del test["raw"]
        tests.append(test)
    parts = [f"**Score: {grade.score:g} / {grade.max_score:g}**"]
    if grade.undecided:
        parts += ["", f"**Not final:** {undecided_note(grade)}."]
    if grade.training:
        parts += ["", "Training (accuracy measured by the grader on the test set):",
                  *(f"- {_training_summary(run)}" for run in grade.training)]
    if grade.notes:
        parts += ["", "Notes:", *(f"- {escape(note, 'md')}" for note in grade.notes)]
    if grade.dropped:
        parts += ["", "Dropped from your notebook (only imports, definitions and simple constants are graded):",
                  *(f"- {escape(line, 'md')}" for line in grade.dropped)]
    if not_run:
        parts += ["", "Not run (worth no points here):", *not_run]
    results = {"score": grade.score, "execution_time": round(grade.seconds), "output": "\n".join(parts),
               "output_format": "md", "visibility": "visible", "stdout_visibility": "hidden",
               "extra_data": {"max_score": grade.max_score, "kind": grade.kind, "status": grade.status},
               "tests": tests}
    board = leaderboard(grade)
    if board:
        results["leaderboard"] = board
    return results


def leaderboard(grade: Grade) -> list[dict]:
    """MNIST's test accuracy and training time, both measured by the grader (the figures its
    message gives), for Gradescope's leaderboard."""
    for run in grade.training:
        if run.recipe == "mnist" and run.measured:
            return [{"name": "MNIST accuracy (%)", "value": round(100 * max(run.measured), 2), "order": "desc"},
                    {"name": "MNIST training, timed by the grader (s)", "value": round(run.wall_seconds, 1), "order": "asc"}]
    return []


def failure_results(max_score: float, output: str) -> dict:
    """results.json for a submission that could not be graded: 0 out of what the rubric offers,
    so that Gradescope records a grade and the student reads why."""
    return {"score": 0.0, "execution_time": 0, "output": escape(output, "text"), "output_format": "text", "visibility": "visible",
            "stdout_visibility": "hidden", "extra_data": {"max_score": max_score}, "tests": []}


def component_table(grade: Grade) -> list[dict]:
    rows = []
    for name in COMPONENTS:
        own = [r for r in grade.results if r.component == name]
        if not own:
            continue
        scores = [grade.score_of(r) for r in own]
        rows.append({"name": name, "score": sum(s for s, _ in scores), "max": sum(m for _, m in scores),
                     "passed": sum(r.passed and not r.skipped for r in own), "total": len(own),
                     "skipped": sum(r.skipped for r in own)})
    return rows


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def _reference_history(recipe: str) -> object:
    """The reference's run of ``recipe`` (reference/results/results.json), when there is one."""
    from reference.training import History

    try:
        run = json.loads((REFERENCE_RESULTS / "results.json").read_text())[recipe]["history"]
        return History(**{k: v for k, v in run.items() if k in History.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def training_figures(grade: Grade) -> list[dict]:
    """Per training run: its title, message, and curves and attention map as base64 PNGs (or None)."""
    from reference.configs import get_recipe
    from reference.plotting import draw_attention, plot_history
    from reference.training import History

    out = []
    for run in grade.training:
        title = run.recipe if run.config in ("", run.recipe) else f"{run.recipe} (recipe {run.config})"
        item = {"recipe": title, "message": run.message, "curves": None, "attention": None}
        if run.history:
            fields = {k: v for k, v in run.history.items() if k in History.__dataclass_fields__}
            item["curves"] = _png(plot_history(History(**fields), f"{run.recipe}: your run (the grader's thresholds dashed)",
                                               thresholds=get_recipe(run.recipe).thresholds,
                                               reference=_reference_history(run.config or run.recipe)))
        if run.attention is not None and run.image is not None:
            item["attention"] = _png(draw_attention(run.attention, run.image, f"{run.recipe}: attention of your first block"))
        out.append(item)
    return out


def failure_messages(grade: Grade) -> dict[str, str]:
    """Each failed check's message, said once: a later check failing with the same message gets
    "as in <the first one>"."""
    first_with: dict[str, str] = {}
    out = {}
    for r in grade.results:
        if not r.passed and not r.skipped and r.message:
            out[r.name] = f"as in {first_with[r.message]}" if r.message in first_with else r.message
            first_with.setdefault(r.message, r.name)
    return out


def check_rows(grade: Grade) -> list[dict]:
    """The checks for people: failed first, then passed, then not run; each with what it tests.
    A failure repeating an earlier one's message says so instead of repeating it."""
    order = {"fail": 0, "undecided": 1, "pass": 2, "skip": 3}
    rows, said_once = [], failure_messages(grade)
    for r in grade.results:
        score, worth = grade.score_of(r)
        status, css = _status(r)
        message = said_once.get(r.name, r.message) if not r.passed or r.skipped else ""
        rows.append({"name": r.name, "description": description(r.name), "points": f"{score:g} / {worth:g}",
                     "status": status, "css": css, "message": message})
    return sorted(rows, key=lambda row: order[row["css"]])


def render_html(grade: Grade, name: str, figures: list[dict] | None = None) -> str:
    forbidden = sorted({f"{c.api} at {c.student_file}:{c.line} in {c.function}" for c in grade.forbidden})
    return HTML.render(grade=grade, name=name, components=component_table(grade), rows=check_rows(grade),
                       forbidden=forbidden, training=training_figures(grade) if figures is None else figures,
                       undecided_note=undecided_note(grade) if grade.undecided else "")


def summary(grade: Grade, name: str) -> str:
    """A short table for the terminal."""
    lines = [f"{name}: {grade.score:.2f} / {grade.max_score:.2f}   ({grade.kind}, seed {grade.seed}, {grade.seconds:.1f} s)"]
    for row in component_table(grade):
        mark = "ok" if row["passed"] == row["total"] - row["skipped"] else "  "
        skipped = f", {row['skipped']} skipped" if row["skipped"] else ""
        lines.append(f"  {mark} {row['name']:<18} {row['score']:5.2f} / {row['max']:5.2f}   {row['passed']}/{row['total']} checks{skipped}")
    if grade.undecided:
        lines.append(f"  ?? not final: {undecided_note(grade)}")
    failed = [r for r in grade.results if not r.passed and not r.skipped]
    for r in failed[:12]:
        lines.append(f"     {'?' if r.undecided else 'x'} {r.name}: {r.message.splitlines()[0] if r.message else ''}"[:160])
    if len(failed) > 12:
        lines.append(f"     ... and {len(failed) - 12} more failed checks (see the report)")
    skipped: dict[str, list[str]] = {}  # why -> the checks not run for it, named (worth nothing here)
    for r in grade.results:
        if r.skipped:
            skipped.setdefault((r.message or "not run").splitlines()[0], []).append(r.name)
    for why, names in skipped.items():
        lines.append(f"     - not run: {', '.join(names)} ({why})"[:240])
    off = [line for line in grade.isolation if re.search(r"\boff\b", line, re.IGNORECASE)]
    if off:
        lines.append(f"  isolation: {'; '.join(off)}")
    return "\n".join(lines)


# The student's code ran before the reports are written and, without OS isolation, may have
# planted links, folders or files in the output folder: nothing here follows or trusts them.

def _remove(path: Path) -> None:
    """Remove whatever is at ``path``: a link itself, never what it points to."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        remove_tree(path)  # does not follow the links inside; any depth
    else:
        path.unlink()


def _is_real_dir(path: Path) -> bool:
    """A directory, not a link to one."""
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except FileNotFoundError:
        return False


def _real_dir(path: Path) -> None:
    """Make ``path`` a real directory: a link or a file there is removed, never followed."""
    if _is_real_dir(path):
        return
    _remove(path)
    path.mkdir(parents=True)  # no exist_ok: whatever appeared here meanwhile is an error, not used


def write_new(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` as a new file: a fresh name that nobody could have planted,
    renamed onto ``path`` (a rename replaces a link there, never its target)."""
    if _is_real_dir(path):
        remove_tree(path)  # os.replace cannot replace a directory
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_reports(grade: Grade, out_dir: Path, name: str) -> None:
    """OUT/<name>/results.json and report.html; a grader-error.txt of an earlier run is removed."""
    figures = training_figures(grade)  # drawn once for both
    results, page = json.dumps(gradescope_results(grade, figures), indent=2) + "\n", render_html(grade, name, figures)
    _real_dir(out_dir)
    _remove(out_dir / "grader-error.txt")
    write_new(out_dir / "results.json", results)
    write_new(out_dir / "report.html", page)


def write_failure(out_dir: Path, name: str, max_score: float, output: str, details: str | None = None) -> None:
    """Reports for a submission that could not be graded; ``details`` (a traceback, for the
    instructor) goes to grader-error.txt."""
    _real_dir(out_dir)
    write_new(out_dir / "results.json", json.dumps(failure_results(max_score, output), indent=2) + "\n")
    write_new(out_dir / "report.html", FAILURE_HTML.render(name=name, max_score=max_score, output=output))
    if details is None:
        _remove(out_dir / "grader-error.txt")
    else:
        write_new(out_dir / "grader-error.txt", details)
