# Student template, generated from reference/attention.py: fill in every TODO.
"""Scaled dot-product attention: the function, the single-head module of Eq. (1), and multi-head
self-attention.

Conventions used throughout the kit: batch first, and a boolean ``mask`` broadcastable to
(..., T_q, T_k) where True means "may attend" (the convention of
``torch.nn.functional.scaled_dot_product_attention``).
"""
from __future__ import annotations

import math

import torch  # noqa: F401 -- kept for the template: students write torch.* here
from torch import Tensor, nn


def scaled_dot_product_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Attention of the queries ``q`` over the keys ``k``, averaging the values ``v``.

    Args:
        q: queries, (..., T_q, d_k).
        k: keys, (..., T_k, d_k).
        v: values, (..., T_k, d_v).
        mask: optional boolean tensor broadcastable to (..., T_q, T_k); True = may attend.

    Returns:
        ``(out, weights)``: out (..., T_q, d_v) and the attention weights (..., T_q, T_k),
        the softmax over the last axis of ``q k^T / sqrt(d_k)``.
    """
    # TODO: scores = q k^T / sqrt(d_k); masked-out scores -> -inf; softmax over the keys; weights @ v
    raise NotImplementedError("scaled_dot_product_attention: not implemented yet")


class ScaledDotProductAttention(nn.Module):
    """Single-head attention of Eq. (1): ``softmax(Q W^Q (K W^K)^T / sqrt(d_model)) V W^V``.

    Args:
        d_model: width of the inputs and of the output.

    Attributes:
        w_q, w_k, w_v: ``nn.Linear(d_model, d_model, bias=False)``.
    """

    def __init__(self, d_model: int) -> None:
        super().__init__()
        # TODO: three bias-free nn.Linear(d_model, d_model) named w_q, w_k, w_v
        raise NotImplementedError("ScaledDotProductAttention.__init__: not implemented yet")

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: Tensor | None = None,
        return_attention: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """q (B, T_q, d_model), k and v (B, T_k, d_model) -> out (B, T_q, d_model);
        with ``return_attention`` also the weights (B, T_q, T_k)."""
        # TODO: project q, k, v with their weights, then call scaled_dot_product_attention
        raise NotImplementedError("ScaledDotProductAttention.forward: not implemented yet")


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention with an output projection.

    Args:
        d_model: width of the tokens; must be divisible by ``num_heads``.
        num_heads: number of heads, each of width ``d_model // num_heads``.
        dropout: dropout probability on the attention weights (training only).
        bias: whether the four projections have a bias.

    Attributes:
        w_q, w_k, w_v, w_o: ``nn.Linear(d_model, d_model, bias=bias)``, the layers forward uses
        (attributes, or properties returning them, e.g. over an ``nn.ModuleList``). One fused
        ``nn.Linear(d_model, 3 * d_model)`` for q, k and v is not this interface: the grader
        refuses it.

    Raises:
        ValueError: if ``d_model`` is not divisible by ``num_heads``.
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        # TODO: check divisibility (ValueError); four nn.Linear(d_model, d_model, bias=bias); nn.Dropout(dropout)
        raise NotImplementedError("MultiHeadSelfAttention.__init__: not implemented yet")

    def forward(
        self, x: Tensor, mask: Tensor | None = None, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """x (B, T, d_model) -> (B, T, d_model); with ``return_attention`` also the per-head
        attention weights (B, num_heads, T, T), before dropout."""
        # TODO: project, split the width into heads (B, h, T, d_model/h), attend per head (in training, dropout on the weights before they multiply v), merge the heads, apply w_o
        raise NotImplementedError("MultiHeadSelfAttention.forward: not implemented yet")
