"""Hidden checks of attention.py: the attention function, single-head attention of Eq. (1) and
multi-head self-attention, against PyTorch's own attention with the student's weights."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from grader.checklib import (
    CheckFailed,
    Context,
    check,
    check_dropout,
    close,
    compare,
    compare_naming,
    copy_to_mha,
    expect,
    expect_linear,
    need,
)

# --- the attention function and single-head attention ----------------------------------------

@check("attention:function_shapes", points=0.5, student=True)
def test_attention_function_shapes(ctx: Context) -> None:
    """The attention function returns (output, weights) of the right shapes for any batch dimensions, in the inputs' dtype."""
    for shape, t_k, d_v in (((2, 5, 8), 7, 4), ((2, 3, 4, 16), 6, 16), ((6, 3), 3, 2)):
        q = ctx.randn(*shape, dtype=torch.float64)
        k = ctx.randn(*shape[:-2], t_k, shape[-1], dtype=torch.float64)
        v = ctx.randn(*shape[:-2], t_k, d_v, dtype=torch.float64)
        value = ctx.run("attention_function", q, k, v)
        for key, want in (("out", (*shape[:-1], d_v)), ("weights", (*shape[:-1], t_k))):
            got = value[key]
            expect(isinstance(got, Tensor) and tuple(got.shape) == want,
                   f"{key} for q {tuple(shape)}: shape {tuple(got.shape) if isinstance(got, Tensor) else got}, expected {want}")
            expect(got.dtype == torch.float64, f"{key}: float64 inputs gave {got.dtype}; the output must follow the input")


def attention_diagnosis(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, out: Any, weights: Any) -> str | None:
    """The cause, in words, when the weights are a known mistake (the scale, the softmax axis, the
    mask's meaning) or the output is not weights @ v; None when nothing known is wrong."""
    d = q.size(-1)
    scores = q.double() @ k.double().transpose(-2, -1)

    def softmax(scaled: Tensor, axis: int = -1, keep: Tensor | None = mask) -> Tensor:
        return (scaled if keep is None else scaled.masked_fill(~keep, float("-inf"))).softmax(axis)

    if not (isinstance(weights, Tensor) and tuple(weights.shape) == tuple(scores.shape)):
        return f"the weights must have shape {tuple(scores.shape)} (..., T_q, T_k)"
    causes = {
        "the softmax is taken over the queries (dim -2); take it over the keys, the last axis": softmax(scores / d ** 0.5, -2),
        "the scores are divided by d_k; divide them by sqrt(d_k)": softmax(scores / d),
        "the scores are not scaled; divide them by sqrt(d_k)": softmax(scores),
        "the scores are multiplied by sqrt(d_k); divide them by it": softmax(scores * d ** 0.5),
    }
    if mask is not None:  # NaN in the rows that an inverted mask leaves empty, as the mistake gives
        causes["the mask is inverted: True means 'may attend', so the False positions must get weight 0"] = \
            softmax(scores / d ** 0.5, keep=~mask)
        causes["the mask is ignored: set the scores where the mask is False to -inf before the softmax "
               "(True = may attend)"] = softmax(scores / d ** 0.5, keep=None)
        causes["the masked scores are set to 0 instead of -inf: a score of 0 still gets weight after the softmax; "
               "fill them with float('-inf')"] = softmax((scores / d ** 0.5).masked_fill(~mask, 0.0), keep=None)
    right = softmax(scores / d ** 0.5)
    if not close(weights, right):
        found = [cause for cause, wrong in causes.items() if close(weights, wrong, same_nan=True)]
        if found:
            return found[0]
        sums = weights.double().sum(-1)
        if not close(sums, torch.ones_like(sums)):
            return "each row of the weights must sum to 1 (a softmax over the keys, the last axis)"
        return None  # an unknown mistake: the comparison with PyTorch says where
    if isinstance(out, Tensor) and tuple(out.shape) == (*weights.shape[:-1], v.size(-1)) \
            and not close(out, weights.double() @ v.double()):
        return "the weights are right but the output is not weights @ v"
    return None


@check("attention:function_matches_pytorch", points=0.5, student=True)
def test_attention_function_matches_pytorch(ctx: Context) -> None:
    """The attention function: weights = softmax(q k^T / sqrt(d_k)) over the keys, output = weights @ v, as PyTorch computes it."""
    q, k, v = ctx.randn(3, 2, 6, 16), ctx.randn(3, 2, 9, 16), ctx.randn(3, 2, 9, 8)
    value = ctx.run("attention_function", q, k, v)
    cause = attention_diagnosis(q, k, v, None, value["out"], value["weights"])
    expect(cause is None, f"{cause}" if cause else "")
    compare(value["out"], F.scaled_dot_product_attention(q, k, v), "output vs F.scaled_dot_product_attention")
    weights = torch.softmax(q @ k.transpose(-2, -1) / 16 ** 0.5, dim=-1)
    compare(value["weights"], weights, "attention weights (softmax over the keys of q k^T / sqrt(d_k))")


@check("attention:function_mask", points=1, student=True)
def test_attention_function_mask(ctx: Context) -> None:
    """With a boolean mask (True = may attend): masked weights are exactly 0, rows sum to 1, the output matches PyTorch."""
    q, k, v = ctx.randn(2, 7, 8), ctx.randn(2, 5, 8), ctx.randn(2, 5, 3)
    mask = ctx.mask(7, 5)
    value = ctx.run("attention_function", q, k, v, mask)
    cause = attention_diagnosis(q, k, v, mask, value["out"], value["weights"])
    expect(cause is None, f"with a mask: {cause}" if cause else "")
    compare(value["out"], F.scaled_dot_product_attention(q, k, v, attn_mask=mask), "masked output vs F.scaled_dot_product_attention")
    weights = value["weights"]
    compare(weights.sum(-1), torch.ones(2, 7), "rows of the weights must sum to 1")
    leaked = weights[..., ~mask].abs().max().item()
    expect(leaked == 0, f"masked-out positions get weight {leaked:.3g}; they must get 0 (mask True = may attend)")


@check("attention:function_large_scores", points=0.5, student=True)
def test_attention_function_large_scores(ctx: Context) -> None:
    """Scores in the hundreds (where exp overflows float32 past 88) give the same finite weights and output as PyTorch."""
    q, k, v = 30 * ctx.randn(2, 5, 16), 30 * ctx.randn(2, 6, 16), ctx.randn(2, 6, 4)  # scores / sqrt(d_k) ~ 900
    value = ctx.run("attention_function", q, k, v)
    weights = value["weights"]
    expect(not isinstance(weights, Tensor) or bool(torch.isfinite(weights).all()),
           "with scores in the hundreds the weights contain NaN or infinity: exp overflows; subtract the row maximum "
           "before exp (softmax(s) = softmax(s - max s)), as torch.softmax does")
    compare(weights, torch.softmax(q @ k.transpose(-2, -1) / 16 ** 0.5, dim=-1), "attention weights with large scores")
    compare(value["out"], F.scaled_dot_product_attention(q, k, v), "output with large scores vs F.scaled_dot_product_attention")


@check("attention:single_head_interface", points=0.5, student=True)
def test_attention_single_head_interface(ctx: Context) -> None:
    """ScaledDotProductAttention has w_q, w_k and w_v as nn.Linear(d_model, d_model, bias=False)."""
    d = 12
    value = ctx.run("single_head", d, ctx.randn(2, 3, d), ctx.randn(2, 4, d), ctx.randn(2, 4, d))
    for name in ("w_q", "w_k", "w_v"):
        expect_linear(value["linears"][name], name, d, d, False)


@check("attention:single_head_matches_pytorch", points=1, student=True)
def test_attention_single_head_matches_pytorch(ctx: Context) -> None:
    """Single-head attention of Eq. (1): attention of the projected q, k and v, with a mask, as PyTorch computes it."""
    d = 16
    q, k, v = ctx.randn(3, 5, d), ctx.randn(3, 7, d), ctx.randn(3, 7, d)
    mask = ctx.mask(5, 7)
    value = ctx.run("single_head", d, q, k, v, mask)
    state = value["state"]
    need(state, "w_q.weight", "w_k.weight", "w_v.weight")
    pq, pk, pv = q @ state["w_q.weight"].T, k @ state["w_k.weight"].T, v @ state["w_v.weight"].T
    if isinstance(value["weights"], Tensor):  # the attention function's mistakes, named here too
        cause = attention_diagnosis(pq, pk, pv, mask, value["out"], value["weights"])
        expect(cause is None, f"Eq. (1) with a mask: {cause}")
    compare(value["out"], F.scaled_dot_product_attention(pq, pk, pv, attn_mask=mask), "output of Eq. (1) with a mask")
    compare(value["plain"], value["out"], "forward without return_attention must return the same output")
    expect(tuple(value["weights"].shape) == (3, 5, 7), f"attention weights shape {tuple(value['weights'].shape)}, expected (3, 5, 7)")


# --- multi-head ------------------------------------------------------------------------------

@check("multihead:interface", points=0.5, student=True)
def test_multihead_interface(ctx: Context) -> None:
    """MultiHeadSelfAttention has w_q, w_k, w_v and w_o as nn.Linear(d_model, d_model) and refuses d_model not divisible by num_heads."""
    for bias in (True, False):
        value = ctx.run("multihead", 16, 4, ctx.randn(1, 3, 16), None, bias)
        for name in ("w_q", "w_k", "w_v", "w_o"):
            expect_linear(value["linears"][name], name, 16, 16, bias)
    raised = ctx.run("raises_value_error", "MultiHeadSelfAttention", 10, 3)
    expect(raised["raised"] == "ValueError",
           f"MultiHeadSelfAttention(10, 3) must raise ValueError (10 is not divisible by 3); "
           f"{'it raised ' + raised['raised'] if raised['raised'] else 'it raised nothing'}")


NO_OUTPUT_PROJECTION = "W^O is never applied: after merging the heads back to (B, T, d_model), apply self.w_o"


def multihead_mistakes(x: Tensor, s: dict[str, Tensor], h: int, mask: Tensor | None) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The usual multi-head mistakes, computed here from the same input and the module's weights
    (with a right attention function): cause -> the per-head weights (B, h, T, T) it gives, and
    cause -> the output (B, T, D) it gives with right weights."""
    B, T, D = tuple(x.shape)
    d = D // h

    def project(p: str) -> Tensor:
        return F.linear(x.double(), s[f"{p}.weight"].double(), s[f"{p}.bias"].double())  # (B, T, D)

    def split(t: Tensor) -> Tensor:
        return t.reshape(B, T, h, d).transpose(1, 2)  # (B, h, T, d)

    def attend(q: Tensor, k: Tensor, scale: float, keep: Tensor | None = mask) -> Tensor:
        scores = q @ k.transpose(-2, -1) / scale  # (B, h, T, T)
        return (scores if keep is None else scores.masked_fill(~keep, float("-inf"))).softmax(-1)

    q, k, v = project("w_q"), project("w_k"), project("w_v")
    weights = {
        "your heads are split with reshape only: (B, T, d_model) -> (B, T, heads, d_head) must then be transposed "
        "to (B, heads, T, d_head) before the scores": attend(q.reshape(B, h, T, d), k.reshape(B, h, T, d), d ** 0.5),
        "the scores are divided by sqrt(d_model); each head's scores are divided by sqrt(d_head) = "
        "sqrt(d_model / num_heads)": attend(split(q), split(k), D ** 0.5),
    }
    if mask is not None:  # and not passed on: one more mistake to name
        weights["the mask is not applied: pass it to the attention function, the same (T, T) mask for every head"] = \
            attend(split(q), split(k), d ** 0.5, keep=None)
    heads = attend(split(q), split(k), d ** 0.5) @ split(v)  # (B, h, T, d)
    w_o, b_o = s["w_o.weight"].double(), s["w_o.bias"].double()
    outputs = {
        NO_OUTPUT_PROJECTION: heads.transpose(1, 2).reshape(B, T, D),
        "the heads are merged with reshape only: (B, heads, T, d_head) must be transposed to (B, T, heads, d_head) "
        "before the reshape to (B, T, d_model)": F.linear(heads.reshape(B, T, D), w_o, b_o),
    }
    return weights, outputs


def _multihead_parity(ctx: Context, num_heads: int, d_model: int, output_projection: bool = True) -> None:
    """The module's per-head weights and output against nn.MultiheadAttention's with its weights,
    naming the usual mistakes. Without ``output_projection`` (one head), an output lacking only W^O
    passes: the many-heads check charges it, so that a multi-head mistake costs one check."""
    x = ctx.randn(3, 6, d_model)
    mask = ctx.mask(6, 6)
    for m in (None, mask):
        value = ctx.run("multihead", d_model, num_heads, x, m)
        need(value["state"], *(f"{p}.{w}" for p in ("w_q", "w_k", "w_v", "w_o") for w in ("weight", "bias")))
        mha = copy_to_mha(value["state"], d_model, num_heads, True)
        with torch.no_grad():
            out, weights = mha(x, x, x, attn_mask=None if m is None else ~m, average_attn_weights=False)
        how = f"{num_heads} head{'s' if num_heads > 1 else ''}, {'with a mask' if m is not None else 'without a mask'}"
        wrong_weights, wrong_outputs = multihead_mistakes(x, value["state"], num_heads, m)
        try:
            compare_naming(value["weights"], weights, {f"{c} ({how})": w for c, w in wrong_weights.items()},
                           f"per-head weights (B, heads, T, T) vs nn.MultiheadAttention ({how})")
            if not output_projection and close(value["out"], wrong_outputs[NO_OUTPUT_PROJECTION]):
                continue  # judged where the heads are many
            compare_naming(value["out"], out, {f"{c} ({how})": w for c, w in wrong_outputs.items()},
                           f"output vs nn.MultiheadAttention ({how})")
        except CheckFailed:
            # A mistake inherited from the student's own attention function is charged to attention only.
            if ctx.passed("attention"):
                raise
            spec = _multihead_from_own_function(ctx, value["state"], num_heads, x, m)
            compare(value["out"], spec, f"output vs multi-head attention built from your own attention function ({how})",
                    same_nan=True)


def _multihead_from_own_function(ctx: Context, s: dict[str, Tensor], h: int, x: Tensor, mask: Tensor | None) -> Tensor:
    """Multi-head attention with the module's weights and the student's own attention function:
    the projections, the head split and W^O here; only the attention function in the child."""
    B, T, D = tuple(x.shape)

    def split(p: str) -> Tensor:
        return F.linear(x, s[f"{p}.weight"], s[f"{p}.bias"]).reshape(B, T, h, D // h).transpose(1, 2)  # (B, h, T, D/h)

    heads = ctx.run("attention_function", split("w_q"), split("w_k"), split("w_v"), mask)["out"]
    expect(isinstance(heads, Tensor) and tuple(heads.shape) == (B, h, T, D // h),
           "your attention function gave no output of the right shape for the heads")
    return F.linear(heads.transpose(1, 2).reshape(B, T, D), s["w_o.weight"], s["w_o.bias"])


# What makes attention multi-head (the head split, each head's scale, the merge, W^O) is worth
# many_heads' 2 of the component's 5 points: one head has no split or per-head scale to get wrong
# and leaves W^O to many_heads, so that such a mistake costs those 2 points, not 4 or 1.
@check("multihead:one_head", points=2, student=True)
def test_multihead_one_head(ctx: Context) -> None:
    """With one head, the weights and output equal nn.MultiheadAttention's with the same weights, with and without a mask (W^O is judged with many heads)."""
    _multihead_parity(ctx, 1, 12, output_projection=False)


@check("multihead:many_heads", points=2, student=True)
def test_multihead_many_heads(ctx: Context) -> None:
    """With 2 and 4 heads (the head split, each head's scale, the merge, W^O): output and per-head weights equal nn.MultiheadAttention's with the same weights."""
    _multihead_parity(ctx, 2, 16)
    _multihead_parity(ctx, 4, 16)


@check("multihead:dropout", points=0.5)
def test_multihead_dropout(ctx: Context) -> None:
    """Dropout on the attention weights: random in train mode, off in eval mode."""
    check_dropout(ctx, "MultiHeadSelfAttention", [16, 4, 0.5], ctx.randn(2, 9, 16))

