"""Topic 4: multi-head attention, self-attention on C in R^{e x n}, and what it can express."""
from __future__ import annotations

from functools import lru_cache

import sympy
import torch

# The sizes of the original Transformer (question 4.1).
D_MODEL, HEADS = 512, 8
N_PROJ = 4  # projections W^Q, W^K, W^V, W^O: each d_model x d_model, with a bias
# The hard positional map of question 4.5(a): codes scaled by LAMBDA, and the power of ten the
# text gives as a bound on the off-diagonal weights at that scale.
LAMBDA, OFFDIAG_EXP = 60, -25
KERNEL = 3  # the convolution of question 4.5(c)
CORDONNIER_YEAR = 2020  # the cited paper (Cordonnier, Loukas and Jaggi)

# The symbols of question 4.3 (token width, heads, tokens) and of the parameter count (d_model).
e, h, n, d = sympy.symbols("e h n d", positive=True, integer=True)


def shape(dims: tuple[sympy.Expr, ...]) -> str:
    """A shape in LaTeX as the text writes it: ``(e / h) \\times n``."""
    tex = lambda x: sympy.latex(x) if x.is_Atom else f"({sympy.latex(x, fold_short_frac=True)})"  # noqa: E731
    return r" \times ".join(tex(x) for x in dims)


def scientific(x: float) -> str:
    """``x`` in LaTeX to two significant digits: ``2.2 \\cdot 10^{-16}``."""
    mantissa, exponent = f"{x:.1e}".split("e")
    return rf"{mantissa} \cdot 10^{{{int(exponent)}}}"


@lru_cache(maxsize=None)
def values() -> dict[str, object]:
    params = N_PROJ * d**2 + N_PROJ * d  # weights and biases of the four projections
    return {
        "d_model": D_MODEL, "heads": HEADS, "head_width": D_MODEL // HEADS, "n_proj": N_PROJ,
        "params_formula": params, "params": int(params.subs(d, D_MODEL)),
        # Question 4.3, column convention: tokens are the columns of C (e, n).
        "shape": shape,
        "w_shape": (e / h, e),  # W_i^Q, W_i^K, W_i^V
        "q_shape": (e / h, n),  # Q_i, K_i, V_i and H_i
        "a_shape": (n, n),  # A_i: keys x queries
        "h_shape": (e, n),  # H
        "wo_shape": (e, e),  # W^O
        "lam": LAMBDA, "offdiag_exp": OFFDIAG_EXP, "offdiag_bound": rf"10^{{{OFFDIAG_EXP}}}",  # LaTeX
        "float64_eps": scientific(torch.finfo(torch.float64).eps),  # the gap between 1 and the next double
        "kernel": KERNEL, "cordonnier_year": CORDONNIER_YEAR,
    }
