"""Fill the answer templates with computed values, and split them into questions and answers.

Each topic is a template ``theory/answers/NN-topic.md`` (Markdown + LaTeX, with Jinja2
placeholders) and a module ``theory.topics.<name>`` whose ``values()`` computes every number,
matrix and formula the template shows. The template writes no value itself: ``numerals_left``
finds any numeral outside a placeholder that is not notation (a test keeps the list empty).
Format: ``theory/README.md``.
"""
from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import jinja2

THEORY_DIR = Path(__file__).resolve().parent
ANSWERS_DIR = THEORY_DIR / "answers"
BEGIN_ANSWER = "<!-- BEGIN ANSWER -->"
END_ANSWER = "<!-- END ANSWER -->"


class FormatError(ValueError):
    """A template breaks the format (unbalanced answer blocks, an unknown placeholder, ...)."""


# --------------------------------------------------------------------------------------------
# Filters: how values are written
# --------------------------------------------------------------------------------------------
def _plain(x: object) -> object:
    """Tensors and arrays as nested lists, numpy scalars as Python numbers."""
    if hasattr(x, "tolist"):
        return x.tolist()
    return x


def num(x: object, places: int | None = None, group: bool = False) -> str:
    """A number: ``places`` decimals, else an integer (or the shortest float); ``group`` puts thin
    spaces between thousands (``1\\,050\\,624``, in maths only)."""
    x = _plain(x)
    if isinstance(x, Fraction) and x.denominator != 1:
        return f"\\tfrac{{{x.numerator}}}{{{x.denominator}}}" if x > 0 else f"-\\tfrac{{{-x.numerator}}}{{{x.denominator}}}"
    if places is not None:
        text = f"{float(x):.{places}f}"
        if float(text) == 0:
            text = text.lstrip("-")
    elif float(x) == int(float(x)) and abs(float(x)) < 2**53:
        text = str(int(float(x)))
    else:
        text = repr(float(x))
    if group and places is None and "." not in text:
        sign, digits = ("-", text[1:]) if text.startswith("-") else ("", text)
        text = sign + "\\,".join(f"{int(digits):,}".split(","))
    return text


def vec(v: object, places: int | None = None) -> str:
    """``(a, b, c)``."""
    return "(" + ", ".join(num(x, places) for x in _plain(v)) + ")"


def mat(m: object, places: int | None = None, env: str = "pmatrix") -> str:
    """A LaTeX matrix (``pmatrix`` by default, ``bmatrix`` for square brackets)."""
    rows = " \\\\ ".join(" & ".join(num(x, places) for x in row) for row in _plain(m))
    return f"\\begin{{{env}}} {rows} \\end{{{env}}}"


def dot(a: object, b: object) -> str:
    """A dot product written out: ``2 \\cdot 3 + (-1) \\cdot 0``."""
    wrap = lambda x: f"({num(x)})" if float(x) < 0 else num(x)  # noqa: E731
    return " + ".join(f"{wrap(x)} \\cdot {wrap(y)}" for x, y in zip(_plain(a), _plain(b)))


def tex(expr: object) -> str:
    """A sympy expression in LaTeX."""
    import sympy

    return sympy.latex(expr)


def word(n: object) -> str:
    """Small counts in words: ``3 -> three``."""
    names = "zero one two three four five six seven eight nine ten eleven twelve".split()
    return names[int(_plain(n))] if 0 <= int(_plain(n)) < len(names) else num(n)


def pct(x: object, places: int = 1) -> str:
    """A fraction as a percentage, without the sign: ``0.7711 -> 77.1``."""
    return num(100 * float(_plain(x)), places)


FILTERS = {"dot": dot, "num": num, "vec": vec, "mat": mat, "tex": tex, "pct": pct, "word": word}


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------
def answer_files(directory: Path = ANSWERS_DIR) -> list[Path]:
    """The topic templates, in order."""
    return sorted(directory.glob("[0-9][0-9]-*.md"))


@lru_cache(maxsize=None)
def _environment(directory: Path) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(directory), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False)
    env.filters.update(FILTERS)
    return env


def render(path: Path) -> str:
    """The topic file at ``path`` with its placeholders filled from its module's ``values()``."""
    from theory.topics import values_for

    try:
        return _environment(path.parent).get_template(path.name).render(values_for(path.name))
    except jinja2.TemplateError as exc:
        line = getattr(exc, "lineno", None)
        raise FormatError(f"{path.name}{f':{line}' if line else ''}: {exc}") from exc


def split_blocks(text: str, source: str = "<text>") -> list[tuple[str, str]]:
    """``("question", text)`` and ``("answer", text)`` pieces in order; each marker stands alone on
    its line and blocks do not nest."""
    pieces: list[tuple[str, str]] = []
    inside, buf = False, []
    for lineno, line in enumerate(text.splitlines(keepends=True), start=1):
        if BEGIN_ANSWER in line or END_ANSWER in line:
            if line.strip() not in (BEGIN_ANSWER, END_ANSWER):
                raise FormatError(f"{source}:{lineno}: answer markers must stand alone on a line")
            if (line.strip() == BEGIN_ANSWER) == inside:
                raise FormatError(f"{source}:{lineno}: unbalanced {line.strip()}")
            pieces.append(("answer" if inside else "question", "".join(buf)))
            buf, inside = [], not inside
            continue
        buf.append(line)
    if inside:
        raise FormatError(f"{source}: {BEGIN_ANSWER} without {END_ANSWER}")
    pieces.append(("question", "".join(buf)))
    return [(kind, body) for kind, body in pieces if body]


def strip_answers(text: str, source: str = "<text>") -> str:
    """The question-sheet version: answer blocks removed, blank-line runs collapsed."""
    questions = "".join(body for kind, body in split_blocks(text, source) if kind == "question")
    return re.sub(r"\n{3,}", "\n\n", questions).strip() + "\n"


# --------------------------------------------------------------------------------------------
# The rule: every value comes from a placeholder
# --------------------------------------------------------------------------------------------
_PLACEHOLDER = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
# Numerals that are notation, not values: each pattern says which and why.
NOTATION = [
    r"^#+ .*$",  # headings: question numbers
    r"^\s*\d+\. ",  # ordered-list markers
    r"Eq\. \(\d+\)|\\qquad \(\d+\)",  # the homework's equation number
    r"\b(?:topic|question|questions) \d+(?:\.\d+)?(?:\([a-z]\))?",  # cross-references
    r"_\{[^{}]*\}|_\d",  # subscripts: indices (q_2, \alpha_{2j})
    r"\b(?:[Ss]teps?|rows?|columns?) \d\b",  # indices in words
    r"(?<![\w.-])[01](?![\w]|\.\d)",  # zero and one (not -1): none, all, the identity
    r"\b[a-z]\s*[-+]\s*1\b|\\\{-1, 0, \+1\\\}",  # neighbours: n-1, t+1, the offsets {-1, 0, +1}
    r"[Mm]istake \d",  # numbered common mistakes
    r"\^\{?2\}?",  # squares: sigma^2, the norm squared
    r"\\frac\{1\}|\b1\s*/\s*\\sqrt",  # the scale 1/sqrt(d)
    r"\\mathbb\{R\}\^\{?\w+\}?|\\ell\^?\d",  # spaces and norms
    r"`[^`\n]*`",  # code
    r"\]\([^)]*\)",  # link and image targets
]
_NOTATION = re.compile("|".join(f"(?:{p})" for p in NOTATION), re.M)


def numerals_left(template: str) -> list[tuple[int, str]]:
    """(line, text) of every numeral in ``template`` outside placeholders and ``NOTATION``."""
    blank = lambda m: re.sub(r"[^\n]", " ", m.group(0))  # noqa: E731 -- keep line numbers and offsets
    text = _NOTATION.sub(blank, _PLACEHOLDER.sub(blank, template))
    lines = template.splitlines()
    return [(n, lines[n - 1].strip()[:120]) for n, line in enumerate(text.splitlines(), start=1) if re.search(r"\d", line)]
