"""Topic 2: attention by hand, for the query of time step 2 (unscaled, scaled, masked)."""
from __future__ import annotations

import math
from functools import lru_cache

import torch

# The question's inputs (already projected: W^Q = W^K = W^V = I), one row per time step.
KEYS = torch.tensor([[2, 0, 0], [3, -1, 0], [1, 0, 2]], dtype=torch.float64)
VALUES = torch.tensor([[5, 4, 5], [3, 5, 5], [1, 2, 4]], dtype=torch.float64)
QUERIES = torch.tensor([[1, 0, 4], [2, -1, 3], [4, 6, 1]], dtype=torch.float64)
STEP = 2  # the time step whose output the question asks for (1-based)
PLACES = 4  # decimals shown


def attend(scale: float = 1.0, allowed: tuple[bool, ...] = (True, True, True)) -> tuple[torch.Tensor, ...]:
    """Scores, weights and output of the query of ``STEP`` against every key it may see."""
    scores = KEYS @ QUERIES[STEP - 1] * scale  # (3,)
    weights = scores.masked_fill(~torch.tensor(allowed), float("-inf")).softmax(-1)
    return scores, weights, weights @ VALUES


@lru_cache(maxsize=None)
def values() -> dict[str, object]:
    d = KEYS.shape[1]
    scale = 1 / math.sqrt(d)
    scores, weights, out = attend()
    scores_s, weights_s, out_s = attend(scale)
    past = tuple(t < STEP for t in range(3))  # the causal mask of STEP: only steps up to it
    _, weights_m, out_m = attend(allowed=past)
    _, _, out_ms = attend(scale, past)
    leak = scores.clone()
    leak[STEP] = 0.0  # the future key's score set to 0 instead of -inf
    return {
        "keys": KEYS, "values": VALUES, "queries": QUERIES, "step": STEP, "d": d, "n": len(KEYS),
        "places": PLACES, "q": QUERIES[STEP - 1], "k": KEYS,
        "scores": scores, "weights": weights, "out": out,
        "scores_scaled": scores_s, "weights_scaled": weights_s, "out_scaled": out_s,
        "weights_masked": weights_m, "out_masked": out_m, "out_masked_scaled": out_ms,
        "masked_last": round(float(out_m[-1]), 12), "shared_last": VALUES[0, -1],
        "column_mistake": QUERIES @ KEYS[STEP - 1],  # q_t . k_2: a column of Q K^T, not row 2
        "leak": leak.softmax(-1)[STEP], "kept_sum": weights[:STEP].sum(),
    }
