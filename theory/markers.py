"""Read the answer-file format of ``theory/answers/*.md`` (documented in ``theory/README.md``).

Three things live here:

* splitting a file into question text and ``<!-- BEGIN ANSWER -->`` ... ``<!-- END ANSWER -->`` blocks,
  and stripping the blocks to get the question sheet;
* finding the ``<!-- check: KEY = VALUE -->`` markers and parsing VALUE without losing how many
  decimals it was written with;
* checking that the human-readable text next to a marker says the same thing as VALUE
  (:func:`text_mismatch`). Whether VALUE is *true* is decided by ``theory.facts``.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Union

THEORY_DIR = Path(__file__).resolve().parent
ANSWERS_DIR = THEORY_DIR / "answers"

BEGIN_ANSWER = "<!-- BEGIN ANSWER -->"
END_ANSWER = "<!-- END ANSWER -->"
MARKER_RE = re.compile(r"<!--\s*check:\s*(?P<key>[A-Za-z0-9_.]+)\s*=\s*(?P<value>.*?)\s*-->", re.S)
_RATIONAL_RE = re.compile(r"^\s*(-?\d+)\s*/\s*(\d+)\s*$")


class FormatError(ValueError):
    """An answer file breaks the format (unbalanced answer blocks, a marker outside an answer, ...)."""


# --------------------------------------------------------------------------------------------
# Literal values
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Lit:
    """A number as written in a marker: its exact value, and its decimals (None = exact)."""

    exact: Fraction
    decimals: int | None = None

    def __float__(self) -> float:
        return float(self.exact)

    def tolerance(self) -> float:
        """Half a unit in the last written place; ~0 for integers and fractions."""
        if self.decimals is None:
            return 1e-9 * max(1.0, abs(float(self.exact)))
        return 0.5 * 10.0 ** (-self.decimals) * (1 + 1e-9) + 1e-12


Value = Union[bool, str, Lit, list]


def _number_lit(text: str) -> Lit:
    text = text.strip()
    m = _RATIONAL_RE.match(text)
    if m:
        return Lit(Fraction(int(m.group(1)), int(m.group(2))))
    if re.fullmatch(r"-?\d+", text):
        return Lit(Fraction(int(text)))
    if re.fullmatch(r"-?\d+\.\d+", text):
        return Lit(Fraction(text), len(text.split(".")[1]))
    raise FormatError(f"not a plain number: {text!r} (write ints, decimals like 4.73, or '8/9')")


def parse_value(raw: str) -> Value:
    """Parse a marker's VALUE: a Python literal whose numbers keep their written precision.

    ``True``/``False`` -> bool (a claim), ``'8/9'`` -> exact :class:`Lit`, another string -> a
    formula (Python syntax, e.g. ``'d*mu**2'``), numbers -> :class:`Lit`, lists/tuples -> list.
    """
    try:
        tree = ast.parse(raw.strip(), mode="eval").body
    except SyntaxError as exc:
        raise FormatError(f"marker value is not a Python literal: {raw!r}") from exc

    def conv(node: ast.AST) -> Value:
        if isinstance(node, (ast.List, ast.Tuple)):
            return [conv(e) for e in node.elts]
        if isinstance(node, ast.Constant) and isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return _number_lit(node.value) if _RATIONAL_RE.match(node.value) else node.value
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) or (
            isinstance(node, ast.UnaryOp)
            and isinstance(node.op, ast.USub)
            and isinstance(node.operand, ast.Constant)
        ):
            return _number_lit(ast.get_source_segment(raw.strip(), node))
        raise FormatError(f"unsupported marker value {ast.dump(node)} in {raw!r}")

    return conv(tree)


def flatten(value: Value) -> list:
    if isinstance(value, list):
        return [x for v in value for x in flatten(v)]
    return [value]


# --------------------------------------------------------------------------------------------
# Files, answer blocks, markers
# --------------------------------------------------------------------------------------------
def answer_files(directory: Path = ANSWERS_DIR) -> list[Path]:
    """The topic files, in order (their names start with a number: ``01-...md``)."""
    return sorted(directory.glob("[0-9][0-9]-*.md"))


def split_blocks(text: str, source: str = "<text>") -> list[tuple[str, str]]:
    """Split into ``("question", text)`` and ``("answer", text)`` pieces, in order.

    The markers must each stand alone on a line; blocks may not nest.
    """
    pieces: list[tuple[str, str]] = []
    inside = False
    buf: list[str] = []
    for lineno, line in enumerate(text.splitlines(keepends=True), start=1):
        stripped = line.strip()
        if BEGIN_ANSWER in line or END_ANSWER in line:
            if stripped not in (BEGIN_ANSWER, END_ANSWER):
                raise FormatError(f"{source}:{lineno}: answer markers must stand alone on a line")
            opening = stripped == BEGIN_ANSWER
            if opening == inside:
                raise FormatError(f"{source}:{lineno}: unbalanced {stripped}")
            pieces.append(("answer" if inside else "question", "".join(buf)))
            buf = []
            inside = opening
            continue
        buf.append(line)
    if inside:
        raise FormatError(f"{source}: {BEGIN_ANSWER} without {END_ANSWER}")
    pieces.append(("question", "".join(buf)))
    return [(kind, body) for kind, body in pieces if body]


def strip_answers(text: str, source: str = "<text>") -> str:
    """The question sheet version of a file: answer blocks removed, blank-line runs collapsed."""
    questions = "".join(body for kind, body in split_blocks(text, source) if kind == "question")
    if MARKER_RE.search(questions):
        raise FormatError(f"{source}: a check marker lies outside an answer block")
    return re.sub(r"\n{3,}", "\n\n", questions).strip() + "\n"


def strip_markers(text: str) -> str:
    """Remove the check markers (for rendering); a marker alone on its line takes the line."""
    text = re.sub(r"^[ \t]*" + MARKER_RE.pattern + r"[ \t]*\n", "", text, flags=re.M | re.S)
    return MARKER_RE.sub("", text)


@dataclass
class Marker:
    key: str
    raw: str
    value: Value
    source: str
    line: int
    span: str = field(repr=False)  # the text it vouches for: up to a blank line or the next marker
    span_start: int = 0  # offset of the span in the file's text


def find_markers(text: str, source: str = "<text>") -> list[Marker]:
    """All check markers of a file, each with the span of text that it vouches for."""
    for kind, body in split_blocks(text, source):
        if kind == "question" and MARKER_RE.search(body):
            raise FormatError(f"{source}: a check marker lies outside an answer block")
    matches = list(MARKER_RE.finditer(text))
    markers = []
    for i, m in enumerate(matches):
        stop = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        rest = text[m.end() : stop]
        blank = re.search(r"\n[ \t]*\n", rest)
        span = rest[: blank.start()] if blank else rest
        for end in (BEGIN_ANSWER, END_ANSWER):
            span = span.split(end)[0]
        markers.append(
            Marker(
                key=m.group("key"),
                raw=m.group("value"),
                value=parse_value(m.group("value")),
                source=source,
                line=text.count("\n", 0, m.start()) + 1,
                span=span,
                span_start=m.end(),
            )
        )
    return markers


def all_markers(directory: Path = ANSWERS_DIR) -> list[Marker]:
    out: list[Marker] = []
    for path in answer_files(directory):
        out.extend(find_markers(path.read_text(encoding="utf-8"), path.name))
    return out


# --------------------------------------------------------------------------------------------
# Numbers in the text
# --------------------------------------------------------------------------------------------
_NUM_RE = re.compile(
    r"""
      \\[dt]?frac\s*\{\s*(?P<fn>\d+)\s*\}\s*\{\s*(?P<fd>\d+)\s*\}     # \frac{8}{9}
    | (?<![\d.])(?P<rn>\d+)\s*/\s*(?P<rd>\d+)(?![\d.])                # 8/9
    | (?P<thou>\d{1,3}(?:\\,\d{3})+)(?!\d)                             # 590\,592
    | (?P<dec>\d+(?:\.\d+)?)                                           # 40, 4.73
    """,
    re.X,
)


@dataclass(frozen=True)
class Token:
    value: Fraction
    start: int  # the digits (or the \\frac), without a sign in front
    end: int


def numeric_token_spans(text: str) -> list[Token]:
    """Every number written in ``text``, as exact fractions with their positions, in order.

    A ``-`` (or U+2212) right before a number is its sign unless it follows a letter, a digit or a
    closing bracket (``200-4`` is a subtraction, ``(3,-1,0)`` and ``$-1$`` hold negatives).
    Indices and exponents (``q_2``, ``e^{4}``, ``512^2``, ``10^{-6}``) are not values and are skipped.
    """
    out = []
    for m in _NUM_RE.finditer(text):
        if m.group("fn") is not None:
            val = Fraction(int(m.group("fn")), int(m.group("fd")))
        elif m.group("rn") is not None:
            val = Fraction(int(m.group("rn")), int(m.group("rd")))
        elif m.group("thou") is not None:
            val = Fraction(int(m.group("thou").replace("\\,", "")))
        else:
            val = Fraction(m.group("dec"))
        start = m.start()
        signed = start >= 1 and text[start - 1] in "-\u2212" and not (
            start >= 2 and (text[start - 2].isalnum() or text[start - 2] in ")]}|")
        )
        lead = text[: start - 1 if signed else start].rstrip(" ")
        if lead.endswith(("_", "^", "_{", "^{")):
            continue
        out.append(Token(-val if signed else val, m.start(), m.end()))
    return out


def numeric_tokens(text: str) -> list[Fraction]:
    """The values of :func:`numeric_token_spans`."""
    return [t.value for t in numeric_token_spans(text)]


# --------------------------------------------------------------------------------------------
# Formulas in the text (a small LaTeX subset -> sympy)
# --------------------------------------------------------------------------------------------
def _brace_group(s: str, i: int) -> tuple[str, int]:
    """``s[i]`` must be ``{`` (after spaces): return the group's content and the index after it."""
    while i < len(s) and s[i].isspace():
        i += 1
    if i >= len(s) or s[i] != "{":
        # a single-token argument, as in \sqrt d or \frac12
        if i < len(s):
            return s[i], i + 1
        raise ValueError("missing argument")
    depth = 0
    for j in range(i, len(s)):
        if s[j] == "{":
            depth += 1
        elif s[j] == "}":
            depth -= 1
            if depth == 0:
                return s[i + 1 : j], j + 1
    raise ValueError("unbalanced braces")


def _expand_commands(s: str) -> str:
    m = re.search(r"\\(?:[dt]?frac|sqrt)(?![A-Za-z])", s)
    if not m:
        return s
    head, i = s[: m.start()], m.end()
    if m.group(0) == "\\sqrt":
        arg, i = _brace_group(s, i)
        mid = f" sqrt({_expand_commands(arg)}) "
    else:
        num, i = _brace_group(s, i)
        den, i = _brace_group(s, i)
        mid = f" (({_expand_commands(num)})/({_expand_commands(den)})) "
    return head + mid + _expand_commands(s[i:])


_SYMBOLS = ("d", "mu", "sigma", "beta", "alpha", "normmusq", "n", "e", "h", "k", "d_k", "d_v",
            "n_batch", "d_seq", "d_model", "d_ff", "N", "P", "C", "D", "H", "W", "L")


@lru_cache(maxsize=4096)
def latex_to_sympy(latex: str):
    """Translate a small LaTeX formula (``d\\,(\\sigma^4 + 2\\mu^2\\sigma^2)``) to sympy, or None."""
    import sympy
    from sympy.parsing.sympy_parser import (
        convert_xor,
        implicit_multiplication,
        parse_expr,
        standard_transformations,
    )

    s = latex.strip().rstrip(".,;:")
    s = re.sub(r"\\(?:left|right|displaystyle|big|Big)(?![A-Za-z])", " ", s)
    s = re.sub(r"\\[,;:! ]", " ", s)
    s = s.replace("~", " ")
    norm = r"(?:\\lVert|\\\|)\s*(?:\\boldsymbol\s*\{\s*\\mu\s*\}|\\mu)\s*(?:\\rVert|\\\|)"
    s = re.sub(rf"(?:\{{\s*{norm}\s*\}}|{norm})\s*\^\s*(?:\{{\s*2\s*\}}|2)", " normmusq ", s)
    s = re.sub(r"([A-Za-z])_\{?\s*\\(?:text|mathrm)\{(\w+)\}\s*\}?", r"\1_\2", s)
    s = re.sub(r"([A-Za-z])_\{(\w+)\}", r"\1_\2", s)
    try:
        s = _expand_commands(s)
    except ValueError:
        return None
    s = re.sub(r"\\(sigma|mu|beta|alpha)(?![A-Za-z])", r" \1 ", s)
    s = re.sub(r"\\(?:cdot|times)(?![A-Za-z])", " * ", s)
    if "\\" in s or "[" in s or "|" in s:
        return None  # a command or notation outside the subset: not a formula we can read
    s = s.replace("{", "(").replace("}", ")").replace("^", "**")
    if not s.strip():
        return None
    local = {name: sympy.Symbol(name) for name in _SYMBOLS}
    local["sqrt"] = sympy.sqrt
    try:
        expr = parse_expr(s, local_dict=local, transformations=standard_transformations
                          + (implicit_multiplication, convert_xor))
    except Exception:  # noqa: BLE001 - anything unparsable is simply "not this formula"
        return None
    return expr if isinstance(expr, sympy.Expr) else None


@lru_cache(maxsize=1024)
def python_to_sympy(formula: str):
    """A marker's formula (Python syntax: ``'d*(sigma**4 + 2*mu**2*sigma**2)'``) as sympy."""
    import sympy
    from sympy.parsing.sympy_parser import parse_expr

    local = {name: sympy.Symbol(name) for name in _SYMBOLS}
    local["sqrt"] = sympy.sqrt
    return parse_expr(formula, local_dict=local)


_PROBES = ((1.37, 0.71, 2.23, 0.53), (0.61, 1.91, 1.13, 3.07))


def _same_expr(a, b) -> bool:
    """Equal as functions: same symbols, and the same value at two generic points (the formulas
    here are polynomials and roots, for which this is reliable), then confirmed by sympy."""
    import sympy

    try:
        syms = sorted(a.free_symbols | b.free_symbols, key=str)
        if a.free_symbols != b.free_symbols:
            return False
        for probe in _PROBES:
            point = {s: probe[i % len(probe)] + 0.1 * (i // len(probe)) for i, s in enumerate(syms)}
            va, vb = complex(a.evalf(subs=point)), complex(b.evalf(subs=point))
            if abs(va - vb) > 1e-9 * max(1.0, abs(va), abs(vb)):
                return False
        return sympy.simplify(a - b) == 0
    except Exception:  # noqa: BLE001 - anything sympy cannot compare is "not equal"
        return False


_MATH_RE = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$", re.S)
_SPLIT_RE = re.compile(
    r"=|\\approx|\\q?quad|\\in(?![A-Za-z])|\\(?:le|ge|leq|geq|to|Rightarrow)(?![A-Za-z])|(?<!\\)[,;]|\\\\"
)


def math_segments(text: str) -> list[tuple[int, str]]:
    """The maths of ``text`` (``$...$`` and ``$$...$$``), each with its offset in ``text``."""
    out = []
    for m in _MATH_RE.finditer(text):
        group = 1 if m.group(1) is not None else 2
        out.append((m.start(group), m.group(group)))
    return out


def _pieces(offset: int, seg: str, with_powers: bool) -> list[tuple[int, str]]:
    """Candidate expressions of a math segment: the sides of its (in)equations, and optionally
    the exponents of ``\\mathbb{R}^{...}``; each with its offset."""
    out = []
    if with_powers:
        for m in re.finditer(r"\\mathbb\s*\{?\s*R\s*\}?\s*\^\s*", seg):
            try:
                body, after = _brace_group(seg, m.end())
            except ValueError:
                continue
            closing = 1 if seg[after - 1] == "}" else 0
            out.append((offset + after - closing - len(body), body))
    pos = 0
    for m in list(_SPLIT_RE.finditer(seg)) + [None]:
        stop = m.start() if m else len(seg)
        out.append((offset + pos, seg[pos:stop]))
        pos = m.end() if m else pos
    return out


def locate_formula(formula: str, text: str) -> tuple[int, int] | None:
    """Where ``text`` writes, as one side of an equation in its maths, a formula equal to
    ``formula``: (start, end) offsets, or None.

    In a chain ``Var[...] = (sigma^2 + mu^2)^2 - mu^4 = sigma^4 + 2 mu^2 sigma^2`` *every* side
    that can be read must equal the formula, so a wrong intermediate step is caught too.
    """
    target = python_to_sympy(formula)
    for offset, seg in math_segments(text):
        found, others_agree = None, True
        for start, part in _pieces(offset, seg, with_powers=False):
            expr = latex_to_sympy(part)
            if expr is None:
                continue
            if _same_expr(expr, target):
                found = found or (start, start + len(part))
            else:
                others_agree = False
        if found:
            return found if others_agree else None
    return None


def locate_shape(shape: list[str], text: str) -> tuple[int, int] | None:
    """Where ``text`` writes ``a \\times b \\times ...`` equal to ``shape`` (offsets), or None."""
    targets = [python_to_sympy(x) for x in shape]
    for offset, seg in math_segments(text):
        for start, cand in _pieces(offset, seg, with_powers=True):
            parts = re.split(r"\\times(?![A-Za-z])", cand)
            if len(parts) != len(targets):
                continue
            exprs = [latex_to_sympy(p) for p in parts]
            if all(e is not None and _same_expr(e, t) for e, t in zip(exprs, targets)):
                return start, start + len(cand)
    return None


def locate_numbers(wanted: list[Fraction], text: str) -> list[Token] | None:
    """The first run of adjacent numbers in ``text`` equal to ``wanted``, or None."""
    tokens = numeric_token_spans(text)
    n = len(wanted)
    for i in range(len(tokens) - n + 1):
        if [t.value for t in tokens[i : i + n]] == wanted:
            return tokens[i : i + n]
    return None


def locate(marker: "Marker"):
    """Where the span shows the marker's value: a list of Tokens (numbers), (start, end)
    (formula or shape), True (a claim: nothing to show), or None when it is not shown."""
    value = marker.value
    if isinstance(value, bool):
        return True if value else None
    if isinstance(value, str):
        return locate_formula(value, marker.span)
    flat = flatten(value)
    if flat and all(isinstance(x, str) for x in flat):
        return locate_shape(flat, marker.span)
    if not all(isinstance(x, Lit) for x in flat):
        return None
    return locate_numbers([x.exact for x in flat], marker.span)


def text_mismatch(marker: Marker) -> str | None:
    """None if the marker's span shows its value; otherwise what is wrong, for a test message.

    * numbers: the span's numbers contain the value's numbers, in order and adjacent
      (``4.73`` must be written ``4.73``; ``'8/9'`` as ``\\tfrac{8}{9}`` or ``8/9``);
    * a formula string: some side of some equation in the span's maths equals it (sympy);
    * a list of formula strings (a symbolic shape): the span's maths writes it with ``\\times``;
    * ``True``: a claim checked by code only; nothing to match in the text.
    """
    value, where = marker.value, f"{marker.source}:{marker.line} [{marker.key}]"
    if locate(marker) is not None:
        return None
    if isinstance(value, bool):
        return f"{where}: a claim marker must be True"
    if isinstance(value, str):
        return f"{where}: no formula equal to {value!r} in the text after the marker"
    flat = flatten(value)
    if flat and all(isinstance(x, str) for x in flat):
        return f"{where}: no shape {' x '.join(flat)} in the text after the marker"
    if not all(isinstance(x, Lit) for x in flat):
        return f"{where}: mixes numbers and formulas"
    return f"{where}: the text after the marker does not show the value {marker.raw}"
