"""Hidden checks of vit.py: patchify in its documented order, and the VisionTransformer against its
specification (put together from its own parts) and against the reference with its weights, at
the recipes' real image sizes."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from grader.checklib import (
    EPS_RANGE,
    RUNS_OWN_BLOCKS,
    Context,
    LayerNormFit,
    check,
    compare,
    compare_naming,
    expect,
    expect_linear,
    is_student_class,
    layer_norm_affine,
)
from reference.configs import RECIPES


def reference_patches(images: Tensor, p: int) -> Tensor:
    """The documented order: grid row by row; each patch flattened in (C, P, P) order."""
    B, C, H, W = images.shape
    grid = images.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)
    return grid.reshape(B, (H // p) * (W // p), C * p * p)


def compare_patches(out: object, images: Tensor, p: int, what: str) -> None:
    """``out`` must be ``reference_patches(images, p)``; when it is one of the usual wrong orders
    (the grid column by column, each patch transposed or flattened channels last), that is said."""
    B, C, H, W = images.shape
    grid = images.reshape(B, C, H // p, p, W // p, p)  # (B, C, h, P, w, P)

    def order(*axes: int) -> Tensor:  # the patches in another order: grid axes first, then one patch's
        return grid.permute(0, *axes).reshape(B, (H // p) * (W // p), C * p * p)

    compare_naming(out, reference_patches(images, p), {
        "the patches are in column-major order (the grid column by column); take them row by row: "
        "(B, C, H/P, P, W/P, P) -> (B, H/P, W/P, C, P, P)": order(4, 2, 1, 3, 5),
        "each patch is transposed (flattened column by column); flatten it row by row, in (C, P, P) order: "
        "(B, C, H/P, P, W/P, P) -> (B, H/P, W/P, C, P, P)": order(2, 4, 1, 5, 3),
        "each patch is flattened in (P, P, C) order (channels last); flatten it in (C, P, P) order: "
        "(B, C, H/P, P, W/P, P) -> (B, H/P, W/P, C, P, P)": order(2, 4, 3, 5, 1),
    }, what)


@check("patchify:one_channel", points=1, student=True)
def test_patchify_one_channel(ctx: Context) -> None:
    """patchify cuts (B, 1, H, W) and (B, H, W) images into row-major patches."""
    images = ctx.randn(2, 1, 28, 28)
    compare_patches(ctx.run("patchify", images, 7)["out"], images, 7, "patchify((2, 1, 28, 28), 7)")
    compare_patches(ctx.run("patchify", images[:, 0], 4)["out"], images, 4, "patchify((2, 28, 28), 4), read as C = 1")


@check("patchify:three_channels", points=0.5, student=True)
def test_patchify_three_channels(ctx: Context) -> None:
    """patchify flattens each patch of a 3-channel image in (C, P, P) order."""
    for shape, p in (((2, 3, 8, 8), 4), ((1, 3, 6, 12), 3), ((2, 3, 32, 32), 4)):
        images = ctx.randn(*shape)
        compare_patches(ctx.run("patchify", images, p)["out"], images, p, f"patchify({shape}, {p}): (C, P, P) order per patch")


@check("patchify:indivisible_raises", points=0.5, student=True)
def test_patchify_indivisible_raises(ctx: Context) -> None:
    """patchify raises ValueError when the image size is not a multiple of the patch size."""
    for shape, p in (((1, 1, 28, 28), 5), ((1, 3, 8, 12), 8)):
        raised = ctx.run("raises_value_error", "patchify", ctx.randn(*shape), p)
        expect(raised["raised"] == "ValueError",
               f"patchify({shape}, {p}) must raise ValueError; {'it raised ' + raised['raised'] if raised['raised'] else 'it raised nothing'}")


BLOCK_PARTS = ("attention", "multihead", "feedforward", "transformer_block")
VIT_KWARGS = dict(image_size=8, patch_size=4, in_channels=3, num_classes=5, d_model=16, num_layers=2, num_heads=2, d_hidden=32)


def _vit(ctx: Context, kwargs: dict = VIT_KWARGS, batch: int = 3) -> dict:
    key = f"vit{kwargs['image_size']}x{kwargs['in_channels']}"
    if key not in ctx.cache:
        images = ctx.randn(batch, kwargs["in_channels"], kwargs["image_size"], kwargs["image_size"])
        norm_input = _norm_input(ctx, kwargs["d_model"])
        value = ctx.run("vit", kwargs, images, norm_input)
        runs = value["blocks"] > 0 and value["blocks_ran"] == list(range(value["blocks"])) and \
            all(is_student_class(c, "TransformerBlock") for c in value["block_classes"])
        ctx.cache[RUNS_OWN_BLOCKS] = ctx.cache.get(RUNS_OWN_BLOCKS, True) and runs
        ctx.cache[key] = ({**value, "norm_input": norm_input}, images)  # the norms' outputs with their input
    return ctx.cache[key][0]


def _norm_input(ctx: Context, d_model: int) -> Tensor:
    """Rows of variance 1 down to 1e-8, where the eps of a LayerNorm shows: at the class token's
    start (zeros + N(0, 0.02^2)) eps 1e-5 and 1e-12 differ by 1%."""
    scale = torch.logspace(0, -4, 8).view(1, 8, 1)  # (1, R, 1)
    return (ctx.randn(1, 8, d_model) + ctx.randn(1, 8, 1)) * scale  # (1, R, D): each row its own mean and spread


def _vit_norms(value: dict) -> dict[str, LayerNormFit] | None:
    """The LayerNorm each of the ViT's norms computes (its own eps, or fitted), by the interface's
    path (``blocks.<i>.norm1``, ``norm``); None when one is not a LayerNorm."""
    fits = {path: layer_norm_affine(value["norm_input"], record.get("out"), record.get("eps"))
            for path, record in (value.get("norms") or {}).items() if isinstance(record, dict)}
    return fits if fits and all(f is not None for f in fits.values()) else None  # type: ignore[return-value]


def _vit_spec(value: dict) -> tuple[Tensor, dict[str, object]]:
    """head(norm(blocks([class; embedding(patches)] + pos)[:, 0])), put together here: the
    blocks' output comes from the child, which ran them on [class; embedding(patches)] + pos
    computed by the probe itself (so that input is not compared: it could not differ), the rest
    from the weights and what the norm computes. With it, the usual wrong forwards (cause -> the
    logits they give, from the blocks' outputs on the wrong inputs the probe sent)."""
    expect(isinstance(value["embedding"], dict), "the interface's patch embedding is `self.embedding = nn.Linear(C*P*P, "
           f"d_model)`, applied to patchify's output (B, N, C*P*P); found a {value['embedding']}")
    expect(not value.get("parts_error"), "the ViT's parts, called as the interface describes them "
           f"(embedding(patchify(images)), blocks, norm), failed: {value.get('parts_error')}")
    parts, s = value["parts"], value["state"]
    needed = ("class_token", "pos_embedding", "head.weight", "head.bias")
    expect(bool(parts) and all(k in s for k in needed) and "normed" in parts,
           "the ViT lacks one of embedding, class_token, pos_embedding, blocks, norm, head")
    eps = getattr((_vit_norms(value) or {}).get("norm"), "eps", None)
    norm = layer_norm_affine(parts["blocks_out"], parts["normed"], eps)
    expect(norm is not None, f"norm must compute LayerNorm over the last axis with an eps from {EPS_RANGE[0]:g} to "
                             f"{EPS_RANGE[1]:g} (nn.LayerNorm(d_model), or your own equal to it)")

    def head(token: Tensor) -> Tensor:  # (B, D) -> (B, classes), through the ViT's own norm and head
        return F.linear(F.layer_norm(token, token.shape[-1:], norm.weight, norm.bias, norm.eps), s["head.weight"], s["head.bias"])

    out, wrong = parts["blocks_out"], value.get("variants") or {}  # (B, N+1, D) each
    pos = s["pos_embedding"]
    mistakes = {
        "the class token is appended at the end of the tokens; prepend it ([class; patches]): the head reads it at "
        "position 0": lambda: head(wrong["class_last"][:, 0]),
        "the class token is appended at the end and read there; the interface puts it first ([class; patches]) "
        "and reads position 0": lambda: head(wrong["class_last"][:, -1]),
        "the head reads the last position; the class token is at position 0: read x[:, 0]": lambda: head(out[:, -1]),
        "the positional embedding is added after the blocks; add it to the tokens before them: "
        "blocks([class; patches] + pos)": lambda: head((wrong["no_pos"] + pos)[:, 0]),
        "the positional embedding is never added; add it to the tokens before the blocks: "
        "blocks([class; patches] + pos)": lambda: head(wrong["no_pos"][:, 0]),
    }
    return head(out[:, 0]), mistakes  # out[:, 0]: the class token after the blocks


def _reference_logits(kwargs: dict, value: dict, images: Tensor, gelu: str = "none") -> Tensor | None:
    """The reference ViT with the student's weights, GELU form and LayerNorms (each norm's scale,
    shift and eps as it computes them, whatever its parameter names), when the weights load into
    it exactly; else None."""
    from reference.vit import VisionTransformer

    norms = _vit_norms(value)
    if norms is None:
        return None
    model = VisionTransformer(**kwargs)
    # The student's parameters under the interface's names (the probe found them through the
    # attributes); the norms as they compute, whatever their parameters are called.
    state = {k: value["state"][k] for k in model.state_dict() if k in value["state"]}
    for path, fit in norms.items():
        state.update({f"{path}.weight": fit.weight, f"{path}.bias": fit.bias})
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError):
        return None
    for name, module in model.named_modules():
        if isinstance(module, nn.GELU):
            module.approximate = gelu
        if isinstance(module, nn.LayerNorm):
            module.eps = norms[name].eps
    with torch.no_grad():
        return model.eval()(images)


@check("vit:interface", points=1, student=True)
def test_vit_interface(ctx: Context) -> None:
    """VisionTransformer has a linear patch embedding, a class token, a positional embedding and num_layers of your TransformerBlocks, all run in forward."""
    value = _vit(ctx)
    expect_linear(value["embedding"], "embedding", 3 * 4 * 4, 16, True,
                  "patch embedding, applied to patchify's output (B, N, C*P*P),")
    expect(value["shapes"].get("class_token") == [1, 1, 16], f"class_token must be (1, 1, d_model), found {value['shapes'].get('class_token')}")
    expect(value["shapes"].get("pos_embedding") == [1, 5, 16], f"pos_embedding must be (1, N+1, d_model) = (1, 5, 16), found {value['shapes'].get('pos_embedding')}")
    students = all(is_student_class(c, "TransformerBlock") for c in value["block_classes"])
    expect(value["blocks"] == 2 and students, "blocks must be an nn.Sequential of num_layers of your TransformerBlock")
    expect(value["blocks_ran"] == [0, 1], "forward must run every one of your TransformerBlocks")


@check("vit:forward", points=1)
def test_vit_forward(ctx: Context) -> None:
    """VisionTransformer computes head(norm(blocks([class; embedding(patches)] + pos))[:, 0]) at the recipes' image sizes.

    On the small ViT and on both recipes' models at their real image sizes (28x28x1, 32x32x3),
    so that code which behaves differently at those sizes is caught."""
    # The specified ViT with the student's weights is the expected value only when every part it
    # is built from passed: a part's own mistake is charged to that part alone.
    parts_pass = all(ctx.passed(c) for c in (*BLOCK_PARTS, "patchify"))
    sizes = [(VIT_KWARGS, 3)] + [(dict(vars(r.model)), 2) for r in RECIPES.values()]
    for kwargs, batch in sizes:
        value = _vit(ctx, kwargs, batch)
        images = ctx.cache[f"vit{kwargs['image_size']}x{kwargs['in_channels']}"][1]
        size = f"{kwargs['in_channels']}x{kwargs['image_size']}x{kwargs['image_size']} images"
        want = (batch, kwargs["num_classes"])
        expect(tuple(value["logits"].shape) == want, f"logits shape {tuple(value['logits'].shape)} for {size}, expected (B, num_classes) = {want}")
        spec, mistakes = _vit_spec(value)
        compare_naming(value["eval_logits"], spec, {f"{cause} ({size})": wrong for cause, wrong in mistakes.items()},
                       f"head(norm(blocks([class; embedding(patches)] + pos))[:, 0]), with the ViT's own parts, {size}")
        expected = _reference_logits(kwargs, value, images, ctx.cache.get("gelu", "none")) if parts_pass else None
        if expected is not None:
            compare(value["eval_logits"], expected, f"logits vs the specified ViT with your weights, {size}")


@check("vit:gradients", points=0.5, student=True)
def test_vit_gradients(ctx: Context) -> None:
    """A gradient reaches every parameter of the VisionTransformer."""
    missing = _vit(ctx)["no_grad"]
    if not all(ctx.passed(c) for c in BLOCK_PARTS):
        missing = [n for n in missing if not n.startswith("blocks.")]  # the blocks' own mistakes are charged to them
    expect(not missing, f"no gradient reaches: {', '.join(missing[:8])}")


@check("vit:attention_maps", points=0.5, student=True)
def test_vit_attention_maps(ctx: Context) -> None:
    """attention_maps returns one (B, heads, N+1, N+1) tensor per block."""
    maps = _vit(ctx)["maps"]
    expect(isinstance(maps, (list, tuple)) and len(maps) == 2, "attention_maps must return a list with one tensor per block")
    for i, m in enumerate(maps):
        expect(isinstance(m, Tensor) and tuple(m.shape) == (3, 2, 5, 5),
               f"attention map {i}: shape {tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__}, expected (B, heads, N+1, N+1) = (3, 2, 5, 5)")


