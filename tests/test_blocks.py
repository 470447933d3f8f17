"""The blocks: the residual update, and the pre-LN layer against nn.TransformerEncoderLayer."""
import pytest
import torch
from torch import nn

from reference.attention import MultiHeadSelfAttention, ScaledDotProductAttention
from reference.blocks import FeedForwardBlock, SelfAttentionBlock, TransformerBlock

torch.manual_seed(0)


def test_feedforward_is_fc2_gelu_fc1():
    mlp = FeedForwardBlock(8, 32).eval()
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(mlp(x), mlp.fc2(nn.functional.gelu(mlp.fc1(x))))
    assert (mlp.fc1.in_features, mlp.fc1.out_features, mlp.fc2.out_features) == (8, 32, 8)


def test_self_attention_block_is_two_residual_updates():
    block = SelfAttentionBlock(8, 16)
    assert isinstance(block.attention, ScaledDotProductAttention)
    assert isinstance(block.mlp, FeedForwardBlock)
    x = torch.randn(2, 5, 8)
    h = x + block.attention(x, x, x)
    torch.testing.assert_close(block(x), h + block.mlp(h))
    # Zeroed sub-layers leave a residual block the identity.
    with torch.no_grad():
        block.attention.w_v.weight.zero_()
        block.mlp.fc2.weight.zero_()
        block.mlp.fc2.bias.zero_()
    torch.testing.assert_close(block(x), x)


def copy_to_torch_layer(ours: TransformerBlock, num_heads: int, d_hidden: int) -> nn.TransformerEncoderLayer:
    a = ours.attention
    d = a.w_q.in_features
    layer = nn.TransformerEncoderLayer(d, num_heads, d_hidden, 0.0, activation="gelu", batch_first=True, norm_first=True)
    with torch.no_grad():
        layer.self_attn.in_proj_weight.copy_(torch.cat([a.w_q.weight, a.w_k.weight, a.w_v.weight]))
        layer.self_attn.in_proj_bias.copy_(torch.cat([a.w_q.bias, a.w_k.bias, a.w_v.bias]))
    layer.self_attn.out_proj.load_state_dict(a.w_o.state_dict())
    layer.linear1.load_state_dict(ours.mlp.fc1.state_dict())
    layer.linear2.load_state_dict(ours.mlp.fc2.state_dict())
    layer.norm1.load_state_dict(ours.norm1.state_dict())
    layer.norm2.load_state_dict(ours.norm2.state_dict())
    return layer.eval()


@pytest.mark.parametrize("num_heads", [1, 4])
def test_transformer_block_matches_pytorch_encoder_layer(num_heads):
    ours = TransformerBlock(16, num_heads, 48, dropout=0.1).eval()
    assert isinstance(ours.attention, MultiHeadSelfAttention)
    assert isinstance(ours.norm1, nn.LayerNorm) and isinstance(ours.norm2, nn.LayerNorm)
    layer = copy_to_torch_layer(ours, num_heads, 48)
    x = torch.randn(3, 6, 16)
    torch.testing.assert_close(ours(x), layer(x))
    mask = torch.rand(6, 6) > 0.3
    mask[:, 0] = True
    torch.testing.assert_close(ours(x, mask), layer(x, src_mask=~mask))
    out, weights = ours(x, return_attention=True)
    assert weights.shape == (3, num_heads, 6, 6)


def test_transformer_block_dropout_only_in_training():
    block = TransformerBlock(16, 4, 32, dropout=0.3)
    x = torch.randn(2, 5, 16)
    block.train()
    assert not torch.allclose(block(x), block(x))
    block.eval()
    torch.testing.assert_close(block(x), block(x))
