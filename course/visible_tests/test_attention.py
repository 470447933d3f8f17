"""Attention: interface and shapes, and values against PyTorch's own attention on fixed inputs.

PyTorch appears here only as the yardstick: your code must compute attention itself (the grader
checks that it never calls PyTorch's attention)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from student_template.attention import MultiHeadSelfAttention, ScaledDotProductAttention, scaled_dot_product_attention


def fixed(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def causal(T: int) -> torch.Tensor:
    return torch.ones(T, T, dtype=torch.bool).tril()  # True = may attend


@pytest.mark.parametrize("masked", [False, True], ids=["no mask", "causal mask"])
def test_the_function_matches_pytorch(masked: bool) -> None:
    q, k, v = fixed(2, 3, 5, 8, seed=1), fixed(2, 3, 5, 8, seed=2), fixed(2, 3, 5, 4, seed=3)
    mask = causal(5) if masked else None
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    assert out.shape == (2, 3, 5, 4) and weights.shape == (2, 3, 5, 5)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 5), msg="each row of weights must sum to 1")
    if masked:
        assert (weights[..., ~causal(5)] == 0).all(), "masked-out keys must get weight 0"


def test_the_scale_is_one_over_sqrt_dk() -> None:
    d = 16
    q = torch.zeros(1, d)
    q[0, 0] = 4.0
    k = torch.zeros(2, d)
    k[0, 0] = 1.0  # scores 4 and 0: the weight ratio is exp(4 / sqrt(d))
    _, w = scaled_dot_product_attention(q, k, fixed(2, 3))
    torch.testing.assert_close(w[0, 0] / w[0, 1], torch.exp(torch.tensor(4.0 / d**0.5)))


def test_single_head_attention_is_eq1() -> None:
    torch.manual_seed(0)
    attn = ScaledDotProductAttention(12)
    for name in ("w_q", "w_k", "w_v"):
        layer = getattr(attn, name, None)
        assert isinstance(layer, nn.Linear) and layer.bias is None, f"{name} must be nn.Linear(12, 12, bias=False)"
    q, k, v = fixed(3, 4, 12, seed=1), fixed(3, 6, 12, seed=2), fixed(3, 6, 12, seed=3)
    out, weights = attn(q, k, v, return_attention=True)
    expected = F.scaled_dot_product_attention(attn.w_q(q), attn.w_k(k), attn.w_v(v))
    torch.testing.assert_close(out, expected)
    assert weights.shape == (3, 4, 6)
    assert attn(q, k, v).shape == (3, 4, 12), "without return_attention, only the output"


@pytest.mark.parametrize("num_heads", [1, 2, 4])
def test_multi_head_attention_matches_pytorch(num_heads: int) -> None:
    torch.manual_seed(0)
    mine = MultiHeadSelfAttention(16, num_heads).eval()
    theirs = nn.MultiheadAttention(16, num_heads, batch_first=True).eval()
    with torch.no_grad():  # the same weights in PyTorch's layout: q, k, v stacked, then the output
        theirs.in_proj_weight.copy_(torch.cat([mine.w_q.weight, mine.w_k.weight, mine.w_v.weight]))
        theirs.in_proj_bias.copy_(torch.cat([mine.w_q.bias, mine.w_k.bias, mine.w_v.bias]))
        theirs.out_proj.weight.copy_(mine.w_o.weight)
        theirs.out_proj.bias.copy_(mine.w_o.bias)
    x = fixed(2, 7, 16)
    out, weights = mine(x, return_attention=True)
    expected, expected_weights = theirs(x, x, x, average_attn_weights=False)
    torch.testing.assert_close(out, expected)
    assert weights.shape == (2, num_heads, 7, 7), "weights per head: (B, num_heads, T, T)"
    torch.testing.assert_close(weights, expected_weights)


def test_multi_head_attention_rejects_a_width_the_heads_do_not_divide() -> None:
    with pytest.raises(ValueError):
        MultiHeadSelfAttention(10, 3)
