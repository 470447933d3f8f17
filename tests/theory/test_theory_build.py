"""The HTML page builds offline with MathML, and the question sheet holds no answers."""
from __future__ import annotations

import re

import pytest

from theory import build
from theory.render import BEGIN_ANSWER, answer_files, render, split_blocks


@pytest.fixture(scope="module")
def sheet() -> str:
    return build.question_sheet()


def test_html_has_mathml_and_no_tex_left(answers_html):
    assert answers_html.count("<math") > 150
    assert "<merror" not in answers_html
    text = re.sub(r"<math.*?</math>", "", answers_html, flags=re.S)
    text = re.sub(r"<code>.*?</code>", "", text, flags=re.S)
    assert "$" not in text, "a formula was not converted"
    assert "ZZSTASH" not in answers_html and "ZZCODE" not in answers_html
    assert "{{" not in answers_html and "{%" not in answers_html, "a placeholder was not filled"


def test_html_is_self_contained(answers_html):
    lowered = answers_html.lower()
    assert "<script" not in lowered and "<link" not in lowered and "@import" not in lowered
    assert "<iframe" not in lowered
    assert all(url.startswith("data:") for url in re.findall(r"url\(([^)]*)\)", lowered))  # the embedded font
    for attr in re.findall(r'(?:src|href)="([^"]*)"', answers_html):
        assert attr.startswith(("#", "data:")), attr
    # the only URLs are XML namespace names, which browsers never fetch
    assert set(re.findall(r"https?://[^\s\"'<>]+", answers_html)) <= {"http://www.w3.org/1998/Math/MathML"}
    assert 'src="data:image/png;base64,' in answers_html, "the figure is embedded"


def test_html_has_every_question_and_answer(answers_html):
    assert answers_html.count('class="answer"') == sum(
        1 for p in answer_files() for kind, _ in split_blocks(render(p)) if kind == "answer"
    )
    for heading in ("1.1 The quantities of Eq. (1)", "3.2 Why divide by", "6.4 Why pooling helps"):
        assert heading in answers_html


def test_question_sheet_has_every_question(sheet):
    headings = re.findall(r"^### (\d+\.\d+) ", sheet, flags=re.M)
    assert len(headings) == 32 and len(set(headings)) == 32
    assert re.findall(r"^## (\d)\. ", sheet, flags=re.M) == list("123456")
    for data in ("(2, -1, 3)", "(1, 2, 4)", r"0 & 1 & 0 & 1 & 0", r"200 \times 1", r"28 \times 28 \times 3"):
        assert data in sheet


def test_question_sheet_has_no_answers(sheet):
    assert BEGIN_ANSWER not in sheet and "ANSWER" not in sheet
    assert "Common mistake" not in sheet and "![" not in sheet
    for path in answer_files():
        for kind, body in split_blocks(render(path), path.name):
            if kind != "answer":
                continue
            for para in re.split(r"\n\s*\n", body):
                para = para.strip()
                if len(para) > 40 and not para.startswith("<!--"):
                    assert para not in sheet, para[:80]


def test_question_sheet_states_no_computed_result(sheet):
    """No number with three or more decimals from an answer appears in the sheet."""
    for path in answer_files():
        for kind, body in split_blocks(render(path), path.name):
            if kind == "answer":
                leaked = [x for x in set(re.findall(r"\d+\.\d{3,}", body)) if x in sheet]
                assert leaked == [], (path.name, leaked)


def test_cli_writes_page_and_sheet(tmp_path):
    out = tmp_path / "site"
    q = tmp_path / "template" / "theory_questions.md"
    assert build.main(["--out-dir", str(out), "--questions", str(q)]) == 0
    assert (out / "answers.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert "<math" in (out / "questions.html").read_text(encoding="utf-8")
    assert q.read_text(encoding="utf-8") == build.question_sheet() == (out / "questions.md").read_text(encoding="utf-8")


def test_cli_questions_only(tmp_path):
    q = tmp_path / "q.md"
    assert build.main(["--no-html", "--questions", str(q), "--out-dir", str(tmp_path / "none")]) == 0
    assert q.exists() and not (tmp_path / "none").exists()


def test_bad_formula_is_reported(tmp_path):
    with pytest.raises(build.MathError):
        build.render_markdown(r"$\begin{bmatrix} 1 $", tmp_path, "x.md")


def test_code_is_not_taken_for_maths(tmp_path):
    html = build.render_markdown("Use `a $b$ c` and $x$.", tmp_path)
    assert "<code>a $b$ c</code>" in html and html.count("<math") == 1


BRACKETS = re.compile(r'<mo(?P<attrs>[^>]*)>(?:&#x0005B;|&#x00028;|\[|\()</mo><mtable|</mtable><mo(?P<closing>[^>]*)>')


def test_matrix_brackets_stretch_to_the_matrix(answers_html):
    from theory.build import _mathml

    # every matrix of the answers, and each kind of matrix a new answer may use
    rendered = answers_html + "".join(_mathml(rf"\begin{{{kind}}} a & b \\ c & d \end{{{kind}}}", True, "test")
                                      for kind in ("pmatrix", "bmatrix", "Bmatrix", "vmatrix"))
    fences = [m.group("attrs") if m.group("attrs") is not None else m.group("closing") for m in BRACKETS.finditer(rendered)]
    assert len(fences) >= 8 and all('stretchy="true"' in f for f in fences), fences
    assert f'math {{ font-family: "{build.mathfont.FAMILY}"' in answers_html  # the embedded math font first
