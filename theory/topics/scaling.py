"""Topic 3: the moments of q^T k, the 1/sqrt(d) scale and the softmax temperature."""
from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache

import sympy
import torch

from theory import figure
from theory.topics import by_hand

# q, k independent, every coordinate N(mu, sigma^2); ||mu||^2 for a general mean vector.
MU, SIGMA = sympy.Symbol("mu", real=True), sympy.Symbol("sigma", positive=True)
D = sympy.Symbol("d", positive=True, integer=True)
MU_I = sympy.Symbol("mu_i", real=True)
NORM_MU_SQ = sympy.Symbol(r"{\lVert \boldsymbol{\mu} \rVert}^2", nonnegative=True)
NORM_Q_SQ = sympy.Symbol(r"{\lVert q \rVert}^2", nonnegative=True)
STANDARD = {MU: 0, SIGMA: 1}  # zero-mean, unit-variance coordinates

# The cases of the table, (mu, sigma, d).
CASES = ((0, 1, 16), (1, 1, 16), (0.5, 2, 64), (2, 0.5, 8), (-1, 1.5, 32))
# Monte-Carlo settings the text promises the formulas are checked with (tests/theory/test_scaling.py).
MC_SAMPLES = 100_000
MC_Z = 5  # tolerance in standard errors
# The figure's numbers: entropy at one width, from compute_curves with this many query samples.
FIG_D = 512
FIG_SAMPLES = 50_000
# Examples on topic 2's scores: the margin bound, a perturbed key, a scaled key.
MARGIN_KEYS, MARGIN_EPS = 3, Fraction(1, 100)  # n keys, top weight at least 1 - eps
PERTURB_KEY, PERTURB = 3, torch.tensor([0.1, 0.0, 0.0], dtype=torch.float64)  # k_j -> k_j + eps (1-based j)
ALPHA_KEY, ALPHA = 2, 2  # k_j -> alpha k_j (1-based j), unscaled


def formulas() -> dict[str, sympy.Expr]:
    """E and Var of q_i k_i and of q^T k (the sum of d independent such terms), and the scaled score."""
    second = MU**2 + SIGMA**2  # E[q_i^2] = Var + mean^2
    coord_mean = MU * MU  # E[q_i] E[k_i]
    coord_var = sympy.expand(second**2 - coord_mean**2)  # E[X^2] E[Y^2] - E[X]^2 E[Y]^2
    mean, var = D * coord_mean, D * coord_var
    return {
        "second": second, "second_sq": second**2, "coord_mean": coord_mean, "coord_mean_sq": coord_mean**2,
        "coord_var": coord_var, "mean": mean, "var": var,
        "coord_mean_i": coord_mean.subs(MU, MU_I), "coord_var_i": coord_var.subs(MU, MU_I),
        # summing mu_i^2 over i gives ||mu||^2
        "mean_vec": NORM_MU_SQ, "var_vec": D * SIGMA**4 + 2 * SIGMA**2 * NORM_MU_SQ,
        "trace_iso": D * SIGMA**4, "quad_iso": SIGMA**2 * NORM_MU_SQ,  # tr(s^2 I s^2 I), mu^T s^2 I mu
        "scaled_mean": mean / sympy.sqrt(D), "scaled_var": sympy.expand(var / D),
        "spread": SIGMA**2 * NORM_Q_SQ,  # Var over keys of q^T k for a fixed q
        "wrong_coord_var": SIGMA**2 * SIGMA**2,  # Var[q_i] Var[k_i]
        "cross": coord_var - SIGMA**4, "n_coords": 2 * D,
    }


def attend(scores: torch.Tensor, values: torch.Tensor, beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    weights = (beta * scores).softmax(-1)
    return weights, weights @ values


@lru_cache(maxsize=None)
def values() -> dict[str, object]:
    f = formulas()
    at = lambda expr, mu, sigma, d: float(expr.subs({MU: mu, SIGMA: sigma, D: d}))  # noqa: E731
    table = [dict(mu=mu, sigma=sigma, d=d, mean=at(f["mean"], mu, sigma, d), var=at(f["var"], mu, sigma, d))
             for mu, sigma, d in CASES]
    curves = figure.compute_curves(dims=(FIG_D,), n_samples=FIG_SAMPLES, seed=0)

    keys, vals, q = by_hand.KEYS, by_hand.VALUES, by_hand.QUERIES[by_hand.STEP - 1]
    scores = keys @ q  # (n,)
    n, d = keys.shape
    top2 = scores.topk(2).values
    ratio = (MARGIN_KEYS - 1) * (1 - MARGIN_EPS) / MARGIN_EPS
    # perturbation of one key, scaled attention: first order beta a_j (q . eps) (v_j - o) against exact
    beta = 1 / math.sqrt(d)
    j = PERTURB_KEY - 1
    a, o = attend(scores, vals, beta)
    moved = keys.clone()
    moved[j] += PERTURB
    q_eps = round(float(q @ PERTURB), 12)
    # scaling one key scales its score
    scaled = scores.clone()
    scaled[ALPHA_KEY - 1] *= ALPHA
    alpha_w, alpha_o = attend(scaled, vals)
    return {
        **f, "std_mu": STANDARD[MU], "std_sigma": STANDARD[SIGMA],
        **{f"std_{k}": f[k].subs(STANDARD) for k in ("mean", "var", "scaled_var")},
        "std_sd": sympy.sqrt(f["var"].subs(STANDARD)),
        "table": table, "mc_samples": MC_SAMPLES, "mc_z": MC_Z,
        # a two-sided normal tail at MC_Z standard errors stays below this power of ten
        "mc_false_alarm": sympy.UnevaluatedExpr(10) ** math.ceil(math.log10(math.erfc(MC_Z / math.sqrt(2)))),
        "fig_d": FIG_D, "n_keys": figure.N_KEYS, "log_n_keys": math.log(figure.N_KEYS),
        "ent_unscaled": curves.ent_unscaled[0], "ent_scaled": curves.ent_scaled[0],
        "d": d, "scores": scores, "beta0_limit": [Fraction(int(c), n) for c in vals.sum(0)],
        "best": int(scores.argmax()) + 1, "v_best": vals[scores.argmax()],
        "top": top2[0], "runner_up": top2[1], "margin": top2[0] - top2[1],
        "margin_keys": MARGIN_KEYS, "margin_eps": float(MARGIN_EPS), "margin_ratio": ratio,
        "margin_need": math.log(ratio),
        "perturb_key": PERTURB_KEY, "perturb": PERTURB, "q_eps": q_eps, "delta": beta * q_eps,
        "predicted": beta * a[j] * q_eps * (vals[j] - o), "exact": attend(moved @ q, vals, beta)[1] - o,
        "alpha_key": ALPHA_KEY, "alpha": ALPHA, "alpha_score": scores[ALPHA_KEY - 1],
        "alpha_scaled_score": scaled[ALPHA_KEY - 1], "alpha_weights": alpha_w, "alpha_out": alpha_o,
        "v_alpha": vals[ALPHA_KEY - 1],
    }
