"""Every number, formula and claim in theory/answers agrees with its computation."""
from __future__ import annotations

import pytest

from theory.facts import CHECKS
from theory.markers import all_markers, answer_files, split_blocks, text_mismatch

MARKERS = all_markers()


def test_answer_files_exist_and_have_questions_and_answers():
    files = answer_files()
    assert len(files) == 6, [f.name for f in files]
    for path in files:
        kinds = [kind for kind, _ in split_blocks(path.read_text(encoding="utf-8"), path.name)]
        assert "answer" in kinds and "question" in kinds, path.name


def test_every_marker_has_a_check_and_every_check_a_marker():
    keys = [m.key for m in MARKERS]
    assert sorted(set(keys) - set(CHECKS)) == [], "markers without a @check in theory/facts.py"
    assert sorted(set(CHECKS) - set(keys)) == [], "checks that no marker in the text uses"


def test_enough_markers():
    # a guard against a parser change that silently stops finding markers
    assert len(MARKERS) >= 85


@pytest.mark.parametrize("marker", MARKERS, ids=[f"{m.source}:{m.line}:{m.key}" for m in MARKERS])
def test_marker(marker):
    """The text shows the marker's value, and the computation gives that value."""
    assert text_mismatch(marker) is None, text_mismatch(marker)
    CHECKS[marker.key](marker.value)
