"""Display formulas that are wider than a printed page get a smaller print size.

On screen a wide formula scrolls inside its box; on paper it would be cut at the margin, and a
browser cannot break a display formula across lines. So each display formula is measured once, at
build time, with ziamath (which lays MathML out with the same STIX Two Math font the page embeds),
and one that would not fit the printed column gets ``--print-scale`` below 1, which the print style
sheet multiplies its size by. Sizes are CSS pixels (96 per inch).
"""
from __future__ import annotations

import warnings
from functools import lru_cache

from theory import mathfont

MM = 96 / 25.4  # CSS pixels per millimetre
PAGE_WIDTH_MM = 210  # A4, the narrower of A4 (210 mm) and US Letter (215.9 mm)
MARGIN_MM = 15  # the print style sheet's @page margin, each side
TEXT_PT = 11  # the print style sheet's body text size
DISPLAY_EM = 1.1  # display formulas are 1.1 times the text (the STYLE of theory.build)
# The deepest a display formula sits: an answer box (a 4 px border and 1 rem padding each side)
# inside a list item (40 px) or a quote box (the same 36 px).
INDENT_PX = 36 + 40
SAFETY = 0.95  # ziamath's spacing and a browser's differ by a few per cent


def column_px() -> float:
    """The width a printed display formula has, at most, in CSS pixels."""
    return (PAGE_WIDTH_MM - 2 * MARGIN_MM) * MM - INDENT_PX


@lru_cache(maxsize=None)
def width_em(mathml: str) -> float:
    """The width of a formula in em (multiples of its font size), as ziamath lays it out."""
    size = 100.0
    with warnings.catch_warnings():  # ziamath finds its font with a deprecated importlib.resources call
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import ziamath
        except ImportError as exc:
            raise mathfont.missing_package() from exc
        width, _ = ziamath.Math(mathml, size=size, margin=0).getsize()
    return width / size


def print_scale(mathml: str) -> float:
    """The factor the formula's print size must be multiplied by to fit the column (at most 1)."""
    printed = width_em(mathml) * DISPLAY_EM * TEXT_PT * 96 / 72
    return min(1.0, SAFETY * column_px() / printed)
