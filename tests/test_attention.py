"""The reference attention against PyTorch's own, and its properties."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reference.attention import MultiHeadSelfAttention, ScaledDotProductAttention, scaled_dot_product_attention

torch.manual_seed(0)


def random_mask(T_q: int, T_k: int) -> torch.Tensor:
    mask = torch.rand(T_q, T_k) > 0.4
    mask[:, 0] = True  # no fully masked row: its softmax is undefined
    return mask


@pytest.mark.parametrize("shape", [(5, 8), (2, 5, 8), (2, 3, 5, 8)])
@pytest.mark.parametrize("masked", [False, True])
def test_function_matches_pytorch(shape, masked):
    q = torch.randn(*shape)
    k = torch.randn(*shape[:-2], 7, shape[-1])
    v = torch.randn(*shape[:-2], 7, 4)
    mask = random_mask(shape[-2], 7) if masked else None
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    assert weights.shape == (*shape[:-1], 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(shape[:-1]))
    if masked:
        assert (weights[..., ~mask] == 0).all()


def test_function_scale_is_one_over_sqrt_dk():
    # With one key of score s and others 0, the weight ratio is exp(s / sqrt(d_k)).
    d = 16
    q = torch.zeros(1, d); q[0, 0] = 4.0
    k = torch.zeros(2, d); k[0, 0] = 1.0
    _, w = scaled_dot_product_attention(q, k, torch.randn(2, 3))
    torch.testing.assert_close(w[0, 0] / w[0, 1], torch.exp(torch.tensor(4.0 / d ** 0.5)))


def test_single_head_module_is_eq1():
    attn = ScaledDotProductAttention(12)
    assert all(isinstance(m, nn.Linear) and m.bias is None for m in (attn.w_q, attn.w_k, attn.w_v))
    q, k, v = torch.randn(3, 4, 12), torch.randn(3, 6, 12), torch.randn(3, 6, 12)
    mask = random_mask(4, 6)
    out, w = attn(q, k, v, mask, return_attention=True)
    expected = F.scaled_dot_product_attention(attn.w_q(q), attn.w_k(k), attn.w_v(v), attn_mask=mask)
    torch.testing.assert_close(out, expected)
    assert w.shape == (3, 4, 6)
    torch.testing.assert_close(attn(q, k, v, mask), out)


def copy_to_torch_mha(ours: MultiHeadSelfAttention, num_heads: int) -> nn.MultiheadAttention:
    d = ours.w_q.in_features
    mha = nn.MultiheadAttention(d, num_heads, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([ours.w_q.weight, ours.w_k.weight, ours.w_v.weight]))
        mha.in_proj_bias.copy_(torch.cat([ours.w_q.bias, ours.w_k.bias, ours.w_v.bias]))
        mha.out_proj.load_state_dict(ours.w_o.state_dict())
    return mha.eval()


@pytest.mark.parametrize("num_heads", [1, 2, 4])
@pytest.mark.parametrize("masked", [False, True])
def test_multihead_matches_pytorch(num_heads, masked):
    ours = MultiHeadSelfAttention(16, num_heads).eval()
    mha = copy_to_torch_mha(ours, num_heads)
    x = torch.randn(3, 7, 16)
    mask = random_mask(7, 7) if masked else None
    out, w = ours(x, mask, return_attention=True)
    # PyTorch's boolean attn_mask means the opposite: True = may NOT attend.
    expected, expected_w = mha(x, x, x, attn_mask=None if mask is None else ~mask, average_attn_weights=False)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(w, expected_w)
    assert w.shape == (3, num_heads, 7, 7)


def test_multihead_rejects_indivisible_width():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadSelfAttention(10, 3)


def test_multihead_dropout_only_in_training():
    attn = MultiHeadSelfAttention(16, 4, dropout=0.5)
    x = torch.randn(2, 9, 16)
    attn.eval()
    torch.testing.assert_close(attn(x), attn(x))
    attn.train()
    assert not torch.allclose(attn(x), attn(x))


def test_output_dtype_follows_input():
    attn = MultiHeadSelfAttention(8, 2).double()
    assert attn(torch.randn(2, 3, 8, dtype=torch.float64)).dtype == torch.float64
