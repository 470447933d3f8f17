# Student template, generated from reference/blocks.py: fill in every TODO.
"""Blocks built from attention: the feed-forward sub-layer, the plain residual block of the exercise
and the pre-LayerNorm transformer encoder layer."""
from __future__ import annotations

from torch import Tensor, nn

from .attention import MultiHeadSelfAttention, ScaledDotProductAttention


class FeedForwardBlock(nn.Module):
    """Position-wise MLP: ``fc2(dropout(gelu(fc1(x))))``.

    Args:
        d_model: width of the tokens.
        d_hidden: width of the hidden layer.
        dropout: dropout probability after the activation.

    Attributes:
        fc1: ``nn.Linear(d_model, d_hidden)``; fc2: ``nn.Linear(d_hidden, d_model)``.
    """

    def __init__(self, d_model: int, d_hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        # TODO: fc1, a GELU, nn.Dropout(dropout), fc2
        raise NotImplementedError("FeedForwardBlock.__init__: not implemented yet")

    def forward(self, x: Tensor) -> Tensor:
        """x (..., d_model) -> (..., d_model)."""
        # TODO: fc1 -> GELU -> dropout -> fc2
        raise NotImplementedError("FeedForwardBlock.forward: not implemented yet")


class SelfAttentionBlock(nn.Module):
    """The residual block of the exercise, without normalisation:
    ``x <- x + attention(x, x, x); x <- x + mlp(x)``.

    Args:
        d_model: width of the tokens.
        d_hidden: width of the MLP's hidden layer.

    Attributes:
        attention: ``ScaledDotProductAttention(d_model)``; mlp: ``FeedForwardBlock(d_model, d_hidden)``.
    """

    def __init__(self, d_model: int, d_hidden: int) -> None:
        super().__init__()
        # TODO: a ScaledDotProductAttention and a FeedForwardBlock
        raise NotImplementedError("SelfAttentionBlock.__init__: not implemented yet")

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x (B, T, d_model) -> (B, T, d_model)."""
        # TODO: two residual updates: self-attention of x over itself, then the MLP
        raise NotImplementedError("SelfAttentionBlock.forward: not implemented yet")


class TransformerBlock(nn.Module):
    """Pre-LayerNorm transformer encoder layer:
    ``x <- x + dropout(attention(norm1(x))); x <- x + dropout(mlp(norm2(x)))``.

    In eval mode it computes the same function as ``nn.TransformerEncoderLayer(d_model, num_heads,
    d_hidden, dropout, activation="gelu", batch_first=True, norm_first=True)`` with the same weights.

    Args:
        d_model: width of the tokens.
        num_heads: attention heads.
        d_hidden: width of the MLP's hidden layer.
        dropout: dropout probability (attention weights, MLP activation, both residual branches).

    Attributes:
        norm1, norm2: ``nn.LayerNorm(d_model)``; attention: ``MultiHeadSelfAttention``;
        mlp: ``FeedForwardBlock``.
    """

    def __init__(self, d_model: int, num_heads: int, d_hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        # TODO: norm1, attention (MultiHeadSelfAttention with dropout), norm2, mlp (FeedForwardBlock with dropout), and dropout for the two residual branches
        raise NotImplementedError("TransformerBlock.__init__: not implemented yet")

    def forward(
        self, x: Tensor, mask: Tensor | None = None, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """x (B, T, d_model) -> (B, T, d_model); with ``return_attention`` also the attention
        weights (B, num_heads, T, T)."""
        # TODO: normalise before each sub-layer, add its (dropped-out) output to x
        raise NotImplementedError("TransformerBlock.forward: not implemented yet")
