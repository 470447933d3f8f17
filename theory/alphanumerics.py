"""Styled letters in MathML as Unicode characters, the way MathML Core draws them.

latex2mathml writes ``\\boldsymbol{\\mu}`` as ``<mi mathvariant="bold-italic">μ</mi>`` and
``\\mathbf{1}`` as ``<mn mathvariant="bold">1</mn>``. MathML Core (Chromium) ignores every
mathvariant but "normal", so those would be drawn as plain letters. Written as the characters of
Unicode's Mathematical Alphanumeric Symbols (𝝁, 𝟏) they are bold in every browser, as long as the
page's math font has them (``theory.mathfont`` checks and embeds it).
"""
from __future__ import annotations

import html
import re
import unicodedata

# mathvariant -> the style's word in the Unicode character names ("MATHEMATICAL BOLD ITALIC SMALL MU").
STYLES = {
    "bold": "BOLD", "italic": "ITALIC", "bold-italic": "BOLD ITALIC",
    "double-struck": "DOUBLE-STRUCK", "script": "SCRIPT", "bold-script": "BOLD SCRIPT",
    "fraktur": "FRAKTUR", "bold-fraktur": "BOLD FRAKTUR", "sans-serif": "SANS-SERIF",
    "bold-sans-serif": "SANS-SERIF BOLD", "sans-serif-italic": "SANS-SERIF ITALIC",
    "sans-serif-bold-italic": "SANS-SERIF BOLD ITALIC", "monospace": "MONOSPACE",
}
# Letters that were in Unicode before the Mathematical Alphanumeric block: their places in it are
# left empty and the older Letterlike Symbols stand in (ℎ for italic h, ℝ for double-struck R, ...).
HOLES = {
    ("ITALIC", "h"): "\u210e",
    **{("SCRIPT", c): s for c, s in zip("BEFHILMRego", "\u212c\u2130\u2131\u210b\u2110\u2112\u2133\u211b\u212f\u210a\u2134")},
    **{("FRAKTUR", c): s for c, s in zip("CHIRZ", "\u212d\u210c\u2111\u211c\u2128")},
    **{("DOUBLE-STRUCK", c): s for c, s in zip("CHNPQRZ", "\u2102\u210d\u2115\u2119\u211a\u211d\u2124")},
}
# The part of a character's own name that the styled character's name repeats.
_NAME_TAIL = re.compile(r"^(?:LATIN |GREEK )?(?:(CAPITAL|SMALL) LETTER |)(.*)$")


def styled(char: str, mathvariant: str) -> str:
    """``char`` in the style ``mathvariant`` ("bold", "double-struck", ...); unchanged where Unicode
    has no such character (a bold "+", a "normal" letter)."""
    style = STYLES.get(mathvariant)
    if style is None or len(char) != 1:
        return char
    if (style, char) in HOLES:
        return HOLES[style, char]
    case, rest = _NAME_TAIL.match(unicodedata.name(char, "").replace("LUNATE ", "")).groups()
    try:
        return unicodedata.lookup(f"MATHEMATICAL {style} {case + ' ' if case else ''}{rest}")
    except KeyError:
        return char


_TOKEN = re.compile(r'<(mi|mn|mo|mtext|ms)([^>]*?)\smathvariant="([^"]+)"([^>]*)>([^<]*)</\1>')


def apply_mathvariants(mathml: str) -> str:
    """Every token element of ``mathml`` with a mathvariant other than "normal" rewritten in the
    styled characters, the attribute dropped."""

    def restyle(m: re.Match) -> str:
        tag, before, variant, after, text = m.groups()
        if variant == "normal" or variant not in STYLES:
            return m.group(0)
        chars = "".join(styled(c, variant) for c in html.unescape(text))
        return f"<{tag}{before}{after}>{html.escape(chars, quote=False)}</{tag}>"

    return _TOKEN.sub(restyle, mathml)
