"""Topic 3: the formulas and table against Monte Carlo, the softmax-temperature claims by computation."""
from __future__ import annotations

import math
import zlib
from functools import lru_cache

import numpy as np
import pytest
import torch

from theory import figure
from theory.topics import by_hand, scaling

V = scaling.values()
Z, N = scaling.MC_Z, scaling.MC_SAMPLES
DT = torch.float64
VECTOR_MEANS = ((0.5, -1.0, 2.0, 0.0), (1.0, 1.0, -1.0, 0.5, 0.0, 2.0, -0.5, 1.5))


@lru_cache(maxsize=None)
def qk(mu: float | tuple, sigma: float, d: int) -> np.ndarray:
    """N draws of q^T k, q and k independent N(mu, sigma^2 I) (mu a scalar or a mean vector), seeded."""
    rng = np.random.default_rng(zlib.crc32(repr((mu, sigma, d)).encode()))
    m = np.broadcast_to(np.asarray(mu, dtype=float), (d,))
    q = m + sigma * rng.standard_normal((N, d), dtype=np.float32)
    k = m + sigma * rng.standard_normal((N, d), dtype=np.float32)
    return np.einsum("nd,nd->n", q, k, dtype=np.float64)


def close(x: np.ndarray, mean: float | None = None, var: float | None = None) -> bool:
    """Sample mean and variance of ``x`` within Z standard errors (of the variance: from the 4th moment)."""
    m, s2 = x.mean(), x.var(ddof=1)
    ok = mean is None or abs(m - mean) <= Z * math.sqrt(s2 / len(x)) + 1e-9
    se_var = math.sqrt(max(((x - m) ** 4).mean() - s2**2, 0.0) / len(x))
    return ok and (var is None or abs(s2 - var) <= Z * se_var + 1e-9)


def at(name: str, **subs: float) -> float:
    sym = {"mu": scaling.MU, "sigma": scaling.SIGMA, "d": scaling.D, "norm": scaling.NORM_MU_SQ, "q": scaling.NORM_Q_SQ}
    return float(V[name].subs({sym[k]: v for k, v in subs.items()}))


def test_false_alarm_probability():
    assert math.erfc(Z / math.sqrt(2)) < float(V["mc_false_alarm"].doit()) < 10 * math.erfc(Z / math.sqrt(2))


@pytest.mark.parametrize("mu, sigma, d", scaling.CASES)
def test_moment_formulas(mu, sigma, d):
    one = qk(mu, sigma, 1)  # a single term q_i k_i
    assert close(one, at("coord_mean", mu=mu, sigma=sigma), at("coord_var", mu=mu, sigma=sigma))
    assert close(one, var=at("wrong_coord_var", sigma=sigma) + at("cross", mu=mu, sigma=sigma))
    x = qk(mu, sigma, d)
    assert close(x, at("mean", mu=mu, sigma=sigma, d=d), at("var", mu=mu, sigma=sigma, d=d))
    assert close(x / math.sqrt(d), at("scaled_mean", mu=mu, sigma=sigma, d=d), at("scaled_var", mu=mu, sigma=sigma))


def test_table_rows():
    for row, (mu, sigma, d) in zip(V["table"], scaling.CASES, strict=True):
        assert (row["mu"], row["sigma"], row["d"]) == (mu, sigma, d)
        assert close(qk(mu, sigma, d), row["mean"], row["var"]), row


def test_standard_case():
    d = 16
    x = qk(0, 1, d)
    assert close(x, float(V["std_mean"].subs(scaling.D, d)), float(V["std_var"].subs(scaling.D, d)))
    assert close(x / math.sqrt(d), var=float(V["std_scaled_var"]))
    assert float(V["std_sd"].subs(scaling.D, d)) == pytest.approx(x.std(), rel=0.02)


@pytest.mark.parametrize("mu", VECTOR_MEANS)
def test_vector_mean_form(mu):
    for sigma in (0.7, 1.3):
        norm, d = float(np.dot(mu, mu)), len(mu)
        assert close(qk(mu, sigma, d), at("mean_vec", norm=norm), at("var_vec", norm=norm, sigma=sigma, d=d))


def test_trace_form():
    """E = mu_q^T mu_k and Var = tr(S_q S_k) + mu_q^T S_k mu_q + mu_k^T S_q mu_k, any covariances."""
    rng = np.random.default_rng(7)
    d = 4
    mu_q, mu_k = rng.normal(size=d), rng.normal(size=d)
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s_q, s_k = a @ a.T / d, b @ b.T / d
    q = mu_q + rng.standard_normal((N, d)) @ np.linalg.cholesky(s_q).T
    k = mu_k + rng.standard_normal((N, d)) @ np.linalg.cholesky(s_k).T
    var = np.trace(s_q @ s_k) + mu_q @ s_k @ mu_q + mu_k @ s_q @ mu_k
    assert close(np.einsum("nd,nd->n", q, k), mu_q @ mu_k, var)
    # isotropic case: the trace and each quadratic form as the text gives them
    sigma, mu = 0.7, np.array(VECTOR_MEANS[0])
    s = sigma**2 * np.eye(d)
    assert np.trace(s @ s) == pytest.approx(at("trace_iso", sigma=sigma, d=d))
    assert mu @ s @ mu == pytest.approx(at("quad_iso", sigma=sigma, norm=float(mu @ mu)))


def test_conditional_spread():
    """For a fixed query, Var over keys of q^T k = sigma^2 ||q||^2."""
    rng = np.random.default_rng(18)
    for mu, sigma, d in ((0.0, 1.0, 16), (1.0, 0.5, 64)):
        q = mu + sigma * rng.standard_normal(d)
        k = mu + sigma * rng.standard_normal((N, d))
        assert close(k @ q, var=at("spread", sigma=sigma, q=float(q @ q)))


def test_figure_entropies():
    """Entropies at FIG_D by direct sampling of q and the keys (not the figure's chi-square shortcut)."""
    rng = np.random.default_rng(3)
    n, d = 2000, V["fig_d"]
    q = rng.standard_normal((n, 1, d), dtype=np.float32)
    k = rng.standard_normal((n, V["n_keys"], d), dtype=np.float32)
    s = (q * k).sum(-1, dtype=np.float64)  # (n, n_keys)
    for scores, shown in ((s, V["ent_unscaled"]), (s / math.sqrt(d), V["ent_scaled"])):
        h = figure.softmax_entropy(scores)
        assert abs(h.mean() - shown) <= Z * h.std() / math.sqrt(n) * 1.05
    assert figure.softmax_entropy(np.zeros(V["n_keys"])) == pytest.approx(V["log_n_keys"])


def test_beta_limits():
    x = torch.randn(10, 7, generator=torch.Generator().manual_seed(3), dtype=DT)
    soft = lambda beta: (beta * x).softmax(-1)  # noqa: E731
    onehot = lambda i: torch.nn.functional.one_hot(i, 7).to(DT)  # noqa: E731
    assert torch.allclose(soft(1e-10), torch.full_like(x, 1 / 7))
    assert torch.allclose(soft(1e4), onehot(x.argmax(-1))) and torch.allclose(soft(-1e4), onehot(x.argmin(-1)))
    assert (soft(1.0).argmax(-1) == x.argmax(-1)).all()


def test_beta_limits_of_the_example():
    scores, _, out = by_hand.attend()
    assert torch.equal(V["scores"], scores)
    vals = by_hand.VALUES
    limit0 = torch.tensor([float(f) for f in V["beta0_limit"]], dtype=DT)
    assert torch.allclose((1e-9 * scores).softmax(-1) @ vals, limit0)
    assert torch.allclose((1e3 * scores).softmax(-1) @ vals, V["v_best"].to(DT))
    betas = torch.cat([torch.zeros(1, dtype=DT), torch.logspace(-3, 2, 400, dtype=DT)])
    path = torch.stack([(float(b) * scores).softmax(-1) @ vals for b in betas])  # (401, 3)
    step = torch.sign(V["v_best"] - limit0)  # each coordinate moves steadily towards v_best
    assert ((path.diff(dim=0) * step) >= -1e-12).all()
    for o in (out, by_hand.attend(1 / math.sqrt(V["d"]))[2]):  # topic 2's outputs lie in between
        assert ((o - limit0) * step >= 0).all() and ((V["v_best"] - o) * step >= 0).all()


def test_margin_bound():
    g = torch.Generator().manual_seed(4)
    for beta in (0.3, 1.0, 4.0):
        x = 3 * torch.randn(2000, 9, generator=g, dtype=DT)
        top2 = x.topk(2, dim=-1).values
        bound = 1 / (1 + 8 * torch.exp(-beta * (top2[:, 0] - top2[:, 1])))
        assert ((beta * x).softmax(-1).max(-1).values >= bound - 1e-12).all()
    # the example: at exactly that margin, with the other keys tied, the top weight is 1 - eps
    x = torch.zeros(V["margin_keys"], dtype=DT)
    x[0] = V["margin_need"]
    assert float(x.softmax(-1)[0]) == pytest.approx(1 - V["margin_eps"], abs=1e-12)
    top2 = by_hand.attend()[0].sort(descending=True).values[:2]
    assert (V["top"], V["runner_up"], V["margin"]) == (top2[0], top2[1], top2[0] - top2[1])


def test_key_perturbation_first_order():
    """o(k_j + eps) - o ~ beta a_j (q . eps) (v_j - o), by finite differences."""
    g = torch.Generator().manual_seed(5)
    for _ in range(20):
        q, k, v = (torch.randn(*s, generator=g, dtype=DT) for s in ((4,), (6, 4), (6, 3)))
        beta, j, eps = 0.5, 2, 1e-6 * torch.randn(4, generator=g, dtype=DT)
        a, o = scaling.attend(k @ q, v, beta)
        k2 = k.clone()
        k2[j] += eps
        predicted = beta * a[j] * (q @ eps) * (v[j] - o)
        assert torch.allclose(scaling.attend(k2 @ q, v, beta)[1] - o, predicted, rtol=1e-4, atol=1e-15)


def test_perturbation_example():
    """The predicted change is the Jacobian (autograd) times the perturbation, close to the exact change."""
    j, eps = V["perturb_key"] - 1, scaling.PERTURB
    q, d = by_hand.QUERIES[by_hand.STEP - 1], V["d"]
    assert V["delta"] == pytest.approx(float(q @ eps) / math.sqrt(d))

    def out(kj: torch.Tensor) -> torch.Tensor:  # a_2 as a function of key j, scaled attention
        keys = torch.cat([by_hand.KEYS[:j], kj[None], by_hand.KEYS[j + 1:]])
        return ((keys @ q) / math.sqrt(d)).softmax(-1) @ by_hand.VALUES

    _, jvp = torch.autograd.functional.jvp(out, by_hand.KEYS[j].clone(), eps)
    assert torch.allclose(V["predicted"], jvp)
    assert torch.allclose(V["exact"], out(by_hand.KEYS[j] + eps) - out(by_hand.KEYS[j]))
    assert (V["predicted"] - V["exact"]).abs().max() < 5e-3


def test_scaling_one_key():
    """Scaling key j by alpha > 1 moves its weight in the direction of the sign of its score."""
    s = 2 * torch.randn(500, 1, 5, generator=torch.Generator().manual_seed(6), dtype=DT)
    alphas = torch.linspace(1, 20, 200, dtype=DT)[None, :, None]
    scaled = torch.cat([s[..., :1] * alphas, s[..., 1:].expand(-1, alphas.shape[1], -1)], dim=-1)
    assert ((scaled.softmax(-1)[..., 0].diff(dim=1) * torch.sign(s[:, 0, :1])) >= -1e-15).all()
    big = torch.cat([s[..., :1] * 1e8, s[..., 1:]], dim=-1).softmax(-1)[:, 0, 0]
    pos = s[:, 0, 0] > 0
    assert (big[pos] > 1 - 1e-9).all() and (big[~pos] < 1e-9).all()
    # the example: scale the key itself and recompute the attention of topic 2
    keys = by_hand.KEYS.clone()
    keys[V["alpha_key"] - 1] *= V["alpha"]
    w = (keys @ by_hand.QUERIES[by_hand.STEP - 1]).softmax(-1)
    assert torch.allclose(V["alpha_weights"], w) and torch.allclose(V["alpha_out"], w @ by_hand.VALUES)
    assert V["alpha_scaled_score"] == V["alpha"] * V["alpha_score"]
