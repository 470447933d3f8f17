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
        # BEGIN SOLUTION hint: fc1, a GELU, nn.Dropout(dropout), fc2
        self.fc1 = nn.Linear(d_model, d_hidden)
        self.act = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(d_hidden, d_model)
        # END SOLUTION

    def forward(self, x: Tensor) -> Tensor:
        """x (..., d_model) -> (..., d_model)."""
        # BEGIN SOLUTION hint: fc1 -> GELU -> dropout -> fc2
        return self.fc2(self.dropout(self.act(self.fc1(x))))
        # END SOLUTION


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
        # BEGIN SOLUTION hint: a ScaledDotProductAttention and a FeedForwardBlock
        self.attention = ScaledDotProductAttention(d_model)
        self.mlp = FeedForwardBlock(d_model, d_hidden)
        # END SOLUTION

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x (B, T, d_model) -> (B, T, d_model)."""
        # BEGIN SOLUTION hint: two residual updates: self-attention of x over itself, then the MLP
        x = x + self.attention(x, x, x, mask)
        x = x + self.mlp(x)
        return x
        # END SOLUTION


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
        # BEGIN SOLUTION hint: norm1, attention (MultiHeadSelfAttention with dropout), norm2, mlp (FeedForwardBlock with dropout), and dropout for the two residual branches
        self.norm1 = nn.LayerNorm(d_model)
        self.attention = MultiHeadSelfAttention(d_model, num_heads, dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = FeedForwardBlock(d_model, d_hidden, dropout)
        self.dropout2 = nn.Dropout(dropout)
        # END SOLUTION

    def forward(
        self, x: Tensor, mask: Tensor | None = None, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """x (B, T, d_model) -> (B, T, d_model); with ``return_attention`` also the attention
        weights (B, num_heads, T, T)."""
        # BEGIN SOLUTION hint: normalise before each sub-layer, add its (dropped-out) output to x
        attended, weights = self.attention(self.norm1(x), mask, return_attention=True)
        x = x + self.dropout1(attended)
        x = x + self.dropout2(self.mlp(self.norm2(x)))
        return (x, weights) if return_attention else x
        # END SOLUTION
