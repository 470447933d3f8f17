"""Topic 1: Eq. (1) on a random example, for the tests to show what the text claims of it."""
from __future__ import annotations

import math
from functools import lru_cache

import torch

# Sizes chosen for the example: all different, so that a swapped axis shows in a shape.
N_BATCH, D_SEQ, D_MODEL = 2, 5, 6
SEED = 1


def eq1(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, wq: torch.Tensor, wk: torch.Tensor,
        wv: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (1) written out, softmax(Q W^Q (K W^K)^T / sqrt(d_k)) V W^V; returns (output, map)."""
    d_k = wq.shape[-1]  # the width of the dot products: d_model in Eq. (1), d_k in question 1.6
    scores = (q @ wq) @ (k @ wk).transpose(-2, -1) / math.sqrt(d_k)  # (B, T_q, T_k)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    attn = scores.softmax(dim=-1)  # over the keys
    return attn @ (v @ wv), attn


@lru_cache(maxsize=None)
def values() -> dict[str, object]:
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(N_BATCH, D_SEQ, D_MODEL, generator=g, dtype=torch.float64)  # (B, T, D)
    # Projections scaled by 1/sqrt(d_model) so the scores stay of order one (topic 3).
    wq, wk, wv = (torch.randn(D_MODEL, D_MODEL, generator=g, dtype=torch.float64) / math.sqrt(D_MODEL)
                  for _ in range(3))
    out, attn = eq1(x, x, x, wq, wk, wv)  # self-attention: Q = K = V = X
    return {"n_batch": N_BATCH, "d_seq": D_SEQ, "d_model": D_MODEL,
            "x": x, "wq": wq, "wk": wk, "wv": wv, "out": out, "attn": attn}  # out (B, T, D), attn (B, T, T)
