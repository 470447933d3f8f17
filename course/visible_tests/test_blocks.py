"""The blocks: the MLP, the residual block of the exercise, and the pre-LayerNorm transformer
layer against PyTorch's own encoder layer with the same weights."""
import pytest
import torch
from torch import nn

from student_template.blocks import FeedForwardBlock, SelfAttentionBlock, TransformerBlock


def fixed(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


GELU_FORMS = ("none", "tanh")  # the exact GELU and its tanh approximation: both are GELU


def gelu_form(mlp: FeedForwardBlock) -> str:
    """Which GELU the MLP computes: "none" (exact) or "tanh"; AssertionError if neither."""
    x = fixed(2, 5, mlp.fc1.in_features)
    for form in GELU_FORMS:
        if torch.allclose(mlp(x), mlp.fc2(nn.functional.gelu(mlp.fc1(x), approximate=form)), atol=1e-6, rtol=1e-5):
            return form
    raise AssertionError("the MLP is not fc2(GELU(fc1(x))) (exact or tanh GELU)")


def test_the_mlp_is_fc2_of_gelu_of_fc1() -> None:
    torch.manual_seed(0)
    gelu_form(FeedForwardBlock(8, 32).eval())


def test_the_norms_are_layer_norms_over_the_features() -> None:
    """Whatever they are called: LayerNorm over the last axis (at its initial scale 1 and shift 0)."""
    torch.manual_seed(0)
    block = TransformerBlock(16, 4, 32).eval()
    x = fixed(2, 7, 16) * 3 + 1
    for norm in (block.norm1, block.norm2):
        torch.testing.assert_close(norm(x), nn.functional.layer_norm(x, (16,)), atol=1e-4, rtol=1e-4)


def test_the_residual_block_adds_attention_then_the_mlp() -> None:
    torch.manual_seed(0)
    block = SelfAttentionBlock(8, 32).eval()
    x = fixed(2, 5, 8)
    after_attention = x + block.attention(x, x, x)
    torch.testing.assert_close(block(x), after_attention + block.mlp(after_attention))


@pytest.mark.parametrize("num_heads", [1, 4])
def test_the_transformer_block_matches_pytorch_encoder_layer(num_heads: int) -> None:
    torch.manual_seed(0)
    mine = TransformerBlock(16, num_heads, 32, dropout=0.1).eval()
    theirs = nn.TransformerEncoderLayer(16, num_heads, 32, dropout=0.1, activation="gelu",
                                        batch_first=True, norm_first=True).eval()
    attn = mine.attention
    with torch.no_grad():
        theirs.self_attn.in_proj_weight.copy_(torch.cat([attn.w_q.weight, attn.w_k.weight, attn.w_v.weight]))
        theirs.self_attn.in_proj_bias.copy_(torch.cat([attn.w_q.bias, attn.w_k.bias, attn.w_v.bias]))
        theirs.self_attn.out_proj.load_state_dict(attn.w_o.state_dict())
        theirs.linear1.load_state_dict(mine.mlp.fc1.state_dict())
        theirs.linear2.load_state_dict(mine.mlp.fc2.state_dict())
    theirs.norm1, theirs.norm2 = mine.norm1, mine.norm2  # your own norms, whatever their names (tested above)
    theirs.activation = lambda h: nn.functional.gelu(h, approximate=gelu_form(mine.mlp))
    theirs.activation_relu_or_gelu = 0  # PyTorch's fused path would assume its own GELU and norms
    x = fixed(2, 7, 16)
    torch.testing.assert_close(mine(x), theirs(x))


def test_dropout_acts_in_training_only() -> None:
    torch.manual_seed(0)
    block = TransformerBlock(16, 4, 32, dropout=0.5)
    x = fixed(2, 7, 16)
    block.train()
    assert not torch.equal(block(x), block(x)), "with dropout, two training passes should differ"
    block.eval()
    torch.testing.assert_close(block(x), block(x))
