"""The figure script: the curves behave as the closed forms say, and it writes a PNG."""
from __future__ import annotations

import math

import numpy as np

from theory import figure


def test_curves_follow_the_closed_forms():
    c = figure.compute_curves(dims=(1, 16, 256, 1024), n_samples=4000, seed=1)
    # Var[q^T k] = d for mu = 0, sigma = 1; scaled: 1. Sample variance SE ~ var * sqrt(2/n).
    tol = 5 * math.sqrt(2 / 4000)
    assert np.all(np.abs(c.var_unscaled / c.dims - 1) < tol)
    assert np.all(np.abs(c.var_scaled - 1) < tol)
    # Without the scale the softmax collapses as d grows; with it the entropy stays put.
    assert np.all(np.diff(c.ent_unscaled) < 0) and c.ent_unscaled[-1] < 0.3
    assert np.ptp(c.ent_scaled) < 0.1 and np.all(c.ent_scaled < math.log(figure.N_KEYS))


def test_figure_script_writes_a_png(tmp_path):
    out = tmp_path / "fig.png"
    assert figure.main([str(out), "--samples", "500"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_committed_figure_is_present_and_small():
    data = figure.FIGURE_PATH.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 200_000
    md = (figure.FIGURE_PATH.parent.parent / "answers" / "03-scaled-dot-product-and-softmax.md").read_text()
    assert "../figures/variance_entropy.png" in md
