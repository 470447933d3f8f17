"""Topic 4: the column-convention formulas against torch's layers, and the constructions of 4.5."""
from __future__ import annotations

import math

import torch
from torch import nn

from theory.topics import multi_head as mh

V = mh.values()
E, N, H = 12, 5, 3  # example sizes: all different, so that a swapped axis shows in a shape
DT = torch.float64
_g = torch.Generator().manual_seed(7)
C = torch.randn(E, N, generator=_g, dtype=DT)  # (e, n): the tokens are the columns
WQ, WK, WV = (torch.randn(H, E // H, E, generator=_g, dtype=DT) / math.sqrt(E) for _ in range(3))  # (h, e/h, e)
WO = torch.randn(E, E, generator=_g, dtype=DT) / math.sqrt(E)  # (e, e)
X = torch.cat([C, torch.eye(N, dtype=DT)])  # (e + n, n): tokens with one-hot positional codes p_t
CONTENT = torch.cat([torch.eye(E, dtype=DT), torch.zeros(E, N, dtype=DT)], 1)  # W^O W^V: c_t, code dropped


def columns_mha(c: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Question 4.3 as written: Q_i, K_i, V_i, A_i (softmax over columns), H_i, H = W^O [H_1; ...]."""
    q, k, v = WQ @ c, WK @ c, WV @ c  # (h, e/h, n)
    a = (k.transpose(1, 2) @ q / math.sqrt(E // H)).softmax(dim=1)  # (h, n, n): column t sums to one
    heads = v @ a  # (h, e/h, n)
    return WO @ heads.reshape(E, -1), q, a, heads  # stacking the heads is a reshape


def positional(targets: list[int], lam: float = V["lam"]) -> torch.Tensor:
    """One head whose query t attends to key targets[t]: W^Q maps p_t to lam p_target, W^K reads p."""
    route = torch.zeros(N, N, dtype=DT)
    route[targets, range(N)] = lam
    wq = torch.cat([torch.zeros(N, E, dtype=DT), route], 1)  # (n, e + n)
    wk = torch.cat([torch.zeros(N, E, dtype=DT), torch.eye(N, dtype=DT)], 1)
    return ((wk @ X).T @ (wq @ X)).softmax(dim=0)  # (keys, queries); lam plays the inverse temperature


def test_shapes_of_question_4_3():
    sizes = {mh.e: E, mh.n: N, mh.h: H}
    dims = lambda s: tuple(int(x.subs(sizes)) for x in s)  # noqa: E731
    out, q, a, heads = columns_mha(C)
    assert dims(V["w_shape"]) == WQ.shape[1:] and dims(V["wo_shape"]) == WO.shape
    assert dims(V["q_shape"]) == q.shape[1:] == heads.shape[1:]
    assert dims(V["a_shape"]) == a.shape[1:] and dims(V["h_shape"]) == out.shape
    assert V["shape"](V["q_shape"]) == r"(e / h) \times n"


def test_column_formula_is_torchs_multihead_attention():
    mha = nn.MultiheadAttention(E, H, bias=False, batch_first=True).to(DT)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([WQ.reshape(E, E), WK.reshape(E, E), WV.reshape(E, E)]))
        mha.out_proj.weight.copy_(WO)
        out, _ = mha(C.T[None], C.T[None], C.T[None])  # rows of C^T
    assert torch.allclose(out[0].T, columns_mha(C)[0])


def test_parameter_count_and_head_width_are_torchs():
    count = lambda d, h: sum(p.numel() for p in nn.MultiheadAttention(d, h).parameters())  # noqa: E731
    assert V["params"] == count(V["d_model"], V["heads"]) == count(V["d_model"], 1)  # heads cost nothing
    assert V["params_formula"].subs(mh.d, E) == count(E, H)
    assert V["head_width"] == nn.MultiheadAttention(V["d_model"], V["heads"]).head_dim


def test_permutation_equivariance():
    perm = torch.eye(N, dtype=DT)[torch.randperm(N, generator=_g)]
    assert torch.allclose(columns_mha(C @ perm)[0], columns_mha(C)[0] @ perm)


def test_hard_positional_maps_give_identity_and_permutation():
    order = [3, 0, 4, 1, 2]
    assert torch.allclose(CONTENT @ X @ positional(list(range(N))), C, atol=1e-12)
    assert torch.allclose(CONTENT @ X @ positional(order), C[:, order], atol=1e-12)


def test_offdiagonal_weights_at_lambda_are_below_the_bound():
    a = positional(list(range(N)))
    assert (a - torch.diag(a.diagonal())).max() < 10.0 ** V["offdiag_exp"] and bool(a.diagonal().eq(1).all())
    eps = torch.finfo(DT).eps  # the bound is a double itself, but 1 minus it rounds to 1
    assert 10.0 ** V["offdiag_exp"] > 0 and 1.0 - 10.0 ** V["offdiag_exp"] == 1.0 and 1.0 - eps < 1.0
    assert V["float64_eps"] == r"2.2 \cdot 10^{-16}" and abs(eps - 2.2e-16) < 0.05e-16


def test_positional_codes_or_a_mask_break_equivariance():
    perm = torch.eye(N, dtype=DT)[torch.randperm(N, generator=_g)]
    codes = torch.eye(N, dtype=DT)  # one-hot positions added to the first n features of the tokens
    coded = lambda c: c + torch.cat([codes, torch.zeros(E - N, N, dtype=DT)])  # noqa: E731
    assert not torch.allclose(columns_mha(coded(C @ perm))[0], columns_mha(coded(C))[0] @ perm)

    def causal(c: torch.Tensor) -> torch.Tensor:  # one head; query t reads only keys s <= t
        scores = (WK[0] @ c).T @ (WQ[0] @ c)  # (keys, queries)
        future = torch.ones(N, N, dtype=torch.bool).tril(-1)  # key s > query t
        return (WV[0] @ c) @ scores.masked_fill(future, float("-inf")).softmax(0)

    assert not torch.allclose(causal(C @ perm), causal(C) @ perm)


def test_identity_map_with_w_is_positionwise_linear_and_uniform_is_not():
    w = torch.randn(E, E, generator=_g, dtype=DT)
    assert torch.allclose(w @ CONTENT @ X @ positional(list(range(N))), w @ C, atol=1e-12)
    uniform = w @ C @ torch.full((N, N), 1 / N, dtype=DT)
    assert torch.allclose(uniform, (w @ C.mean(1, keepdim=True)).expand(E, N))  # the same vector everywhere
    assert not torch.allclose(uniform, w @ C)


def test_causal_uniform_attention_is_a_running_mean():
    a = torch.ones(N, N, dtype=DT).triu()  # key s <= query t
    running = C.cumsum(1) / torch.arange(1, N + 1, dtype=DT)
    assert torch.allclose(C @ (a / a.sum(0)), running)


def conv(taps: torch.Tensor) -> torch.Tensor:
    """A circular Conv1d with these taps (e, e, K), applied to C."""
    k = taps.shape[-1]
    layer = nn.Conv1d(E, E, k, padding=k // 2, padding_mode="circular", bias=False).to(DT)
    with torch.no_grad():
        layer.weight.copy_(taps)
        return layer(C[None])[0]


def test_kernel_heads_at_shifted_positions_are_a_convolution():
    k = V["kernel"]
    taps = torch.randn(E, E, k, generator=_g, dtype=DT)
    heads = [positional([(t + j - k // 2) % N for t in range(N)]) for j in range(k)]  # one head per tap
    assert torch.allclose(sum(taps[:, :, j] @ CONTENT @ X @ a for j, a in enumerate(heads)), conv(taps), atol=1e-10)


def test_single_head_pattern_gives_taps_that_are_multiples_of_one_matrix():
    k, w = V["kernel"], torch.randn(E, E, generator=_g, dtype=DT)
    weights = torch.rand(k, generator=_g, dtype=DT).softmax(0)  # a_m on offsets m
    a = sum(weights[j] * torch.eye(N, dtype=DT).roll(j - k // 2, 0) for j in range(k))  # (keys, queries)
    assert torch.allclose(w @ C @ a, conv(torch.stack([weights[j] * w for j in range(k)], -1)))


def test_narrow_heads_give_taps_of_rank_e_over_h():
    assert int(torch.linalg.matrix_rank(WO[:, : E // H] @ WV[0])) == E // H < E
