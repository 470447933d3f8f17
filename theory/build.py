"""Render the worked answers to one self-contained HTML page, and write the question sheet.

    python -m theory.build                       # theory/build/answers.html, questions.html, questions.md
    python -m theory.build --questions PATH.md   # also (or only, with --no-html) the sheet at PATH.md
    python -m theory.build --out-dir DIR

The HTML needs no network: maths is converted to MathML (latex2mathml), the math font
(``theory.mathfont``) and the figure are embedded as data: URIs, the style sheet is inline and
there is no script.
"""
from __future__ import annotations

import argparse
import base64
import html
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import markdown
from latex2mathml.converter import convert as latex_to_mathml

from theory import mathfont, printfit
from theory.alphanumerics import apply_mathvariants
from theory.render import ANSWERS_DIR, THEORY_DIR, answer_files, render, split_blocks, strip_answers

DEFAULT_OUT = THEORY_DIR / "build"
TITLE = "Attention and Vision Transformers: worked theory answers"
QUESTIONS_TITLE = "Attention and Vision Transformers: theory questions"

_FENCE_RE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
_CODE_RE = re.compile(r"`[^`\n]+`")
_DISPLAY_RE = re.compile(r"\$\$(.+?)\$\$", re.S)
_INLINE_RE = re.compile(r"(?<![\\$])\$(?!\$)(.+?)(?<![\\$])\$(?!\$)", re.S)


class MathError(ValueError):
    """A formula that latex2mathml cannot convert."""


def _mathml(latex: str, display: bool, where: str) -> str:
    try:
        out = latex_to_mathml(latex.strip(), display="block" if display else "inline")
    except Exception as exc:  # noqa: BLE001 - report which formula, whatever went wrong
        raise MathError(f"{where}: cannot convert ${latex.strip()}$: {exc!r}") from exc
    if "<merror" in out:
        raise MathError(f"{where}: latex2mathml reports an error in ${latex.strip()}$")
    return apply_mathvariants(overbars(stretch_matrix_brackets(out)))


# latex2mathml writes a matrix's brackets (pmatrix, bmatrix, ...) as plain <mo>: some browsers draw
# them one line tall. Marked as fences that stretch, they span the whole matrix everywhere.
_OPENING = re.compile(r"<mo>(&#x0005B;|&#x00028;|&#x0007B;|&#x0007C;|&#x02016;|\[|\(|\{|\|)</mo>(?=<mtable)")
_CLOSING = re.compile(r"(</mtable>)<mo>(&#x0005D;|&#x00029;|&#x0007D;|&#x0007C;|&#x02016;|\]|\)|\}|\|)</mo>")


def stretch_matrix_brackets(mathml: str) -> str:
    """The brackets around every matrix, as stretchy fences."""
    mathml = _OPENING.sub(r'<mo stretchy="true" fence="true" form="prefix">\1</mo>', mathml)
    return _CLOSING.sub(r'\1<mo stretchy="true" fence="true" form="postfix">\2</mo>', mathml)


# latex2mathml writes \bar with a macron (U+00AF) and \overline with a horizontal bar (U+2015): the
# math font can stretch neither sideways, so \bar{xy} gets a dot-sized bar between the letters. The
# overline (U+203E) as an accent stretches over its whole base, in STIX Two Math and in MathML Core.
MATHML = "http://www.w3.org/1998/Math/MathML"
_BARS = ("\u00af", "\u2015")
ET.register_namespace("", MATHML)


def overbars(mathml: str) -> str:
    """Bars over a formula (``\\bar``, ``\\overline``) as overline accents that span their base."""
    if not any(f"&#x{ord(bar):05X};" in mathml or bar in mathml for bar in _BARS):
        return mathml
    root = ET.fromstring(mathml)
    for mover in root.iter(f"{{{MATHML}}}mover"):
        script = mover[1]
        if script.tag == f"{{{MATHML}}}mo" and script.text in _BARS:
            script.text, script.attrib = "\u203e", {}
            mover.set("accent", "true")
    return ET.tostring(root, encoding="unicode")


def render_markdown(text: str, base_dir: Path, where: str = "<text>") -> str:
    """Markdown + $...$ / $$...$$ maths -> HTML fragment with MathML and embedded images."""
    stash: dict[str, str] = {}
    display: set[str] = set()

    def keep(fragment: str, is_display: bool = False) -> str:
        key = f"ZZSTASH{len(stash)}ZZ"
        stash[key] = fragment
        if is_display:
            display.add(key)
        return key

    # Code is left alone: protect it from the maths pass, then give it back to markdown.
    code: dict[str, str] = {}

    def keep_code(m: re.Match) -> str:
        key = f"ZZCODE{len(code)}ZZ"
        code[key] = m.group(0)
        return key

    text = _FENCE_RE.sub(keep_code, text)
    text = _CODE_RE.sub(keep_code, text)
    text = _DISPLAY_RE.sub(lambda m: "\n\n" + keep(_mathml(m.group(1), True, where), True) + "\n\n", text)
    text = _INLINE_RE.sub(lambda m: keep(_mathml(m.group(1), False, where)), text)
    for key, frag in code.items():
        text = text.replace(key, frag)
    body = markdown.markdown(text, extensions=["tables", "fenced_code", "sane_lists"], output_format="html")
    for key, frag in stash.items():
        if key in display:
            body = body.replace(f"<p>{key}</p>", f"<div{_display_attrs(frag)}>{frag}</div>")
        body = body.replace(key, frag)

    def embed(m: re.Match) -> str:
        src = html.unescape(m.group(2))
        if re.match(r"^[a-z]+:", src):
            return m.group(0)
        path = (base_dir / src).resolve()
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        mime = "image/png" if path.suffix.lower() == ".png" else "image/" + path.suffix.lstrip(".").lower()
        return f'{m.group(1)}"data:{mime};base64,{data}"'

    return re.sub(r'(<img[^>]*?\ssrc=)"([^"]+)"', embed, body)


def _display_attrs(mathml: str) -> str:
    """The attributes of a display formula's box: a print scale where it is wider than the page."""
    scale = printfit.print_scale(mathml)
    return ' class="display-math"' + (f' style="--print-scale: {scale:.3f}"' if scale < 1 else "")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _add_heading_ids(body: str) -> tuple[str, list[tuple[int, str, str]]]:
    toc = []

    def add(m: re.Match) -> str:
        level, inner = int(m.group(1)), m.group(2)
        plain = html.unescape(re.sub(r"<[^>]+>", "", inner))
        ident = _slug(plain)
        toc.append((level, ident, inner))
        return f'<h{level} id="{ident}">{inner}</h{level}>'

    return re.sub(r"<h([12])>(.*?)</h\1>", add, body), toc


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; line-height: 1.55;
       max-width: 52rem; margin: 2rem auto; padding: 0 1rem; color: #1d1d1f; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3rem; margin-top: 2.5rem; }
h2 { margin-top: 2rem; }
nav ul { list-style: none; padding-left: 1rem; } nav li.l2 { padding-left: 1.2rem; font-size: .95em; }
.answer { border-left: 4px solid #3a7bd5; background: #f5f8fd; padding: .2rem 1rem; margin: 1rem 0; }
.answer::before { content: "Answer"; font-weight: 600; color: #3a7bd5; font-size: .85em;
                  text-transform: uppercase; letter-spacing: .05em; }
blockquote { border-left: 4px solid #e0a030; background: #fff8e8; margin: 1rem 0; padding: .2rem 1rem; }
table { border-collapse: collapse; margin: 1rem 0; } th, td { border: 1px solid #ccc; padding: .25rem .6rem; }
th { background: #f0f0f0; } code { background: #f2f2f2; padding: 0 .2rem; border-radius: 3px; }
.display-math { overflow-x: auto; overflow-y: hidden; padding: .3rem 0; margin: .5rem 0; }
img { max-width: 100%; }
""" + f"""math {{ font-family: "{mathfont.FAMILY}", "STIX Two Math", "Latin Modern Math", "Cambria Math", math; }}
math[display="block"] {{ font-size: {printfit.DISPLAY_EM}em; }}
@media print {{
  @page {{ margin: {printfit.MARGIN_MM}mm; }}
  body {{ max-width: none; margin: 0; padding: 0; font-size: {printfit.TEXT_PT}pt; }}
  .display-math {{ overflow: visible; }}
  math[display="block"] {{ font-size: calc({printfit.DISPLAY_EM}em * var(--print-scale, 1)); }}
  h1, h2 {{ break-after: avoid; }} .display-math, tr, img {{ break-inside: avoid; }}
}}
"""


def _page(title: str, body: str, toc: list[tuple[int, str, str]]) -> str:
    items = "\n".join(
        f'<li class="l{level}"><a href="#{ident}">{inner}</a></li>' for level, ident, inner in toc
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{mathfont.font_face(body)}\n{STYLE}</style>\n</head>\n<body>\n"
        f"<header><p><strong>{html.escape(title)}</strong></p>\n<nav><ul>\n{items}\n</ul></nav></header>\n"
        f"<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def render_answers_html(directory: Path = ANSWERS_DIR) -> str:
    """Every topic file, answers included, as one HTML page."""
    parts = []
    for path in answer_files(directory):
        for kind, piece in split_blocks(render(path), path.name):
            frag = render_markdown(piece, path.parent, path.name)
            parts.append(f'<div class="answer">\n{frag}\n</div>' if kind == "answer" else frag)
    body, toc = _add_heading_ids("\n".join(parts))
    return _page(TITLE, body, toc)


def question_sheet(directory: Path = ANSWERS_DIR) -> str:
    """The question sheet (Markdown with LaTeX maths): every topic file without its answers."""
    intro = (
        f"# {QUESTIONS_TITLE}\n\n"
        "Answer each question in your own words; show derivations and intermediate numbers. "
        "Mathematics is written in LaTeX notation.\n"
    )
    topics = [strip_answers(render(p), p.name) for p in answer_files(directory)]
    # The topic files' own titles become second-level headings under the sheet's title.
    topics = [re.sub(r"^(#+)", r"#\1", t, flags=re.M) for t in topics]
    return intro + "\n" + "\n".join(topics)


def render_questions_html(directory: Path = ANSWERS_DIR) -> str:
    sheet = question_sheet(directory)
    sheet = sheet.split("\n", 1)[1]  # the page template prints the title
    body, toc = _add_heading_ids(render_markdown(sheet, directory, "questions"))
    return _page(QUESTIONS_TITLE, body, toc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render theory/answers to HTML and a question sheet.")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT, help="where the HTML pages go")
    parser.add_argument("--questions", type=Path, help="also write the question sheet (Markdown) here")
    parser.add_argument("--no-html", action="store_true", help="only write the --questions sheet")
    args = parser.parse_args(argv)

    written = []
    if not args.no_html:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        for name, content in (
            ("answers.html", render_answers_html()),
            ("questions.html", render_questions_html()),
            ("questions.md", question_sheet()),
        ):
            (args.out_dir / name).write_text(content, encoding="utf-8")
            written.append(args.out_dir / name)
    if args.questions:
        args.questions.parent.mkdir(parents=True, exist_ok=True)
        args.questions.write_text(question_sheet(), encoding="utf-8")
        written.append(args.questions)
    if not written:
        parser.error("nothing to write: give --questions with --no-html")
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
