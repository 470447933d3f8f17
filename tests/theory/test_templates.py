"""The topic templates: each renders from its module's values, and writes no value itself."""
from __future__ import annotations

import pytest

from theory import render as r
from theory.topics import TOPICS

FILES = r.answer_files()


def test_every_template_has_a_topic_module_and_answers():
    assert [p.name for p in FILES] == list(TOPICS)
    for path in FILES:
        kinds = [kind for kind, _ in r.split_blocks(r.render(path), path.name)]
        assert "answer" in kinds and "question" in kinds, path.name


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_template_writes_no_number_itself(path):
    """Every numeral comes from a placeholder (computed or a declared input) or is notation."""
    assert r.numerals_left(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("planted", [
    "weights sum to 0.2786 here",  # a result typed in the prose
    r"$e^{4}$",  # an exponent
    r"$a_2 \approx (1.5836, 2.8226)$",  # a vector
    "a sign: $-3$",
    "a term: $-1 + x$",
    "## 9.9 Heading\n\nThe answer is 42.",  # a heading's numbers are allowed, the prose's are not
])
def test_a_typed_number_is_found(planted):
    assert r.numerals_left(f"Text {{{{ x }}}} and e^{{ {{{{ y }}}} }}.\n\n{planted}\n")


def test_notation_is_not_taken_for_a_value():
    text = ("## 2.1 Step 2\n\n1. See Eq. (1) and topic 3, $q_2 \\cdot k_{2j}$, $\\sigma^2$, "
            "$1/\\sqrt{d}$, $\\frac{1}{2}$ is not, `x[0:3]`, row 2, mistake 2, 0 and 1.\n")
    assert [line for line, _ in r.numerals_left(text)] == [3]
    assert r.numerals_left(text.replace(r"$\frac{1}{2}$ is not, ", "")) == []  # it was the 2 of \frac{1}{2}


def test_an_unknown_placeholder_names_the_file(tmp_path, monkeypatch):
    (tmp_path / "02-attention-by-hand.md").write_text("# T\n\n{{ no_such_value }}\n")
    with pytest.raises(r.FormatError, match="02-attention-by-hand.md.*no_such_value"):
        r.render(tmp_path / "02-attention-by-hand.md")


@pytest.mark.parametrize("bad", ["<!-- BEGIN ANSWER -->\nx\n", "x <!-- END ANSWER -->\n",
                                 "<!-- END ANSWER -->\n", "<!-- BEGIN ANSWER -->\n<!-- BEGIN ANSWER -->\n"])
def test_malformed_answer_blocks_are_rejected(bad):
    with pytest.raises(r.FormatError):
        r.split_blocks(bad, "t.md")


def test_filters():
    assert r.num(1050624, group=True) == r"1\,050\,624" and r.num(-0.00001, 4) == "0.0000"
    assert r.vec([1.0, -2.5]) == "(1, -2.5)" and r.vec([0.12345], 2) == "(0.12)"
    assert r.mat([[1, 0], [0, 1]]) == r"\begin{pmatrix} 1 & 0 \\ 0 & 1 \end{pmatrix}"
    assert r.dot([2, -1], [3, 0]) == r"2 \cdot 3 + (-1) \cdot 0" and r.word(3) == "three"
