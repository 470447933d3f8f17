"""Recompute every checked number, formula and claim of ``theory/answers``.

Each ``<!-- check: KEY = VALUE -->`` marker in an answer file has a function here, registered
under KEY with :func:`check`. The function receives the parsed VALUE (see ``theory.markers``) and
raises ``AssertionError`` if the computation disagrees with it. Convolution and pooling answers are
computed with torch layers, the by-hand attention example directly, and the moments of q^T k by
Monte Carlo (seeded) against the closed forms.

    python -m theory.facts      # run every check, print a summary
"""
from __future__ import annotations

import math
import zlib
from functools import lru_cache
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from theory.markers import Lit, Value, flatten, python_to_sympy

CHECKS: dict[str, Callable[[Value], None]] = {}
DTYPE = torch.float64


def check(key: str):
    def register(fn: Callable[[Value], None]) -> Callable[[Value], None]:
        if key in CHECKS:
            raise KeyError(f"duplicate check {key}")
        CHECKS[key] = fn
        return fn

    return register


# --------------------------------------------------------------------------------------------
# Comparison helpers
# --------------------------------------------------------------------------------------------
def _as_nested(x) -> list | float:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (list, tuple)):
        return [_as_nested(v) for v in x]
    return float(x)


def expect(value: Value, computed, slack: float = 0.0) -> None:
    """``value`` (numbers as written) equals ``computed`` to the written precision (+ ``slack``)."""

    def walk(v, c, path: str) -> None:
        if isinstance(v, list):
            assert isinstance(c, list) and len(c) == len(v), f"{path}: shape differs: {v} vs {c}"
            for i, (vi, ci) in enumerate(zip(v, c)):
                walk(vi, ci, f"{path}[{i}]")
            return
        assert isinstance(v, Lit), f"{path}: expected a number, got {v!r}"
        assert not isinstance(c, list), f"{path}: computed a list {c}, text has a number"
        err = abs(float(c) - float(v.exact))
        assert err <= v.tolerance() + slack, (
            f"{path}: text says {float(v.exact)}, computation gives {float(c)!r} "
            f"(allowed error {v.tolerance() + slack:.3g})"
        )

    walk(value, _as_nested(computed), "value")


def expect_claim(value: Value, ok: bool, what: str) -> None:
    assert value is True, "a claim marker must be True"
    assert ok, f"claim fails: {what}"


def expect_shape(value: Value, shape, sizes: dict[str, int]) -> None:
    """A symbolic shape (list of formulas) evaluates, with ``sizes``, to the computed ``shape``."""
    assert isinstance(value, list) and all(isinstance(x, str) for x in value), value
    got = [python_to_sympy(s).subs(sizes) for s in value]
    assert [int(g) for g in got] == list(shape), f"{value} with {sizes} -> {got}, computed {tuple(shape)}"


def _formula(value: Value):
    assert isinstance(value, str), f"expected a formula string, got {value!r}"
    return python_to_sympy(value)


# --------------------------------------------------------------------------------------------
# Topic 1 - Eq. (1)
# --------------------------------------------------------------------------------------------
def eq1(q, k, v, wq, wk, wv, mask=None):
    """Eq. (1), written out: softmax(Q W^Q (K W^K)^T / sqrt(d_model)) V W^V; returns (out, A)."""
    d_model = q.shape[-1]
    scores = (q @ wq) @ (k @ wk).transpose(-2, -1) / math.sqrt(d_model)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    attn = scores.softmax(dim=-1)
    return attn @ (v @ wv), attn


@lru_cache(maxsize=None)
def _eq1_example():
    g = torch.Generator().manual_seed(1)
    n_batch, d_seq, d_model = 2, 5, 6
    x = torch.randn(n_batch, d_seq, d_model, generator=g, dtype=DTYPE)
    w = [torch.randn(d_model, d_model, generator=g, dtype=DTYPE) / math.sqrt(d_model) for _ in range(3)]
    out, attn = eq1(x, x, x, *w)
    return dict(n_batch=n_batch, d_seq=d_seq, d_model=d_model), x, w, out, attn


@check("attention.map_shape")
def _(value):
    sizes, _, _, _, attn = _eq1_example()
    expect_shape(value, attn.shape, sizes)


@check("attention.output_shape")
def _(value):
    sizes, _, _, out, _ = _eq1_example()
    expect_shape(value, out.shape, sizes)


@check("attention.rows_sum_to_one")
def _(value):
    _, _, _, _, attn = _eq1_example()
    ok = bool((attn >= 0).all()) and torch.allclose(attn.sum(-1), torch.ones(()).to(DTYPE))
    expect_claim(value, ok, "every row of the attention map is a probability distribution over keys")


@check("attention.output_row_is_weighted_sum")
def _(value):
    _, x, (wq, wk, wv), out, attn = _eq1_example()
    b, i = 1, 3
    manual = sum(attn[b, i, j] * (x[b, j] @ wv) for j in range(x.shape[1]))
    expect_claim(value, torch.allclose(out[b, i], manual), "output row i = sum_j A[i, j] (V W^V)[j]")


@check("attention.matches_torch_sdpa")
def _(value):
    _, x, (wq, wk, wv), out, _ = _eq1_example()
    ref = F.scaled_dot_product_attention(x @ wq, x @ wk, x @ wv)
    expect_claim(value, torch.allclose(out, ref), "Eq. (1) with Q = K = V = X equals torch's SDPA")


@check("attention.permutation_equivariant")
def _(value):
    _, x, w, out, attn = _eq1_example()
    perm = torch.tensor([3, 0, 4, 1, 2])
    out_p, attn_p = eq1(x[:, perm], x[:, perm], x[:, perm], *w)
    ok = torch.allclose(out_p, out[:, perm]) and torch.allclose(attn_p, attn[:, perm][:, :, perm])
    expect_claim(value, ok, "self-attention(X P) = (self-attention X) P")


@check("attention.output_in_convex_hull")
def _(value):
    _, x, (_, _, wv), out, _ = _eq1_example()
    vals = x @ wv  # (B, T, d): each output lies coordinate-wise between min and max of the values
    lo, hi = vals.min(dim=1, keepdim=True).values, vals.max(dim=1, keepdim=True).values
    ok = bool(((out >= lo - 1e-12) & (out <= hi + 1e-12)).all())
    expect_claim(value, ok, "an attention output is a convex combination of the value vectors")


# --------------------------------------------------------------------------------------------
# Topic 2 - the by-hand example
# --------------------------------------------------------------------------------------------
KEYS = torch.tensor([[2, 0, 0], [3, -1, 0], [1, 0, 2]], dtype=DTYPE)
VALUES = torch.tensor([[5, 4, 5], [3, 5, 5], [1, 2, 4]], dtype=DTYPE)
QUERIES = torch.tensor([[1, 0, 4], [2, -1, 3], [4, 6, 1]], dtype=DTYPE)


def a2_parts(scale: float = 1.0, allowed=(True, True, True)):
    """Scores, weights and output of the query at time step 2 against all keys."""
    s = KEYS @ QUERIES[1] * scale
    s = s.masked_fill(~torch.tensor(allowed), float("-inf"))
    w = s.softmax(-1)
    return s, w, w @ VALUES


@check("byhand.scores")
def _(value):
    expect(value, a2_parts()[0])


@check("byhand.weights_unscaled")
def _(value):
    expect(value, a2_parts()[1])


@check("byhand.a2_unscaled")
def _(value):
    expect(value, a2_parts()[2])


@check("byhand.scores_scaled")
def _(value):
    expect(value, a2_parts(1 / math.sqrt(3))[0])


@check("byhand.weights_scaled")
def _(value):
    expect(value, a2_parts(1 / math.sqrt(3))[1])


@check("byhand.a2_scaled")
def _(value):
    expect(value, a2_parts(1 / math.sqrt(3))[2])


@check("byhand.weights_masked")
def _(value):
    expect(value, a2_parts(allowed=(True, True, False))[1])


@check("byhand.a2_masked")
def _(value):
    expect(value, a2_parts(allowed=(True, True, False))[2])


@check("byhand.a2_masked_scaled")
def _(value):
    expect(value, a2_parts(1 / math.sqrt(3), allowed=(True, True, False))[2])


@check("byhand.mask_matrix_rows")
def _(value):
    # The causal mask for the three steps: row t may see keys 1..t. Row 2 of softmax(scores + M).
    M = torch.triu(torch.full((3, 3), float("-inf"), dtype=DTYPE), diagonal=1)
    w = (QUERIES @ KEYS.T + M).softmax(-1)
    ok = torch.allclose(w[1], a2_parts(allowed=(True, True, False))[1]) and bool(w[0, 1:].eq(0).all())
    expect_claim(value, ok, "the additive causal mask gives the masked weights")


@check("byhand.zero_score_leak")
def _(value):
    # Setting the score of k3 to 0 (instead of -inf) still gives v3 the weight e^0 / (e^4+e^7+e^0).
    s = a2_parts()[0].clone()
    s[2] = 0.0
    expect(value, s.softmax(-1)[2])


@check("byhand.column_mistake")
def _(value):
    # q_i . k_2 for i = 1, 2, 3: column 2 of Q K^T, the wrong thing to normalise for a_2
    expect(value, QUERIES @ KEYS[1])


@check("byhand.unrenormalised_sum")
def _(value):
    expect(value, a2_parts()[1][:2].sum())


# --------------------------------------------------------------------------------------------
# Topic 3 - moments of q^T k, temperature
# --------------------------------------------------------------------------------------------
MC_CASES = ((0.0, 1.0, 16), (1.0, 1.0, 16), (0.5, 2.0, 64), (2.0, 0.5, 8), (-1.0, 1.5, 32), (1.0, 1.0, 1))
MC_SAMPLES = 100_000
MC_Z = 5.0  # tolerance in Monte-Carlo standard errors: a false alarm has probability < 1e-6


@lru_cache(maxsize=None)
def _qk_raw(mu: float | tuple, sigma: float, d: int) -> np.ndarray:
    seed = zlib.crc32(repr((mu, sigma, d)).encode())
    rng = np.random.default_rng(seed)
    m = np.full(d, mu) if np.isscalar(mu) else np.asarray(mu, dtype=float)
    out = np.empty(MC_SAMPLES)
    chunk = max(1, 4_000_000 // d)
    for start in range(0, MC_SAMPLES, chunk):
        n = min(chunk, MC_SAMPLES - start)
        q = m + sigma * rng.standard_normal((n, d), dtype=np.float32)
        k = m + sigma * rng.standard_normal((n, d), dtype=np.float32)
        out[start : start + n] = np.einsum("nd,nd->n", q, k, dtype=np.float64)
    return out


def qk_samples(mu: float | tuple, sigma: float, d: int, scale: bool = False) -> np.ndarray:
    """MC_SAMPLES draws of q^T k (or q^T k / sqrt(d)), q and k independent N(mu, sigma^2 I).

    ``mu`` is a scalar (the same mean in every coordinate) or a tuple (a mean vector). Seeded by
    the arguments, so every run draws the same samples.
    """
    raw = _qk_raw(mu, sigma, d)
    return raw / math.sqrt(d) if scale else raw


def mc_mean_var(x: np.ndarray) -> tuple[float, float, float, float]:
    """Sample mean and variance with their standard errors (SE of the variance from the 4th moment)."""
    n = len(x)
    mean, var = x.mean(), x.var(ddof=1)
    m4 = ((x - mean) ** 4).mean()
    return mean, math.sqrt(var / n), var, math.sqrt(max(m4 - var**2, 0.0) / n)


def _check_moment(value, which: str, scale: bool, cases=MC_CASES) -> None:
    expr = _formula(value)
    import sympy

    for mu, sigma, d in cases:
        closed = float(expr.subs({sympy.Symbol("mu"): mu, sympy.Symbol("sigma"): sigma, sympy.Symbol("d"): d}))
        mean, se_mean, var, se_var = mc_mean_var(qk_samples(mu, sigma, d, scale))
        est, se = (mean, se_mean) if which == "mean" else (var, se_var)
        assert abs(est - closed) <= MC_Z * se + 1e-9, (
            f"{value} at mu={mu}, sigma={sigma}, d={d}: closed form {closed:.4f}, "
            f"Monte Carlo {est:.4f} +- {se:.4f} (SE)"
        )


@check("qk.mc_settings")
def _(value):
    expect(value, [MC_SAMPLES, MC_Z])
    # the text's "each comparison fails with probability below 1e-6": two normal tails at 5 SE
    assert math.erfc(MC_Z / math.sqrt(2)) < 1e-6


@check("qk.coord_mean")
def _(value):
    _check_moment(value, "mean", False, cases=[c[:2] + (1,) for c in MC_CASES])


@check("qk.coord_var")
def _(value):
    _check_moment(value, "var", False, cases=[c[:2] + (1,) for c in MC_CASES])


@check("qk.mean")
def _(value):
    _check_moment(value, "mean", False)


@check("qk.var")
def _(value):
    _check_moment(value, "var", False)


@check("qk.scaled_mean")
def _(value):
    _check_moment(value, "mean", True)


@check("qk.scaled_var")
def _(value):
    _check_moment(value, "var", True)


VECTOR_MEANS = ((0.5, -1.0, 2.0, 0.0), (1.0, 1.0, -1.0, 0.5, 0.0, 2.0, -0.5, 1.5))


def _check_vector_moment(value, which: str) -> None:
    import sympy

    expr = _formula(value)
    for mu in VECTOR_MEANS:
        for sigma in (0.7, 1.3):
            d = len(mu)
            subs = {sympy.Symbol("normmusq"): float(np.dot(mu, mu)), sympy.Symbol("sigma"): sigma,
                    sympy.Symbol("d"): d}
            closed = float(expr.subs(subs))
            mean, se_mean, var, se_var = mc_mean_var(qk_samples(tuple(mu), sigma, d))
            est, se = (mean, se_mean) if which == "mean" else (var, se_var)
            assert abs(est - closed) <= MC_Z * se, (
                f"{value} at mu={mu}, sigma={sigma}: closed {closed:.4f}, MC {est:.4f} +- {se:.4f}")


@check("qk.mean_vec")
def _(value):
    _check_vector_moment(value, "mean")


@check("qk.var_vec")
def _(value):
    _check_vector_moment(value, "var")


@check("qk.var_trace")
def _(value):
    # E and Var of q^T k for q ~ N(mu_q, S_q), k ~ N(mu_k, S_k) with random means and covariances
    # (d = 4, seeded) against 100,000 samples: mu_q^T mu_k and tr(S_q S_k) + mu_q^T S_k mu_q + mu_k^T S_q mu_k.
    rng = np.random.default_rng(7)
    d = 4
    mu_q, mu_k = rng.normal(size=d), rng.normal(size=d)
    A, B = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    S_q, S_k = A @ A.T / d, B @ B.T / d  # positive definite
    q = mu_q + rng.standard_normal((MC_SAMPLES, d)) @ np.linalg.cholesky(S_q).T
    k = mu_k + rng.standard_normal((MC_SAMPLES, d)) @ np.linalg.cholesky(S_k).T
    mean, se_mean, var, se_var = mc_mean_var(np.einsum("nd,nd->n", q, k))
    closed_mean = mu_q @ mu_k
    closed_var = np.trace(S_q @ S_k) + mu_q @ S_k @ mu_q + mu_k @ S_q @ mu_k
    ok = abs(mean - closed_mean) <= MC_Z * se_mean and abs(var - closed_var) <= MC_Z * se_var
    expect_claim(value, ok, f"trace form: closed mean {closed_mean:.4f}, var {closed_var:.4f}; "
                            f"Monte Carlo {mean:.4f} +- {se_mean:.4f}, {var:.4f} +- {se_var:.4f}")


@check("qk.table")
def _(value):
    """Rows (mu, sigma, d, E, Var): E and Var must be the closed forms and agree with Monte Carlo."""
    assert isinstance(value, list)
    for row in value:
        mu, sigma, d, e, v = (float(x) for x in row)
        d = int(d)
        expect(row[3:], [d * mu**2, d * (sigma**4 + 2 * mu**2 * sigma**2)])
        mean, se_mean, var, se_var = mc_mean_var(qk_samples(mu, sigma, d))
        assert abs(mean - e) <= MC_Z * se_mean, f"row {row}: MC mean {mean:.3f} +- {se_mean:.3f}"
        assert abs(var - v) <= MC_Z * se_var, f"row {row}: MC var {var:.3f} +- {se_var:.3f}"


@lru_cache(maxsize=None)
def _curves():
    from theory.figure import compute_curves

    return compute_curves(dims=(512,), n_samples=50_000, seed=0)


@check("fig.entropy_d512")
def _(value):
    """[unscaled, scaled] mean softmax entropy over 64 keys at d = 512 (Monte Carlo)."""
    c = _curves()
    se = max(c.ent_unscaled_se[0], c.ent_scaled_se[0])
    expect(value, [c.ent_unscaled[0], c.ent_scaled[0]], slack=MC_Z * se)


@check("fig.log_n_keys")
def _(value):
    from theory.figure import N_KEYS

    expect(value, math.log(N_KEYS))


@check("qk.conditional_spread")
def _(value):
    """For a FIXED query, Var over keys of q^T k = sigma^2 ||q||^2 (Monte Carlo over keys)."""
    rng = np.random.default_rng(18)
    ok = True
    for mu, sigma, d in ((0.0, 1.0, 16), (1.0, 0.5, 64)):
        q = mu + sigma * rng.standard_normal(d)
        k = mu + sigma * rng.standard_normal((100_000, d))
        x = k @ q
        target = sigma**2 * float(q @ q)
        _, _, var, se_var = mc_mean_var(x)
        ok &= abs(var - target) <= MC_Z * se_var
    expect_claim(value, ok, "Var_k[q^T k | q] = sigma^2 ||q||^2")


def softargmax(x: torch.Tensor, beta: float) -> torch.Tensor:
    return (beta * x).softmax(-1)


@check("softmax.beta0_limit")
def _(value):
    s = a2_parts()[0]
    expect(value, softargmax(s, 1e-9) @ VALUES)
    expect(value, VALUES.mean(0))


@check("softmax.betainf_limit")
def _(value):
    s = a2_parts()[0]
    expect(value, softargmax(s, 1e3) @ VALUES)


@check("softmax.beta_path_monotone")
def _(value):
    """In the by-hand example every coordinate of a_2(beta) decreases monotonically in beta."""
    s = a2_parts()[0]
    betas = torch.cat([torch.zeros(1, dtype=DTYPE), torch.logspace(-3, 2, 400, dtype=DTYPE)])
    path = torch.stack([softargmax(s, float(b)) @ VALUES for b in betas])  # (400, 3)
    ok = bool((path.diff(dim=0) <= 1e-12).all())
    ok &= torch.allclose(path[0], VALUES.mean(0)) and torch.allclose(path[-1], VALUES[2], atol=1e-12)
    expect_claim(value, ok, "a_2(beta) moves monotonically from the mean of the values to v_3")


@check("softmax.beta_limits")
def _(value):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(10, 7, generator=g, dtype=DTYPE)
    uniform = torch.allclose(softargmax(x, 1e-10), torch.full_like(x, 1 / 7))
    onehot_max = torch.allclose(softargmax(x, 1e4), F.one_hot(x.argmax(-1), 7).to(DTYPE))
    onehot_min = torch.allclose(softargmax(x, -1e4), F.one_hot(x.argmin(-1), 7).to(DTYPE))
    beta1 = torch.allclose(softargmax(x, 1.0), x.softmax(-1))
    # beta = 1 puts the most weight on the LARGEST entry, never on the smallest:
    biggest_at_max = bool((softargmax(x, 1.0).argmax(-1) == x.argmax(-1)).all())
    ok = uniform and onehot_max and onehot_min and beta1 and biggest_at_max
    expect_claim(value, ok, "beta->0 uniform, beta->inf argmax, beta->-inf argmin, beta=1 softmax")


@check("softmax.margin_bound")
def _(value):
    """a_max >= 1 / (1 + (n - 1) exp(-beta * margin)), margin = top score - runner-up."""
    g = torch.Generator().manual_seed(4)
    ok = True
    for beta in (0.3, 1.0, 4.0):
        x = 3 * torch.randn(2000, 9, generator=g, dtype=DTYPE)
        top2 = x.topk(2, dim=-1).values
        margin = top2[:, 0] - top2[:, 1]
        bound = 1 / (1 + 8 * torch.exp(-beta * margin))
        ok &= bool((softargmax(x, beta).max(-1).values >= bound - 1e-12).all())
    expect_claim(value, ok, "weight on the top key >= 1/(1 + (n-1) e^{-beta * margin})")


def _attend(q, k, v, beta):
    w = softargmax(k @ q, beta)
    return w, w @ v


@check("softmax.key_perturbation_first_order")
def _(value):
    """o(k_j + eps) - o ~= beta * a_j * (q . eps) * (v_j - o), checked by finite differences."""
    g = torch.Generator().manual_seed(5)
    ok = True
    for _ in range(20):
        q, k, v = (torch.randn(*s, generator=g, dtype=DTYPE) for s in ((4,), (6, 4), (6, 3)))
        beta, j = 1 / math.sqrt(4), 2
        eps = 1e-6 * torch.randn(4, generator=g, dtype=DTYPE)
        a, o = _attend(q, k, v, beta)
        k2 = k.clone()
        k2[j] += eps
        _, o2 = _attend(q, k2, v, beta)
        predicted = beta * a[j] * (q @ eps) * (v[j] - o)
        ok &= bool(torch.allclose(o2 - o, predicted, rtol=1e-4, atol=1e-15))
    expect_claim(value, ok, "first-order effect of perturbing one key")


@check("softmax.perturbation_delta")
def _(value):
    expect(value, QUERIES[1] @ torch.tensor([0.1, 0.0, 0.0], dtype=DTYPE) / math.sqrt(3))


@check("softmax.perturbation_example")
def _(value):
    """Scaled by-hand example, k3 -> k3 + (0.1, 0, 0): [change of a_2 first order, exact]."""
    beta = 1 / math.sqrt(3)
    q = QUERIES[1]
    a, o = _attend(q, KEYS, VALUES, beta)
    eps = torch.tensor([0.1, 0.0, 0.0], dtype=DTYPE)
    k2 = KEYS.clone()
    k2[2] += eps
    _, o2 = _attend(q, k2, VALUES, beta)
    predicted = beta * a[2] * (q @ eps) * (VALUES[2] - o)
    expect(value, [predicted.tolist(), (o2 - o).tolist()])


@check("softmax.alpha_example_weights")
def _(value):
    s = a2_parts()[0].clone()
    s[1] *= 2  # k2 -> 2 k2 doubles its score q2 . k2
    expect(value, s.softmax(-1))


@check("softmax.alpha_example_a2")
def _(value):
    s = a2_parts()[0].clone()
    s[1] *= 2
    expect(value, s.softmax(-1) @ VALUES)


@check("softmax.margin_example")
def _(value):
    """beta * margin needed for weight >= 1 - eps on the top key: log((n-1)(1-eps)/eps), n=3, eps=0.01."""
    n, eps = 3, 0.01
    need = math.log((n - 1) * (1 - eps) / eps)
    expect(value, need)
    # and it is tight: at exactly that margin, with the n-1 others tied, the top weight is 1 - eps
    x = torch.tensor([need, 0.0, 0.0], dtype=DTYPE)
    assert abs(float(x.softmax(-1)[0]) - (1 - eps)) < 1e-12


@check("softmax.alpha_monotone")
def _(value):
    """d a_j / d alpha has the sign of s_j when key j is scaled by alpha (here j = 0)."""
    g = torch.Generator().manual_seed(6)
    s = 2 * torch.randn(500, 1, 5, generator=g, dtype=DTYPE)  # 500 random score vectors
    alphas = torch.linspace(1, 20, 200, dtype=DTYPE)[None, :, None]
    scaled = torch.cat([s[..., :1] * alphas, s[..., 1:].expand(-1, alphas.shape[1], -1)], dim=-1)
    w = scaled.softmax(-1)[..., 0]  # (500, 200): weight of key 0 as alpha grows
    steps = w.diff(dim=1) * torch.sign(s[:, 0, :1])
    ok = bool((steps >= -1e-15).all())
    big = torch.cat([s[..., :1] * 1e8, s[..., 1:]], dim=-1).softmax(-1)[:, 0, 0]
    pos = s[:, 0, 0] > 0
    ok &= bool((big[pos] > 1 - 1e-9).all()) and bool((big[~pos] < 1e-9).all())
    expect_claim(value, ok, "scaling key j by alpha>1 moves its weight in the direction of sign(s_j)")


# --------------------------------------------------------------------------------------------
# Topic 4 - multi-head attention, self-attention on C in R^{e x n}
# --------------------------------------------------------------------------------------------
def mha_columns(C, Wq, Wk, Wv, Wo):
    """Multi-head self-attention in the column convention: C (e, n) -> H (e, n).

    Wq, Wk, Wv: lists of h matrices (e/h, e); Wo: (e, e). Returns H, [A_i], [Q_i].
    """
    heads, maps, qs = [], [], []
    for wq, wk, wv in zip(Wq, Wk, Wv):
        Q, K, V = wq @ C, wk @ C, wv @ C  # (d_k, n) each
        A = (K.T @ Q / math.sqrt(Q.shape[0])).softmax(dim=0)  # (n, n); column j sums to 1
        heads.append(V @ A)  # (d_k, n)
        maps.append(A)
        qs.append(Q)
    return Wo @ torch.cat(heads, dim=0), maps, qs


@lru_cache(maxsize=None)
def _mha_example():
    g = torch.Generator().manual_seed(7)
    e, n, h = 12, 5, 3
    C = torch.randn(e, n, generator=g, dtype=DTYPE)
    W = [[torch.randn(e // h, e, generator=g, dtype=DTYPE) / math.sqrt(e) for _ in range(h)] for _ in range(3)]
    Wo = torch.randn(e, e, generator=g, dtype=DTYPE) / math.sqrt(e)
    H, maps, qs = mha_columns(C, *W, Wo)
    return dict(e=e, n=n, h=h), C, W, Wo, H, maps, qs


@check("sa.q_shape")
def _(value):
    sizes, *_, qs = _mha_example()
    expect_shape(value, qs[0].shape, sizes)


@check("sa.a_shape")
def _(value):
    sizes, _, _, _, _, maps, _ = _mha_example()
    expect_shape(value, maps[0].shape, sizes)


@check("sa.h_shape")
def _(value):
    sizes, _, _, _, H, _, _ = _mha_example()
    expect_shape(value, H.shape, sizes)


@check("mha.matches_torch")
def _(value):
    """The column-convention formula equals nn.MultiheadAttention (no biases) on C^T."""
    sizes, C, (Wq, Wk, Wv), Wo, H, _, _ = _mha_example()
    e, h = sizes["e"], sizes["h"]
    mha = nn.MultiheadAttention(e, h, bias=False, batch_first=True).to(DTYPE)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([torch.cat(Wq), torch.cat(Wk), torch.cat(Wv)]))
        mha.out_proj.weight.copy_(Wo)
        out, _ = mha(C.T[None], C.T[None], C.T[None])
    expect_claim(value, torch.allclose(out[0].T, H), "H = W^O [H_1; ...; H_h] is torch's MHA")


@check("mha.params_512_8")
def _(value):
    expect(value, sum(p.numel() for p in nn.MultiheadAttention(512, 8).parameters()))


@check("mha.head_width_512_8")
def _(value):
    expect(value, 512 // 8)


@check("sa.permutation_equivariant")
def _(value):
    _, C, W, Wo, H, _, _ = _mha_example()
    P = torch.eye(C.shape[1], dtype=DTYPE)[[2, 4, 0, 1, 3]]
    Hp, _, _ = mha_columns(C @ P, *W, Wo)
    expect_claim(value, torch.allclose(Hp, H @ P), "H(C P) = H(C) P for every permutation matrix P")


def _positional_attention(C: torch.Tensor, targets: list[int], lam: float = 60.0):
    """One head whose query at position t attends to position targets[t], by positional codes.

    Tokens are [c_t; p_t] with one-hot p_t. W^Q maps p_t to lam * p_{targets[t]}, W^K reads p,
    so the score of key s for query t is lam * [s == targets[t]]: a (numerically) hard map.
    """
    e, n = C.shape
    P = torch.eye(n, dtype=DTYPE)
    X = torch.cat([C, P])  # (e + n, n)
    route = torch.zeros(n, n, dtype=DTYPE)
    route[targets, range(n)] = lam
    Wq = torch.cat([torch.zeros(n, e, dtype=DTYPE), route], dim=1)  # reads p_t, writes lam p_target
    Wk = torch.cat([torch.zeros(n, e, dtype=DTYPE), P], dim=1)
    scores = (Wk @ X).T @ (Wq @ X)  # (n_keys, n_queries); no 1/sqrt: lam plays beta
    return scores.softmax(dim=0)  # column t: where query t looks


@check("sa.identity_and_permutation")
def _(value):
    _, C, *_ = _mha_example()
    n = C.shape[1]
    A_id = _positional_attention(C, list(range(n)))
    perm = [3, 0, 4, 1, 2]
    A_perm = _positional_attention(C, perm)
    ok = torch.allclose(C @ A_id, C, atol=1e-12) and torch.allclose(C @ A_perm, C[:, perm], atol=1e-12)
    expect_claim(value, ok, "hard positional attention with W^V = W^O = I gives identity / a permutation")


@check("sa.lambda60_offdiag")
def _(value):
    _, C, *_ = _mha_example()
    A = _positional_attention(C, list(range(C.shape[1])), lam=60.0)
    off = A - torch.diag(torch.diagonal(A))
    ok = float(off.max()) < 1e-25 and bool((torch.diagonal(A) == 1.0).all())
    expect_claim(value, ok, "with lambda = 60 the off-diagonal weights are below 1e-25")


@check("sa.positionwise_linear")
def _(value):
    _, C, *_ = _mha_example()
    e, n = C.shape
    W = torch.randn(e, e, generator=torch.Generator().manual_seed(8), dtype=DTYPE)
    A = _positional_attention(C, list(range(n)))
    H = W @ C @ A  # W^O W^V = W, one head
    expect_claim(value, torch.allclose(H, W @ C, atol=1e-12), "identity map + W^O W^V = W is x_t -> W x_t")


@check("sa.uniform_is_not_positionwise")
def _(value):
    _, C, *_ = _mha_example()
    e, n = C.shape
    W = torch.randn(e, e, generator=torch.Generator().manual_seed(9), dtype=DTYPE)
    H = W @ C @ torch.full((n, n), 1 / n, dtype=DTYPE)
    same_everywhere = torch.allclose(H, (W @ C.mean(1, keepdim=True)).expand(e, n))
    expect_claim(value, same_everywhere and not torch.allclose(H, W @ C), "uniform map: every column W c_bar")


@check("sa.causal_uniform_is_running_mean")
def _(value):
    _, C, *_ = _mha_example()
    n = C.shape[1]
    A = torch.triu(torch.ones(n, n, dtype=DTYPE))  # key s <= query t
    A = A / A.sum(0, keepdim=True)
    running = torch.cumsum(C, 1) / torch.arange(1, n + 1, dtype=DTYPE)
    expect_claim(value, torch.allclose(C @ A, running), "causal uniform attention = running mean")


@check("sa.convolution_kernel3")
def _(value):
    """3 heads attending to offsets -1, 0, +1 (cyclically) = a circular Conv1d with kernel 3."""
    _, C, *_ = _mha_example()
    e, n = C.shape
    g = torch.Generator().manual_seed(10)
    conv = nn.Conv1d(e, e, kernel_size=3, padding=1, padding_mode="circular", bias=False).to(DTYPE)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(e, e, 3, generator=g, dtype=DTYPE))
        ref = conv(C[None])[0]
    H = torch.zeros_like(C)
    for tap, offset in enumerate((-1, 0, 1)):  # Conv1d tap m reads position t + m - 1
        A = _positional_attention(C, [(t + offset) % n for t in range(n)])
        H = H + conv.weight[:, :, tap] @ C @ A  # W^O_m W^V_m = tap weight
    expect_claim(value, torch.allclose(H, ref, atol=1e-10), "h = 3 shifted heads = Conv1d(kernel 3)")


@check("sa.single_head_shares_matrix")
def _(value):
    """One head with a fixed relative pattern (weights a_{-1}, a_0, a_1) = conv with taps a_m W."""
    _, C, *_ = _mha_example()
    e, n = C.shape
    a = torch.tensor([0.2, 0.5, 0.3], dtype=DTYPE)
    A = torch.zeros(n, n, dtype=DTYPE)
    for m, off in enumerate((-1, 0, 1)):
        for t in range(n):
            A[(t + off) % n, t] += a[m]
    W = torch.randn(e, e, generator=torch.Generator().manual_seed(11), dtype=DTYPE)
    conv = nn.Conv1d(e, e, 3, padding=1, padding_mode="circular", bias=False).to(DTYPE)
    with torch.no_grad():
        conv.weight.copy_(torch.stack([a[m] * W for m in range(3)], dim=-1))
        ok = torch.allclose(W @ C @ A, conv(C[None])[0])
    expect_claim(value, ok, "a single head's fixed pattern is a conv whose taps are multiples of one W")


# --------------------------------------------------------------------------------------------
# Topic 5 - Transformer and ViT
# --------------------------------------------------------------------------------------------
@check("ffn.params_512_2048")
def _(value):
    ffn = nn.Sequential(nn.Linear(512, 2048), nn.ReLU(), nn.Linear(2048, 512))
    expect(value, sum(p.numel() for p in ffn.parameters()))


@check("ffn.positionwise")
def _(value):
    g = torch.Generator().manual_seed(12)
    ffn = nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 8)).to(DTYPE)
    x = torch.randn(2, 5, 8, generator=g, dtype=DTYPE)
    with torch.no_grad():
        whole = ffn(x)
        one_by_one = torch.stack([ffn(x[:, t]) for t in range(5)], dim=1)
    expect_claim(value, torch.allclose(whole, one_by_one), "the FFN acts on each token separately")


@check("ln.matches_torch")
def _(value):
    g = torch.Generator().manual_seed(13)
    x = torch.randn(2, 5, 16, generator=g, dtype=DTYPE)
    ln = nn.LayerNorm(16).to(DTYPE)
    with torch.no_grad():
        ln.weight.copy_(torch.randn(16, generator=g, dtype=DTYPE))
        ln.bias.copy_(torch.randn(16, generator=g, dtype=DTYPE))
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)  # biased: divide by d
        manual = ln.weight * (x - mean) / torch.sqrt(var + ln.eps) + ln.bias
        ok = torch.allclose(ln(x), manual)
        # per token: changing another token or another sample leaves this token's output alone
        y = x.clone()
        y[0, 1] += 10.0
        y[1] *= 3.0
        ok &= torch.allclose(ln(y)[0, 0], ln(x)[0, 0]) and torch.allclose(ln(y)[0, 2:], ln(x)[0, 2:])
    expect_claim(value, ok, "LN(x) = gamma (x - mean) / sqrt(var + eps) + beta, per token")


@check("vit.patch_embed_is_conv")
def _(value):
    g = torch.Generator().manual_seed(14)
    Cin, P, D, Himg = 3, 4, 10, 12
    img = torch.randn(2, Cin, Himg, Himg, generator=g, dtype=DTYPE)
    linear = nn.Linear(Cin * P * P, D).to(DTYPE)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(D, Cin * P * P, generator=g, dtype=DTYPE))
        patches = F.unfold(img, kernel_size=P, stride=P).transpose(1, 2)  # (B, N, C P P)
        tokens = linear(patches)
        conv = nn.Conv2d(Cin, D, kernel_size=P, stride=P).to(DTYPE)
        conv.weight.copy_(linear.weight.view(D, Cin, P, P))
        conv.bias.copy_(linear.bias)
        conv_tokens = conv(img).flatten(2).transpose(1, 2)  # (B, N, D), patches in raster order
    expect_claim(value, torch.allclose(tokens, conv_tokens), "flatten+linear = Conv2d(k=P, stride=P)")


def _vit_b16_embed() -> nn.Conv2d:
    return nn.Conv2d(3, 768, kernel_size=16, stride=16)


@check("vit.patch_grid")
def _(value):
    with torch.no_grad():
        out = _vit_b16_embed()(torch.zeros(1, 3, 224, 224))
    expect(value, list(out.shape[2:]))


@check("vit.num_patches")
def _(value):
    with torch.no_grad():
        out = _vit_b16_embed()(torch.zeros(1, 3, 224, 224))
    expect(value, out.flatten(2).shape[-1])


@check("vit.num_tokens")
def _(value):
    with torch.no_grad():
        out = _vit_b16_embed()(torch.zeros(1, 3, 224, 224))
    expect(value, out.flatten(2).shape[-1] + 1)


@check("vit.patch_embed_params")
def _(value):
    expect(value, sum(p.numel() for p in _vit_b16_embed().parameters()))


@check("vit.pos_embed_params")
def _(value):
    expect(value, (196 + 1) * 768)


def _recipe_model(name: str) -> nn.Module:
    from reference.configs import get_recipe

    return get_recipe(name).model.build()


def _mnist_model() -> nn.Module:
    return _recipe_model("mnist")


@check("mnist.tokens")
def _(value):
    config = _mnist_model()
    images = torch.zeros(1, 1, 28, 28)
    from reference.vit import patchify

    patches = patchify(images, config.patch_size)  # (1, N, P*P*C)
    expect(value, [patches.shape[1], patches.shape[2], patches.shape[1] + 1])


@check("mnist.attention_entries")
def _(value):
    with torch.no_grad():
        maps = _mnist_model().eval().attention_maps(torch.zeros(1, 1, 28, 28))
    expect(value, [maps[0][0, 0].numel(), (28 * 28) ** 2])


@check("mnist.params")
def _(value):
    model = _mnist_model()
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    expect(value, [count(model.embedding), count(model.blocks[0]), count(model)])


@check("cifar.tokens")
def _(value):
    from reference.vit import patchify

    model = _recipe_model("cifar10")
    patches = patchify(torch.zeros(1, 3, 32, 32), model.patch_size)  # (1, N, P*P*C)
    expect(value, [patches.shape[1], patches.shape[2], patches.shape[1] + 1])


@check("cifar.attention_entries")
def _(value):
    with torch.no_grad():
        maps = _recipe_model("cifar10").eval().attention_maps(torch.zeros(1, 3, 32, 32))
    expect(value, [maps[0][0, 0].numel(), (32 * 32) ** 2])


@check("cifar.params")
def _(value):
    model = _recipe_model("cifar10")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    expect(value, [count(model.embedding), count(model.blocks[0]), count(model)])


@check("vit.cls_token_sees_all_patches")
def _(value):
    """After one layer of self-attention the class token's output depends on every patch."""
    g = torch.Generator().manual_seed(15)
    torch.manual_seed(15)
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True, norm_first=True).to(DTYPE)
    patches = torch.randn(1, 9, 16, generator=g, dtype=DTYPE, requires_grad=True)
    cls = torch.randn(1, 1, 16, generator=g, dtype=DTYPE)
    out = layer(torch.cat([cls, patches], dim=1))[0, 0]
    (grad,) = torch.autograd.grad(out.sum(), patches)
    expect_claim(value, bool((grad.abs().sum(-1) > 0).all()), "class token output depends on all patches")


def sinusoidal_pe(n_pos: int, d: int) -> torch.Tensor:
    pos = torch.arange(n_pos, dtype=DTYPE)[:, None]
    freq = 10000.0 ** (-torch.arange(0, d, 2, dtype=DTYPE) / d)
    pe = torch.zeros(n_pos, d, dtype=DTYPE)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)
    return pe


@check("pe.sinusoid_relative")
def _(value):
    """PE(pos + k) = R_k PE(pos) with R_k block-diagonal 2x2 rotations independent of pos."""
    d, k = 16, 5
    pe = sinusoidal_pe(60, d)
    freq = 10000.0 ** (-torch.arange(0, d, 2, dtype=DTYPE) / d)
    R = torch.zeros(d, d, dtype=DTYPE)
    for i, w in enumerate(freq):
        c, s = torch.cos(k * w), torch.sin(k * w)
        R[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = torch.tensor([[c, s], [-s, c]])
    expect_claim(value, torch.allclose(pe[k:], pe[:-k] @ R.T), "PE(pos+k) is a rotation of PE(pos)")


# --------------------------------------------------------------------------------------------
# Topic 6 - convolution and pooling
# --------------------------------------------------------------------------------------------
def _conv1d() -> nn.Conv1d:
    return nn.Conv1d(in_channels=1, out_channels=8, kernel_size=4, stride=2, padding=0, bias=True)


def _conv2d() -> nn.Conv2d:
    return nn.Conv2d(in_channels=3, out_channels=8, kernel_size=4, stride=2, padding=0, bias=True)


@check("conv1d.params")
def _(value):
    expect(value, sum(p.numel() for p in _conv1d().parameters()))


@check("conv1d.weights_biases")
def _(value):
    c = _conv1d()
    expect(value, [c.weight.numel(), c.bias.numel()])


@check("conv1d.out_shape")
def _(value):
    """Length x filters."""
    with torch.no_grad():
        out = _conv1d()(torch.zeros(1, 1, 200))  # (batch, channels, length)
    expect(value, [out.shape[2], out.shape[1]])


@check("conv2d.params")
def _(value):
    expect(value, sum(p.numel() for p in _conv2d().parameters()))


@check("conv2d.weights_biases")
def _(value):
    c = _conv2d()
    expect(value, [c.weight.numel(), c.bias.numel()])


@check("conv2d.out_shape")
def _(value):
    """Height x width x filters."""
    with torch.no_grad():
        out = _conv2d()(torch.zeros(1, 3, 28, 28))  # (batch, channels, height, width)
    expect(value, [out.shape[2], out.shape[3], out.shape[1]])


@check("conv2d.dense_equivalent_params")
def _(value):
    """A fully-connected layer from the 28x28x3 input to the 13x13x8 output, with biases."""
    expect(value, sum(p.numel() for p in nn.Linear(28 * 28 * 3, 13 * 13 * 8).parameters()))


@check("conv2d.common_mistakes")
def _(value):
    """[no input depth: 8 (4*4+1), no bias: weights only]"""
    expect(value, [8 * (4 * 4 + 1), _conv2d().weight.numel()])


POOL_A = torch.tensor(
    [[1, 1, 1, 0, 1], [1, 0, 1, 0, 1], [1, 1, 1, 0, 1], [0, 0, 0, 0, 1], [1, 1, 1, 1, 1]], dtype=DTYPE
)
POOL_B = torch.tensor(
    [[0, 0, 0, 0, 0], [0, 1, 1, 1, 0], [0, 1, 0, 1, 0], [0, 1, 1, 1, 0], [0, 0, 0, 0, 0]], dtype=DTYPE
)


def _pool(kind: str, m: torch.Tensor) -> torch.Tensor:
    fn = F.avg_pool2d if kind == "avg" else F.max_pool2d
    return fn(m[None, None], kernel_size=3, stride=2)[0, 0]


def _shift_right(m: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(m)
    out[:, 1:] = m[:, :-1]
    return out


for _name, _mat in (("a", POOL_A), ("b", POOL_B), ("b_shifted", _shift_right(POOL_B))):
    for _kind in ("avg", "max"):

        def _make(kind=_kind, mat=_mat):
            return lambda value: expect(value, _pool(kind, mat))

        check(f"pool.{_kind}_{_name}")(_make())


@check("pool.avg_a_decimal")
def _(value):
    expect(value, _pool("avg", POOL_A))


@check("pool.sum_a")
def _(value):
    expect(value, 9 * _pool("avg", POOL_A))


@check("pool.sum_b")
def _(value):
    expect(value, 9 * _pool("avg", POOL_B))


@check("pool.b_shifted_input")
def _(value):
    expect(value, _shift_right(POOL_B))


@check("pool.out_size")
def _(value):
    expect(value, list(_pool("avg", POOL_A).shape))


@check("pool.avg_noise_std_factor")
def _(value):
    rng = np.random.default_rng(16)
    noise = torch.from_numpy(rng.standard_normal((4000, 1, 9, 9)))
    pooled = F.avg_pool2d(noise, 3, stride=3)  # non-overlapping windows: independent outputs
    x = pooled.flatten().numpy()
    se = x.std() / math.sqrt(2 * (len(x) - 1))  # SE of a normal sample's standard deviation
    expect(value, x.std(), slack=MC_Z * se)


def expected_max_of_normals(n: int) -> float:
    """E[max of n iid N(0, 1)] = int x n phi(x) Phi(x)^(n-1) dx, by the trapezoid rule."""
    x = np.linspace(-10, 10, 200_001)
    phi = np.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    Phi = 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy 2 renamed trapz
    return float(trapezoid(x * n * phi * Phi ** (n - 1), x))


@check("pool.max_noise_mean")
def _(value):
    expect(value, expected_max_of_normals(9))
    rng = np.random.default_rng(17)
    noise = torch.from_numpy(rng.standard_normal((4000, 1, 9, 9)))
    x = F.max_pool2d(noise, 3, stride=3).flatten().numpy()
    expect(value, x.mean(), slack=MC_Z * x.std() / math.sqrt(len(x)))


# --------------------------------------------------------------------------------------------
def run_all(markers=None) -> list[str]:
    """Run the check of every marker; return the failures as messages (empty list: all good)."""
    from theory.markers import all_markers, text_mismatch

    failures = []
    for m in markers if markers is not None else all_markers():
        where = f"{m.source}:{m.line} [{m.key}]"
        if m.key not in CHECKS:
            failures.append(f"{where}: no check registered for this key")
            continue
        problem = text_mismatch(m)
        if problem:
            failures.append(problem)
        try:
            CHECKS[m.key](m.value)
        except AssertionError as exc:
            failures.append(f"{where}: {exc}")
    return failures


def main() -> int:
    from theory.markers import all_markers

    markers = all_markers()
    failures = run_all(markers)
    unused = sorted(set(CHECKS) - {m.key for m in markers})
    for f in failures:
        print("FAIL", f)
    for key in unused:
        print("UNUSED check (no marker in the text):", key)
    print(f"{len(markers)} markers, {len(failures)} failures, {len(unused)} unused checks")
    return 1 if failures or unused else 0


if __name__ == "__main__":
    raise SystemExit(main())
