"""Topic 1: what the text claims of Eq. (1), shown on the module's example against torch."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from theory.topics import attention

V = attention.values()
X, W, OUT, A = V["x"], (V["wq"], V["wk"], V["wv"]), V["out"], V["attn"]


def test_shapes_of_the_map_and_the_output():
    assert A.shape == (V["n_batch"], V["d_seq"], V["d_seq"])  # n_batch x d_seq x d_seq
    assert OUT.shape == (V["n_batch"], V["d_seq"], V["d_model"]) == X.shape  # the shape of the queries


def test_rows_are_distributions_and_columns_are_not():
    assert bool((A > 0).all()) and torch.allclose(A.sum(-1), torch.ones_like(A.sum(-1)))
    assert not torch.allclose(A.sum(-2), torch.ones_like(A.sum(-2)))


def test_output_row_is_the_weighted_sum_of_the_values():
    vals = X @ W[2]  # (B, T, D)
    for b, i in [(0, 0), (1, 3)]:
        manual = sum(A[b, i, j] * vals[b, j] for j in range(X.shape[1]))
        assert torch.allclose(OUT[b, i], manual)
    assert bool(((OUT >= vals.amin(1, keepdim=True)) & (OUT <= vals.amax(1, keepdim=True))).all())  # convex


def test_self_attention_matches_torch():
    assert torch.allclose(OUT, F.scaled_dot_product_attention(X @ W[0], X @ W[1], X @ W[2]))


def test_causal_mask_zeroes_the_upper_triangle():
    causal = torch.ones(X.shape[1], X.shape[1], dtype=torch.bool).tril()
    out, attn = attention.eq1(X, X, X, *W, mask=causal)
    assert bool(attn.triu(1).eq(0).all()) and torch.allclose(attn.sum(-1), torch.ones_like(attn.sum(-1)))
    assert torch.allclose(out, F.scaled_dot_product_attention(X @ W[0], X @ W[1], X @ W[2], is_causal=True))


def test_permutation_equivariant():
    perm = torch.tensor([3, 0, 4, 1, 2])
    out_p, attn_p = attention.eq1(X[:, perm], X[:, perm], X[:, perm], *W)
    assert torch.allclose(out_p, OUT[:, perm]) and torch.allclose(attn_p, A[:, perm][:, :, perm])


def test_map_is_not_symmetric_even_with_symmetric_scores():
    _, attn = attention.eq1(X, X, X, W[0], W[0], W[2])  # W^Q = W^K: symmetric scores
    assert not torch.allclose(attn, attn.transpose(-2, -1))
    z = ((X @ W[0]) @ (X @ W[0]).transpose(-2, -1) / attention.D_MODEL ** 0.5).exp().sum(-1)  # (B, T)
    assert torch.allclose(attn / attn.transpose(-2, -1), z[:, None, :] / z[:, :, None])  # A_ij / A_ji = Z_j / Z_i


def test_column_notation_is_eq1_transposed():
    d, n, m, t = 4, 3, 5, 2  # question 1.1(a) of the NYU sheet: Q (d, n), K (d, m), V (t, m)
    g = torch.Generator().manual_seed(2)
    q, k, v = torch.randn(d, n, generator=g), torch.randn(d, m, generator=g), torch.randn(t, m, generator=g)
    a = (k.T @ q / math.sqrt(d)).softmax(dim=0)  # softargmax_beta of each column, beta = 1/sqrt(d)
    h = v @ a
    assert h.shape == (t, n) and torch.allclose(a.sum(0), torch.ones(n))
    assert torch.allclose(h.T, F.scaled_dot_product_attention(q.T, k.T, v.T), atol=1e-6)


def test_cross_attention_shapes_and_scale():
    m, n, d_model, d_k, d_v = 3, 7, 6, 4, 2  # all different (question 1.6)
    g = torch.Generator().manual_seed(0)
    q, kv = torch.randn(m, d_model, generator=g), torch.randn(n, d_model, generator=g)
    wq, wk, wv = (torch.randn(d_model, d, generator=g) for d in (d_k, d_k, d_v))
    out, attn = attention.eq1(q, kv, kv, wq, wk, wv)
    assert attn.shape == (m, n) and out.shape == (m, d_v)
    assert torch.allclose(out, F.scaled_dot_product_attention(q @ wq, kv @ wk, kv @ wv), atol=1e-6)  # 1/sqrt(d_k)
