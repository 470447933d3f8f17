"""Hidden checks of blocks.py: the feed-forward block, the residual block of the exercise and the
pre-LayerNorm transformer block, each against its specification built from its own sub-modules,
then against PyTorch's encoder layer."""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from grader.checklib import (
    EPS_RANGE,
    GELU_FORMS,
    CheckFailed,
    Context,
    LayerNormFit,
    check,
    check_dropout,
    class_name,
    compare,
    compare_any,
    compare_naming,
    copy_to_mha,
    expect,
    expect_linear,
    is_student_class,
    layer_norm_affine,
    need,
)


@check("feedforward:interface", points=0.5, student=True)
def test_feedforward_interface(ctx: Context) -> None:
    """FeedForwardBlock has fc1 = nn.Linear(d_model, d_hidden) and fc2 = nn.Linear(d_hidden, d_model)."""
    value = ctx.run("feedforward", 8, 24, ctx.randn(2, 3, 8))
    expect_linear(value["linears"]["fc1"], "fc1", 8, 24, True)
    expect_linear(value["linears"]["fc2"], "fc2", 24, 8, True)


@check("feedforward:matches_spec", points=0.5, student=True)
def test_feedforward_matches_spec(ctx: Context) -> None:
    """FeedForwardBlock computes fc2(GELU(fc1(x))) (exact or tanh GELU)."""
    x = ctx.randn(2, 5, 8)
    value = ctx.run("feedforward", 8, 24, x)
    s = value["state"]
    need(s, "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")
    hidden = F.linear(x, s["fc1.weight"], s["fc1.bias"])
    forms = {form: F.linear(F.gelu(hidden, approximate=form), s["fc2.weight"], s["fc2.bias"]) for form in GELU_FORMS}
    ctx.cache["gelu"] = compare_any(value["out"], forms, "fc2(gelu(fc1(x)))")  # the form the ViT check uses too


@check("residual_block:uses_its_parts", points=0.5, student=True)
def test_residual_block_uses_its_parts(ctx: Context) -> None:
    """SelfAttentionBlock is built from your ScaledDotProductAttention and FeedForwardBlock."""
    classes = ctx.run("residual_block", 8, 16, ctx.randn(2, 4, 8))["classes"]
    expect(is_student_class(classes["attention"], "ScaledDotProductAttention"),
           f"`attention` must be your ScaledDotProductAttention, found {class_name(classes['attention'])}")
    expect(is_student_class(classes["mlp"], "FeedForwardBlock"),
           f"`mlp` must be your FeedForwardBlock, found {class_name(classes['mlp'])}")


@check("residual_block:residual_update", points=1.5, student=True)
def test_residual_block_residual_update(ctx: Context) -> None:
    """SelfAttentionBlock computes x <- x + attention(x, x, x); x <- x + mlp(x) with its own sub-modules."""
    x = ctx.randn(3, 5, 8)
    value = ctx.run("residual_block", 8, 16, x)
    other = value.get("other") or {}
    compare_naming(value["out"], x + value["attended"] + value["mlp_out"], {
        "the MLP branch is not added: after x <- x + attention(x, x, x) comes x <- x + mlp(x)": x + value["attended"],
        "the attention branch is not added: x <- x + attention(x, x, x) comes first": lambda: x + other["mlp(x)"],
        "the MLP is applied to the block's input; apply it to x after the attention update": lambda: x + value["attended"] + other["mlp(x)"],
        "the attention branch has no residual connection: x <- x + attention(x, x, x)": lambda: value["attended"] + other["mlp(attended)"],
        "the MLP branch has no residual connection: x <- x + mlp(x)": value["mlp_out"],
    }, "x <- x + attention(x, x, x); x <- x + mlp(x), with the block's own sub-modules")


def _norm_fit(value: dict, x: torch.Tensor, name: str) -> LayerNormFit | None:
    """The LayerNorm the block's ``name`` computes on ``x``, with its own eps where it is an nn.LayerNorm."""
    return layer_norm_affine(x, (value.get("normed") or {}).get(name), (value.get("eps") or {}).get(name))


@check("transformer_block:pre_norm_update", points=1.5, student=True)
def test_transformer_block_pre_norm_update(ctx: Context) -> None:
    """TransformerBlock is pre-LayerNorm: x <- x + attention(norm1(x)); x <- x + mlp(norm2(x))."""
    x = ctx.randn(2, 6, 16)
    value = ctx.run("transformer_block", 16, 4, 32, x)
    classes = value["classes"]
    expect(is_student_class(classes["attention"], "MultiHeadSelfAttention") and is_student_class(classes["mlp"], "FeedForwardBlock"),
           "attention must be your MultiHeadSelfAttention and mlp your FeedForwardBlock")
    for name in ("norm1", "norm2"):
        expect(_norm_fit(value, x, name) is not None, f"{name} must compute LayerNorm over the last axis with an eps "
               f"from {EPS_RANGE[0]:g} to {EPS_RANGE[1]:g} (nn.LayerNorm(d_model), or your own equal to it)")
    other = value.get("other") or {}
    compare_naming(value["out"], x + value["attended"] + value["mlp_out"], {
        "the norms come after the residual additions (post-norm); this block is pre-norm: x <- x + attention(norm1(x))":
            lambda: other["post_norm"],
        "the LayerNorms are applied to the branches' outputs (x + norm(f(x))); pre-norm applies them to their inputs: "
        "x <- x + attention(norm1(x)); x <- x + mlp(norm2(x))": lambda: other["norm_on_branch"],
        "the MLP branch is not added: after x <- x + attention(norm1(x)) comes x <- x + mlp(norm2(x))": x + value["attended"],
        "the MLP branch gets the block's input; give it x after the attention update": lambda: x + value["attended"] + other["mlp(norm2(x))"],
        "the attention branch has no residual connection: x <- x + attention(norm1(x))":
            lambda: value["attended"] + other["mlp(norm2(attended))"],
        "the MLP branch has no residual connection: x <- x + mlp(norm2(x))": value["mlp_out"],
    }, "x <- x + attention(norm1(x)); x <- x + mlp(norm2(x)), with the block's own sub-modules")


@check("transformer_block:matches_pytorch", points=1, student=True)
def test_transformer_block_matches_pytorch(ctx: Context) -> None:
    """TransformerBlock equals nn.TransformerEncoderLayer(norm_first=True, activation='gelu') with the same weights, with and without a mask."""
    expect(ctx.passed("transformer_block"), "not compared with PyTorch: the block does not meet its specification (above)")
    if not all(ctx.passed(c) for c in ("attention", "multihead", "feedforward")):
        return  # judged on its specification alone: the attention's mistake is charged where it lies
    x, mask = ctx.randn(3, 7, 16), ctx.mask(7, 7)
    value = ctx.run("transformer_block", 16, 4, 48, x, mask)
    s = value["state"]
    layer = nn.TransformerEncoderLayer(16, 4, 48, 0.0, activation="gelu", batch_first=True, norm_first=True)
    need(s, "mlp.fc1.weight", "mlp.fc2.weight", "attention.w_o.weight")
    norms = [_norm_fit(value, x, n) for n in ("norm1", "norm2")]
    expect(all(n is not None for n in norms), "norm1/norm2 must compute LayerNorm over the last axis")
    with torch.no_grad():
        attn = {k[len("attention."):]: v for k, v in s.items() if k.startswith("attention.")}
        layer.self_attn.load_state_dict(copy_to_mha(attn, 16, 4, True).state_dict())
        for fit, theirs in zip(norms, (layer.norm1, layer.norm2)):  # fitted from what the norms compute
            theirs.weight.copy_(fit.weight)
            theirs.bias.copy_(fit.bias)
            theirs.eps = fit.eps
        for ours, theirs in (("mlp.fc1", layer.linear1), ("mlp.fc2", layer.linear2)):
            theirs.weight.copy_(s[f"{ours}.weight"])
            theirs.bias.copy_(s[f"{ours}.bias"])
        layer.eval()
        failures = []
        for form in GELU_FORMS:  # the GELU the student's MLP uses: exact or tanh, both are GELU
            layer.activation = functools.partial(F.gelu, approximate=form)
            layer.activation_relu_or_gelu = 0  # PyTorch's fused fast path would use its own exact GELU
            try:
                compare(value["out"], layer(x), "output vs nn.TransformerEncoderLayer(norm_first=True, activation='gelu')")
                compare(value["masked"], layer(x, src_mask=~mask), "masked output vs nn.TransformerEncoderLayer")
                break
            except CheckFailed as e:
                failures.append(e)
        else:
            raise failures[0]
    expect(tuple(value["weights"].shape) == (3, 4, 7, 7), f"attention weights shape {tuple(value['weights'].shape)}, expected (3, 4, 7, 7)")


@check("transformer_block:dropout", points=0.5)
def test_transformer_block_dropout(ctx: Context) -> None:
    """TransformerBlock applies dropout in train mode and none in eval mode."""
    check_dropout(ctx, "TransformerBlock", [16, 4, 32, 0.3], ctx.randn(2, 5, 16))

