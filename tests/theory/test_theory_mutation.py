"""Editing any checked number or formula, in the text or in its marker, makes a check fail.

These tests mutate the answer files in memory only.
"""
from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction

import pytest

from theory.facts import CHECKS, run_all
from theory.markers import (
    ANSWERS_DIR,
    Lit,
    Token,
    answer_files,
    find_markers,
    flatten,
    locate,
    text_mismatch,
)

TEXTS = {p.name: p.read_text(encoding="utf-8") for p in answer_files()}
MARKERS = [(name, i, m) for name, text in TEXTS.items() for i, m in enumerate(find_markers(text, name))]
NUMERIC = [x for x in MARKERS if not isinstance(x[2].value, (bool, str)) and all(isinstance(v, Lit) for v in flatten(x[2].value))]
SYMBOLIC = [x for x in MARKERS if x not in NUMERIC and x[2].value is not True]
# Values checked against Monte Carlo have a statistical tolerance: off-by-one-unit edits of a
# 2-decimal Monte-Carlo figure cannot be told from noise, so the marker-side test uses 10 %.
STATISTICAL = {"fig.entropy_d512", "pool.avg_noise_std_factor"}


def _ids(items):
    return [f"{name}:{m.line}:{m.key}" for name, _, m in items]


def _bump_token(text: str, tok: Token) -> str:
    """Change one written number by one unit in its last place (a fraction: numerator + 1)."""
    written = text[tok.start : tok.end]
    m = re.fullmatch(r"(\\[dt]?frac\s*\{\s*)(\d+)(\s*\}.*)", written, re.S) or re.fullmatch(r"()(\d+)(\s*/.*)", written, re.S)
    if m:
        new = f"{m.group(1)}{int(m.group(2)) + 1}{m.group(3)}"
    elif "." in written:
        decimals = len(written.split(".")[1])
        new = str(Decimal(written) + Decimal(1).scaleb(-decimals))
    else:
        new = str(int(written.replace("\\,", "")) + 1)
    return text[: tok.start] + new + text[tok.end :]


def _remarked(name: str, index: int, new_text: str):
    return find_markers(new_text, name)[index]


@pytest.mark.parametrize("item", NUMERIC, ids=_ids(NUMERIC))
def test_editing_a_number_in_the_text_is_caught(item):
    name, index, marker = item
    tokens = locate(marker)
    assert tokens, text_mismatch(marker)
    for tok in tokens:
        at = Token(tok.value, marker.span_start + tok.start, marker.span_start + tok.end)
        edited = _remarked(name, index, _bump_token(TEXTS[name], at))
        assert text_mismatch(edited) is not None, (
            f"editing {TEXTS[name][at.start:at.end]!r} in {name}:{marker.line} went unnoticed"
        )


def _bump_lit(x: Lit, statistical: bool) -> Lit:
    if x.decimals is None:
        step = Fraction(1, x.exact.denominator) if x.exact.denominator > 1 else Fraction(1)
    else:
        step = Fraction(1, 10**x.decimals)
    if statistical:
        step = max(step, abs(x.exact) / 10)
    return Lit(x.exact + step, x.decimals)


def _replace_nth_lit(value, n: int, statistical: bool):
    count = [-1]

    def walk(v):
        if isinstance(v, list):
            return [walk(e) for e in v]
        count[0] += 1
        return _bump_lit(v, statistical) if count[0] == n else v

    return walk(value)


@pytest.mark.parametrize("item", NUMERIC, ids=_ids(NUMERIC))
def test_editing_a_number_in_the_marker_is_caught(item):
    _, _, marker = item
    for n in range(len(flatten(marker.value))):
        wrong = _replace_nth_lit(marker.value, n, marker.key in STATISTICAL)
        with pytest.raises(AssertionError):
            CHECKS[marker.key](wrong)


@pytest.mark.parametrize("item", SYMBOLIC, ids=_ids(SYMBOLIC))
def test_editing_a_formula_or_shape_in_the_text_is_caught(item):
    name, index, marker = item
    where = locate(marker)
    assert where is not None, text_mismatch(marker)
    start, end = (marker.span_start + where[0], marker.span_start + where[1])
    piece = TEXTS[name][start:end]
    digit = re.search(r"\d", piece)
    if digit:  # sigma^4 -> sigma^5, 2 mu^2 -> 3 mu^2, ...
        edited_piece = piece[: digit.start()] + str(int(digit.group()) + 1 if digit.group() != "9" else 1) + piece[digit.end() :]
    else:  # a shape: n_batch x d_seq x d_seq -> n_batch x d_seq + d_seq
        assert "\\times" in piece, piece
        edited_piece = piece[::-1].replace("semit\\", "+ ", 1)[::-1]
    edited = _remarked(name, index, TEXTS[name][:start] + edited_piece + TEXTS[name][end:])
    assert text_mismatch(edited) is not None, f"editing {piece!r} into {edited_piece!r} went unnoticed"


@pytest.mark.parametrize("item", SYMBOLIC, ids=_ids(SYMBOLIC))
def test_editing_a_formula_or_shape_in_the_marker_is_caught(item):
    _, _, marker = item
    if isinstance(marker.value, str):
        wrongs = [f"3*({marker.value})/2", f"({marker.value}) + sigma**2"]
    else:
        wrongs = [[f"({marker.value[0]}) + 1"] + marker.value[1:], marker.value[:-1]]
    for wrong in wrongs:
        with pytest.raises(AssertionError):
            CHECKS[marker.key](wrong)


def test_a_false_claim_marker_is_reported():
    name, index, marker = next(x for x in MARKERS if x[2].value is True)
    text = TEXTS[name]
    pos = text.index(f"check: {marker.key} = True")
    edited = text[:pos] + f"check: {marker.key} = False" + text[pos + len(f"check: {marker.key} = True") :]
    assert text_mismatch(_remarked(name, index, edited)) is not None


def test_run_all_reports_an_edited_parameter_count():
    """The end-to-end version: change '392' to '393' in the text of topic 6."""
    name = "06-convolution-and-pooling.md"
    text = TEXTS[name]
    assert "= 392$ parameters" in text
    for edited in (text.replace("= 392$ parameters", "= 393$ parameters"),
                   text.replace("conv2d.params = 392", "conv2d.params = 393"),
                   text.replace("= 392$ parameters", "= 393$ parameters").replace("conv2d.params = 392", "conv2d.params = 393")):
        failures = run_all([m for m in find_markers(edited, name) if m.key == "conv2d.params"])
        assert failures and all("conv2d.params" in f for f in failures), failures
    assert run_all([m for m in find_markers(text, name) if m.key == "conv2d.params"]) == []
    assert ANSWERS_DIR.is_dir()
