"""Topic 2: the by-hand numbers, against torch's attention and the causal mask."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from theory.topics import by_hand

V = by_hand.values()


def test_outputs_match_torch_attention():
    q, k, v = by_hand.QUERIES[None], by_hand.KEYS[None], by_hand.VALUES[None]  # (1, T, d)
    scaled = F.scaled_dot_product_attention(q, k, v)[0, 1]
    unscaled = F.scaled_dot_product_attention(q, k, v, scale=1.0)[0, 1]
    assert torch.allclose(V["out_scaled"], scaled) and torch.allclose(V["out"], unscaled)


def test_causal_mask_gives_the_masked_weights():
    mask = torch.ones(3, 3, dtype=torch.bool).tril()  # step t sees keys 1..t
    weights = (by_hand.QUERIES @ by_hand.KEYS.T).masked_fill(~mask, float("-inf")).softmax(-1)
    assert torch.allclose(weights[1], V["weights_masked"]) and bool(weights[0, 1:].eq(0).all())
    # "exactly": both remaining values have that coordinate, and the weights sum to one
    assert math.isclose(V["out_masked"][-1].item(), V["shared_last"], rel_tol=1e-12) and V["masked_last"] == V["shared_last"]


def test_scale_flattens_the_weights():
    entropy = lambda p: -(p * p.log()).sum()  # noqa: E731
    assert entropy(V["weights_scaled"]) > entropy(V["weights"])
    assert math.isclose(V["leak"], 1 / (1 + math.exp(4) + math.exp(7)))
    assert V["column_mistake"].tolist() == [by_hand.QUERIES[t] @ by_hand.KEYS[1] for t in range(3)]
