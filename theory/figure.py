"""The figure of topic 3: Var[q^T k] and the entropy of the attention softmax versus d,
with and without the 1/sqrt(d) scale.

    python -m theory.figure OUT.png [--samples N]

Setting: q, k_1, ..., k_n independent, every coordinate N(0, 1) (mu = 0, sigma = 1), n = 64 keys.

Sampling shortcut (exact in distribution, and what keeps this fast for d up to 1024): given q,
the scores q^T k_j are independent N(0, ||q||^2), and ||q||^2 is chi-square with d degrees of
freedom. So a score is ``||q|| * z`` with ``||q||^2 ~ chi2(d)`` and ``z ~ N(0, 1)``.
(The closed forms of topic 3 are checked against direct sampling of q and k in ``tests/theory/test_scaling.py``.)
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DIMS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
N_KEYS = 64
FIGURE_PATH = Path(__file__).resolve().parent / "figures" / "variance_entropy.png"


@dataclass
class Curves:
    dims: np.ndarray
    var_unscaled: np.ndarray  # Monte-Carlo Var[q^T k]
    var_scaled: np.ndarray  # Monte-Carlo Var[q^T k / sqrt(d)]
    ent_unscaled: np.ndarray  # mean entropy (nats) of softmax(q^T k_j), j = 1..N_KEYS
    ent_scaled: np.ndarray  # same with the scores divided by sqrt(d)
    ent_unscaled_se: np.ndarray  # Monte-Carlo standard errors of the two means
    ent_scaled_se: np.ndarray


def softmax_entropy(scores: np.ndarray) -> np.ndarray:
    """Entropy in nats of softmax over the last axis, computed stably."""
    s = scores - scores.max(axis=-1, keepdims=True)
    logp = s - np.log(np.exp(s).sum(axis=-1, keepdims=True))
    return -(np.exp(logp) * logp).sum(axis=-1)


def scores(d: int, n_queries: int, n_keys: int, rng: np.random.Generator) -> np.ndarray:
    """(n_queries, n_keys) samples of q^T k_j, mu = 0, sigma = 1 (see the module docstring)."""
    qnorm = np.sqrt(rng.chisquare(d, size=(n_queries, 1)))
    return qnorm * rng.standard_normal((n_queries, n_keys))


def compute_curves(dims=DIMS, n_samples: int = 20_000, n_keys: int = N_KEYS, seed: int = 0) -> Curves:
    rng = np.random.default_rng(seed)
    vu, vs, eu, es, eu_se, es_se = [], [], [], [], [], []
    for d in dims:
        s = scores(d, n_samples, n_keys, rng)
        vu.append(s[:, 0].var())
        vs.append((s[:, 0] / np.sqrt(d)).var())
        hu = softmax_entropy(s)
        hs = softmax_entropy(s / np.sqrt(d))
        eu.append(hu.mean())
        es.append(hs.mean())
        eu_se.append(hu.std() / np.sqrt(n_samples))
        es_se.append(hs.std() / np.sqrt(n_samples))
    return Curves(np.array(dims), *(np.array(x) for x in (vu, vs, eu, es, eu_se, es_se)))


def draw(curves: Curves, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = curves.dims
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=100)
    ax1.loglog(d, d, "-", color="tab:blue", lw=1, label=r"$d$ (closed form)")
    ax1.loglog(d, curves.var_unscaled, "o", color="tab:blue", ms=4, label=r"$q^\top k$ (Monte Carlo)")
    ax1.loglog(d, np.ones_like(d, dtype=float), "-", color="tab:orange", lw=1, label="1 (closed form)")
    ax1.loglog(d, curves.var_scaled, "s", color="tab:orange", ms=4,
               label=r"$q^\top k/\sqrt{d}$ (Monte Carlo)")
    ax1.set_xlabel(r"$d$")
    ax1.set_ylabel("variance of the score")
    ax1.set_title(r"Score variance ($\mu=0,\ \sigma=1$)")
    ax1.legend(fontsize=8)
    ax2.semilogx(d, curves.ent_unscaled, "o-", color="tab:blue", ms=4, label="unscaled")
    ax2.semilogx(d, curves.ent_scaled, "s-", color="tab:orange", ms=4, label=r"scaled by $1/\sqrt{d}$")
    ax2.axhline(np.log(N_KEYS), color="gray", ls="--", lw=1, label=rf"$\log {N_KEYS}$ (uniform)")
    ax2.set_ylim(0, np.log(N_KEYS) * 1.08)
    ax2.set_xlabel(r"$d$")
    ax2.set_ylabel("mean entropy of the softmax (nats)")
    ax2.set_title(f"Softmax over {N_KEYS} keys")
    ax2.legend(fontsize=8, loc="center right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, metadata={"Software": None})
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, nargs="?", default=FIGURE_PATH, help="PNG to write")
    parser.add_argument("--samples", type=int, default=20_000, help="Monte-Carlo queries per d")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    draw(compute_curves(n_samples=args.samples, seed=args.seed), args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
