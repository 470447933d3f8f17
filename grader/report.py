"""Render a Grade: Gradescope's results.json, a self-contained report.html, a terminal table."""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import jinja2

from grader.checks import COMPONENTS
from grader.grade import Grade

HTML = jinja2.Template("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Grade: {{ name }}</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 70em; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; } td, th { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
.pass { color: #17692b; } .fail { color: #a31515; } .skip { color: #777; }
pre { background: #f6f6f6; padding: .6em; overflow-x: auto; white-space: pre-wrap; margin: .3em 0; }
img { max-width: 100%; }
</style></head><body>
<h1>{{ name }}: {{ "%.2f"|format(grade.score) }} / {{ "%.2f"|format(grade.max_score) }}</h1>
<p>Kind: {{ grade.kind }} · seed {{ grade.seed }} · graded in {{ "%.1f"|format(grade.seconds) }} s</p>
<h2>Per component</h2>
<table><tr><th>component</th><th>score</th><th>checks passed</th></tr>
{% for c in components %}<tr><td>{{ c.name }}</td><td>{{ "%.2f"|format(c.score) }} / {{ "%.2f"|format(c.max) }}</td><td>{{ c.passed }} / {{ c.total }}{% if c.skipped %} ({{ c.skipped }} skipped){% endif %}</td></tr>
{% endfor %}</table>
{% if grade.notes %}<h2>Notes</h2><ul>{% for n in grade.notes %}<li><pre>{{ n }}</pre></li>{% endfor %}</ul>{% endif %}
{% if grade.dropped %}<h2>Dropped from the notebook</h2><p>Only imports, definitions and simple constants are graded.</p>
<ul>{% for d in grade.dropped %}<li><code>{{ d }}</code></li>{% endfor %}</ul>{% endif %}
{% if forbidden %}<h2>Library attention found</h2><ul>{% for f in forbidden %}<li><code>{{ f }}</code></li>{% endfor %}</ul>{% endif %}
<h2>Checks</h2>
<table><tr><th>check</th><th>points</th><th>result</th></tr>
{% for r in rows %}<tr><td>{{ r.name }}</td><td>{{ r.points }}</td><td class="{{ r.css }}">{{ r.status }}{% if r.message %}<pre>{{ r.message }}</pre>{% endif %}</td></tr>
{% endfor %}</table>
{% for t in training %}<h2>Training: {{ t.recipe }}</h2><p>{{ t.message }}</p>
{% if t.curves %}<img alt="training curves" src="data:image/png;base64,{{ t.curves }}">{% endif %}
{% if t.attention %}<img alt="attention map of the first block" src="data:image/png;base64,{{ t.attention }}">{% endif %}
{% endfor %}
{% if grade.output %}<h2>Output of the submission (tail)</h2><pre>{{ grade.output }}</pre>{% endif %}
</body></html>
""", autoescape=True)


def _status(result) -> tuple[str, str]:
    if result.skipped:
        return "skipped", "skip"
    return ("passed", "pass") if result.passed else ("failed", "fail")


def gradescope_results(grade: Grade) -> dict:
    """The Gradescope autograder format: upload as results.json."""
    tests = []
    for r in grade.results:
        score, worth = grade.score_of(r)
        tests.append({
            "name": r.name, "score": score, "max_score": worth,
            "status": "passed" if r.passed and not r.skipped else "failed",
            "output": r.message or ("skipped" if r.skipped else "passed"),
            "visibility": "visible",
        })
    return {"score": grade.score, "max_score": grade.max_score, "execution_time": round(grade.seconds),
            "output": "\n".join(grade.notes), "visibility": "visible", "stdout_visibility": "hidden", "tests": tests}


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


def _training_figures(grade: Grade) -> list[dict]:
    from reference.plotting import draw_attention, plot_history
    from reference.training import History

    out = []
    for run in grade.training:
        item = {"recipe": run.recipe, "message": run.message, "curves": None, "attention": None}
        if run.history:
            fields = {k: v for k, v in run.history.items() if k in History.__dataclass_fields__}
            item["curves"] = _png(plot_history(History(**fields), f"{run.recipe}: your ViT, reference training"))
        if run.attention is not None and run.image is not None:
            item["attention"] = _png(draw_attention(run.attention, run.image, f"{run.recipe}: attention of your first block"))
        out.append(item)
    return out


def render_html(grade: Grade, name: str) -> str:
    rows = []
    for r in grade.results:
        score, worth = grade.score_of(r)
        status, css = _status(r)
        rows.append({"name": r.name, "points": f"{score:g} / {worth:g}", "status": status, "css": css,
                     "message": r.message if not r.passed or r.skipped else ""})
    forbidden = sorted({f"{c.api} at {c.student_file}:{c.line} in {c.function}" for c in grade.forbidden})
    return HTML.render(grade=grade, name=name, components=component_table(grade), rows=rows,
                       forbidden=forbidden, training=_training_figures(grade))


def summary(grade: Grade, name: str) -> str:
    """A short table for the terminal."""
    lines = [f"{name}: {grade.score:.2f} / {grade.max_score:.2f}   ({grade.kind}, seed {grade.seed}, {grade.seconds:.1f} s)"]
    for row in component_table(grade):
        mark = "ok" if row["passed"] == row["total"] - row["skipped"] else "  "
        skipped = f", {row['skipped']} skipped" if row["skipped"] else ""
        lines.append(f"  {mark} {row['name']:<18} {row['score']:5.2f} / {row['max']:5.2f}   {row['passed']}/{row['total']} checks{skipped}")
    failed = [r for r in grade.results if not r.passed and not r.skipped]
    for r in failed[:12]:
        lines.append(f"     x {r.name}: {r.message.splitlines()[0] if r.message else ''}"[:160])
    if len(failed) > 12:
        lines.append(f"     ... and {len(failed) - 12} more failed checks (see the report)")
    return "\n".join(lines)


def write_reports(grade: Grade, out_dir: Path, name: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(gradescope_results(grade), indent=2) + "\n")
    (out_dir / "report.html").write_text(render_html(grade, name))
