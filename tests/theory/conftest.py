"""The rendered answers page, built once for every test module that reads it (a build takes seconds)."""
from __future__ import annotations

import pytest

from theory import build


@pytest.fixture(scope="session")
def answers_html() -> str:
    return build.render_answers_html()
