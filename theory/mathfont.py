"""The math font the HTML page carries: STIX Two Math, subset to the characters the page draws.

A browser stretches brackets and roots only with an OpenType math font (one with a MATH table), and
draws bold or double-struck letters only with a font that has them; the page cannot count on the
reader's machine having one the browser picks (Chromium on Linux drew brackets one line tall and
bold letters plain). So the page embeds one, as a base64 ``@font-face`` in its style sheet: it
reads offline.

The font file comes from the Python package ziamath (a dependency in pyproject.toml, MIT), which
ships STIX Two Math (SIL Open Font License 1.1, no reserved font name); fontTools cuts it down to
the glyphs the page needs, with their stretched variants, so the page grows by tens of kB, not the
font's 1.5 MB. Its copyright and licence records are kept in the subset.
"""
from __future__ import annotations

import base64
import html
import importlib.util
import io
import re
from functools import lru_cache
from pathlib import Path

from theory.alphanumerics import styled

FONT_IN_PACKAGE = ("ziamath", "fonts/STIXTwoMath-Regular.ttf")
FAMILY = "Theory Math"  # the @font-face name: no clash with an installed STIX Two Math
RADICAL = "\u221a"  # drawn by <msqrt> and <mroot>, which hold no character of their own
# OpenType layout features worth keeping: script-size forms (ssty), dotless forms under accents
# (dtls), flattened accents (flac), and those that compose or place marks.
FEATURES = ["ssty", "dtls", "flac", "ccmp", "mark", "mkmk", "kern"]


class MathFontMissing(RuntimeError):
    """No math font to embed."""


def missing_package() -> MathFontMissing:
    package = FONT_IN_PACKAGE[0]
    return MathFontMissing(
        f"theory.build takes the math font STIX Two Math from the Python package {package}, which is not "
        f"installed: pip install '{package}>=0.13' (pyproject.toml lists it; make setup installs it)")


def find_math_font() -> Path:
    """The STIX Two Math file shipped inside the ziamath package (the package is not imported)."""
    package, name = FONT_IN_PACKAGE
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise missing_package()
    path = Path(next(iter(spec.submodule_search_locations))) / name
    if not path.is_file():
        raise MathFontMissing(f"{path} is missing: reinstall {package} (pip install --force-reinstall ziamath)")
    return path


_MATH = re.compile(r"<math\b.*?</math>", re.S)
_TOKEN = re.compile(r"<(mi|mn|mo|mtext|ms)(\s[^>]*)?>([^<]*)</\1>")


def drawn_characters(page: str) -> set[str]:
    """Every character the page's MathML draws, as the browser draws it: a one-letter <mi> in
    italic (MathML's automatic italic), the radical where there is a root."""
    chars: set[str] = set()
    for formula in _MATH.findall(page):
        for tag, attrs, text in _TOKEN.findall(formula):
            text = html.unescape(text)
            if tag == "mi" and len(text) == 1 and "mathvariant" not in (attrs or ""):
                chars.add(styled(text, "italic"))
            chars.update(text)
        if "<msqrt" in formula or "<mroot" in formula:
            chars.add(RADICAL)
    return {c for c in chars if not c.isspace()}


@lru_cache(maxsize=8)
def subset(path: Path, chars: frozenset[str]) -> bytes:
    """The font at ``path`` cut down to ``chars`` (and the glyphs its MATH table stretches them
    with), as WOFF; characters the font lacks are left out (the tests name them)."""
    from fontTools import subset as ft_subset
    from fontTools.ttLib import TTFont

    options = ft_subset.Options()
    options.flavor = "woff"  # zlib-compressed: fontTools needs nothing more (WOFF2 would need brotli)
    options.layout_features = FEATURES
    options.name_IDs = ["*"]  # keep the copyright and licence records
    options.name_languages = ["*"]
    options.hinting = False  # screens and printers rasterise math well without TrueType hints
    options.notdef_outline = True
    font = TTFont(path)
    subsetter = ft_subset.Subsetter(options)
    subsetter.populate(unicodes=sorted(ord(c) for c in chars))
    subsetter.subset(font)
    out = io.BytesIO()
    font.flavor = options.flavor
    font.save(out)
    return out.getvalue()


def font_face(page: str) -> str:
    """The ``@font-face`` rule that carries the math font, subset to what ``page`` draws."""
    data = base64.b64encode(subset(find_math_font(), frozenset(drawn_characters(page)))).decode("ascii")
    return (f'@font-face {{ font-family: "{FAMILY}"; font-style: normal; font-weight: 400; '
            f'src: url(data:font/woff;base64,{data}) format("woff"); }}')
