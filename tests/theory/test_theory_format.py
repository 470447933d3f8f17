"""The answer-file format: answer blocks, markers, number and formula reading."""
from __future__ import annotations

from fractions import Fraction

import pytest

from theory.markers import (
    FormatError,
    Lit,
    find_markers,
    latex_to_sympy,
    numeric_tokens,
    parse_value,
    python_to_sympy,
    split_blocks,
    strip_answers,
    strip_markers,
    text_mismatch,
)

DOC = """# T

## 1 Q

Question text.

<!-- BEGIN ANSWER -->
<!-- check: k.a = [1.50, '2/3'] -->
It is $(1.50, \\tfrac{2}{3})$.

<!-- check: k.b = "d*mu**2" -->
$$
\\mathbb{E}[x] = d\\mu^2
$$
<!-- END ANSWER -->

More question text.
"""


def test_split_and_strip():
    kinds = [k for k, _ in split_blocks(DOC)]
    assert kinds == ["question", "answer", "question"]
    sheet = strip_answers(DOC)
    assert "Question text." in sheet and "More question text." in sheet
    assert "It is" not in sheet and "check:" not in sheet and "ANSWER" not in sheet


@pytest.mark.parametrize(
    "bad",
    [
        "<!-- BEGIN ANSWER -->\nx\n",  # not closed
        "<!-- END ANSWER -->\n",  # not opened
        "<!-- BEGIN ANSWER -->\n<!-- BEGIN ANSWER -->\n<!-- END ANSWER -->\n",  # nested
        "text <!-- BEGIN ANSWER -->\n<!-- END ANSWER -->\n",  # not alone on its line
    ],
)
def test_malformed_blocks_are_rejected(bad):
    with pytest.raises(FormatError):
        split_blocks(bad)


def test_marker_outside_answer_is_rejected():
    with pytest.raises(FormatError):
        find_markers("<!-- check: x = 1 -->\n1\n")
    with pytest.raises(FormatError):
        strip_answers("<!-- check: x = 1 -->\n1\n")


def test_markers_and_spans():
    a, b = find_markers(DOC)
    assert a.key == "k.a" and a.value == [Lit(Fraction(3, 2), 2), Lit(Fraction(2, 3))]
    assert a.span.strip() == "It is $(1.50, \\tfrac{2}{3})$."
    assert b.value == "d*mu**2" and "d\\mu^2" in b.span
    assert text_mismatch(a) is None and text_mismatch(b) is None
    assert "check:" not in strip_markers(DOC) and "It is" in strip_markers(DOC)


def test_parse_value_keeps_written_precision():
    v = parse_value("[5.0000, -1, '8/9', 3]")
    assert v[0] == Lit(Fraction(5), 4) and v[0].tolerance() == pytest.approx(0.00005)
    assert v[1] == Lit(Fraction(-1)) and v[2] == Lit(Fraction(8, 9)) and v[3].decimals is None
    assert parse_value("True") is True and parse_value("'d*mu'") == "d*mu"
    with pytest.raises(FormatError):
        parse_value("1e-3")  # write decimals out
    with pytest.raises(FormatError):
        parse_value("open('x')")


def test_numeric_tokens():
    text = r"$(3, -1, 0)$, $200-4$, $-0.5$, $590\,592$, $\tfrac{8}{9}$, 2/3, $q_2$, $e^{-4}$, $512^2$"
    assert numeric_tokens(text) == [3, -1, 0, 200, 4, Fraction(-1, 2), 590592, Fraction(8, 9), Fraction(2, 3), 512]


@pytest.mark.parametrize(
    "latex, python",
    [
        (r"d\,(\sigma^4 + 2\mu^2\sigma^2)", "d*(sigma**4 + 2*mu**2*sigma**2)"),
        (r"\sqrt{d}\,\mu^2", "sqrt(d)*mu**2"),
        (r"\frac{d\mu^2}{\sqrt{d}}", "sqrt(d)*mu**2"),
        (r"d\sigma^4 + 2\sigma^2 \lVert \boldsymbol{\mu} \rVert^2", "d*sigma**4 + 2*sigma**2*normmusq"),
        (r"n_{\text{batch}}", "n_batch"),
        (r"(e/h)", "e/h"),
    ],
)
def test_latex_reader(latex, python):
    assert latex_to_sympy(latex) == python_to_sympy(python)


def test_latex_reader_refuses_what_it_does_not_know():
    assert latex_to_sympy(r"\mathbb{E}[q^\top k]") is None
    assert latex_to_sympy("") is None
