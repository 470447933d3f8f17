"""The page's maths can be drawn with the font the page carries.

A browser stretches a bracket only if the math font's MATH table has larger variants or an
assembly for it; it draws a bold or double-struck letter only as that letter's own Unicode
character (MathML Core, which Chromium implements, ignores mathvariant="bold"), and only if the
font has a glyph for it. These tests read the built page as a browser would: the embedded font,
and what the page's MathML asks of it. Each check is also shown to fail on a page broken for it.
"""
from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser

import pytest
from fontTools.ttLib import TTFont

from theory import build
from theory.alphanumerics import apply_mathvariants, styled

FONT_FACE = re.compile(r'@font-face \{ font-family: "([^"]+)";[^}]*?url\(data:font/woff;base64,([A-Za-z0-9+/=]+)\)')
# What MathML's operator dictionary stretches when it stands as an <mo>: vertically, and sideways
# over or under a base (bars, arrows, braces); the large operators a display formula draws in a
# larger size; the radical of a root.
STRETCHY = set("()[]{}|\u2016\u27e8\u27e9\u230a\u230b\u2308\u2309")
STRETCHY_SIDEWAYS = set("\u00af\u2015\u203e\u2190\u2192\u2194\u23de\u23df_")
LARGE = set("\u2211\u220f\u222b")
RADICAL = "\u221a"
TOKENS = {"mi", "mn", "mo", "mtext", "ms"}


class Drawn(HTMLParser):
    """What a page's MathML asks of the math font: the characters it draws (a one-letter <mi> in
    italic, as MathML's automatic italic draws it), those it stretches up and down or sideways,
    and styles left to a mathvariant attribute."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chars: set[str] = set()
        self.stretched: set[str] = set()
        self.sideways: set[str] = set()
        self.variants: list[tuple[str, str]] = []
        self._token: tuple[str, dict[str, str | None], bool] | None = None
        self._open: list[list] = []  # inside <math>: [tag, children so far] of each open element
        self._display = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "math":
            self._display, self._open = dict(attrs).get("display") == "block", []
        if not self._open and tag != "math":
            return
        parent = self._open[-1] if self._open else None
        if parent:
            parent[1] += 1
        self._open.append([tag, 0])
        if tag in ("msqrt", "mroot"):
            self.stretched.add(RADICAL)
        elif tag in TOKENS:  # the second child of an <mover> or <munder> is its script
            script = parent is not None and parent[0] in ("mover", "munder", "munderover") and parent[1] > 1
            self._token = (tag, dict(attrs), script)

    def handle_endtag(self, tag: str) -> None:
        if self._open and self._open[-1][0] == tag:
            self._open.pop()
        if tag in TOKENS:
            self._token = None

    def handle_data(self, data: str) -> None:
        if self._token is None:
            return
        tag, attrs, script = self._token
        self.chars.update(c for c in data if not c.isspace())
        variant = attrs.get("mathvariant")
        if variant not in (None, "normal"):
            self.variants.append((variant, data))
        if tag == "mi" and len(data) == 1 and variant is None:
            self.chars.add(styled(data, "italic"))
        if tag == "mo" and attrs.get("stretchy") != "false":
            if script and (data in STRETCHY_SIDEWAYS or attrs.get("stretchy") == "true"):
                self.sideways.add(data)
            elif data in STRETCHY or attrs.get("stretchy") == "true" or (data in LARGE and self._display):
                self.stretched.add(data)


def embedded_font(page: str) -> tuple[str, TTFont]:
    match = FONT_FACE.search(page)
    assert match, "the page embeds no WOFF math font"
    return match.group(1), TTFont(io.BytesIO(base64.b64decode(match.group(2))))


def with_font(page: str, font: TTFont) -> str:
    """``page`` carrying ``font`` instead of its own."""
    out = io.BytesIO()
    font.flavor = "woff"
    font.save(out)
    data = base64.b64encode(out.getvalue()).decode("ascii")
    return FONT_FACE.sub(lambda m: m.group(0).replace(m.group(2), data), page, count=1)


def problems(page: str) -> list[str]:
    """Why some of the page's maths would not render as written with its own font (empty: none)."""
    family, font = embedded_font(page)
    found = []
    if f'math {{ font-family: "{family}"' not in page:
        found.append(f"maths is not set in the embedded font {family!r}")
    drawn = Drawn()
    drawn.feed(page)
    cmap = font.getBestCmap()
    found += [f"no glyph for U+{ord(c):04X} {c}" for c in sorted(drawn.chars) if ord(c) not in cmap]
    found += [f'mathvariant="{v}" on {text!r}: Chromium draws it plain' for v, text in drawn.variants]
    if "MATH" not in font:
        return found + ["the font has no MATH table: nothing can stretch"]
    variants = font["MATH"].table.MathVariants
    for chars, coverage, constructions, how in (
            (drawn.stretched, variants.VertGlyphCoverage, variants.VertGlyphConstruction, "stretch"),
            (drawn.sideways, variants.HorizGlyphCoverage, variants.HorizGlyphConstruction, "stretch sideways")):
        for c in sorted(chars):
            glyph = cmap.get(ord(c))
            construction = constructions[coverage.glyphs.index(glyph)] if glyph in coverage.glyphs else None
            if construction is None or (construction.VariantCount < 2 and construction.GlyphAssembly is None):
                found.append(f"{c} (U+{ord(c):04X}) cannot {how}: no larger variant or assembly in the MATH table")
    return found


@pytest.fixture(scope="module")
def questions_html() -> str:
    return build.render_questions_html()


def test_every_character_has_a_glyph_and_every_bracket_stretches(answers_html, questions_html):
    for page in (answers_html, questions_html):
        drawn = Drawn()
        drawn.feed(page)
        assert {"(", "[", RADICAL} <= drawn.stretched  # what is checked is there to check
        assert problems(page) == []
    drawn = Drawn()
    drawn.feed(answers_html)
    assert drawn.sideways == {"\u203e"}  # \bar c, as an overline


def test_bold_and_double_struck_letters_are_unicode_characters(answers_html):
    assert "\U0001d741" in answers_html  # \boldsymbol{\mu}: MATHEMATICAL BOLD ITALIC SMALL MU
    assert "\U0001d7cf" in answers_html  # \mathbf{1}: MATHEMATICAL BOLD DIGIT ONE
    assert "\U0001d7d9" in answers_html  # \mathbb{1}: MATHEMATICAL DOUBLE-STRUCK DIGIT ONE
    assert not re.search(r'mathvariant="(?!normal")', answers_html)


def test_the_font_is_subset():
    # The whole of STIX Two Math is 1.5 MB; the page carries only what it draws.
    assert len(FONT_FACE.search(build.render_questions_html()).group(2)) < 120_000


@pytest.mark.parametrize(("char", "variant", "expected"), [
    ("\u03bc", "bold-italic", "\U0001d741"), ("1", "bold", "\U0001d7cf"), ("W", "bold", "\U0001d416"),
    ("R", "double-struck", "\u211d"), ("E", "double-struck", "\U0001d53c"), ("h", "italic", "\u210e"),
    ("x", "italic", "\U0001d465"), ("\u03f5", "bold", "\U0001d6dc"), ("+", "bold", "+"), ("x", "normal", "x"),
])
def test_styled_letters(char, variant, expected):
    assert styled(char, variant) == expected


def test_mathvariants_become_characters():
    out = apply_mathvariants('<mi mathvariant="bold-italic">&#x003BC;</mi><mi mathvariant="normal">P</mi>'
                             '<mn mathvariant="bold">12</mn>')
    assert out == '<mi>\U0001d741</mi><mi mathvariant="normal">P</mi><mn>\U0001d7cf\U0001d7d0</mn>'


def test_without_the_font_package_the_build_says_what_to_install(monkeypatch):
    monkeypatch.setattr(build.mathfont, "FONT_IN_PACKAGE", ("no_such_font_package", "font.ttf"))
    with pytest.raises(build.mathfont.MathFontMissing, match="pip install 'no_such_font_package"):
        build.mathfont.find_math_font()


# --- each check fails on a page broken for it -----------------------------------------------
def test_a_missing_glyph_is_found(answers_html):
    _, font = embedded_font(answers_html)
    for table in font["cmap"].tables:
        table.cmap.pop(0x1D741, None)  # bold italic mu
    assert problems(with_font(answers_html, font)) == ["no glyph for U+1D741 \U0001d741"]


def test_a_font_without_math_table_is_found(answers_html):
    _, font = embedded_font(answers_html)
    del font["MATH"]
    assert problems(with_font(answers_html, font)) == ["the font has no MATH table: nothing can stretch"]


def test_a_bracket_that_cannot_stretch_is_found(answers_html):
    _, font = embedded_font(answers_html)
    variants = font["MATH"].table.MathVariants
    construction = variants.VertGlyphConstruction[variants.VertGlyphCoverage.glyphs.index(font.getBestCmap()[ord("(")])]
    construction.MathGlyphVariantRecord = construction.MathGlyphVariantRecord[:1]
    construction.VariantCount, construction.GlyphAssembly = 1, None
    assert problems(with_font(answers_html, font)) == [
        "( (U+0028) cannot stretch: no larger variant or assembly in the MATH table"]


def test_a_style_left_to_mathvariant_is_found(answers_html):
    page = answers_html.replace("<mi>\U0001d741</mi>", '<mi mathvariant="bold-italic">\u03bc</mi>', 1)
    assert problems(page) == ["mathvariant=\"bold-italic\" on '\u03bc': Chromium draws it plain"]


def test_maths_in_another_font_is_found(answers_html):
    page = answers_html.replace(f'math {{ font-family: "{build.mathfont.FAMILY}", ', "math { font-family: ", 1)
    assert problems(page) == [f"maths is not set in the embedded font {build.mathfont.FAMILY!r}"]
