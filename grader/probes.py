"""Probes: grader code that runs *inside* the sandbox child, next to the student's code.

Each probe builds the student's objects, runs them on inputs the parent sent and returns plain
data (tensors, numbers, strings). Probes never judge: the parent compares and scores. A probe
that needs the specification of a composite (a block, the ViT) computes it from the student's
own sub-modules, so that a mistake in attention is not charged again to the block.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


def _state(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _linear_info(module: nn.Module, name: str) -> dict[str, Any] | str:
    """What attribute ``name`` is: a dict for an nn.Linear, else the type name (or "missing")."""
    layer = getattr(module, name, None)
    if layer is None:
        return "missing"
    if not isinstance(layer, nn.Linear):
        return type(layer).__name__
    return {"in": layer.in_features, "out": layer.out_features, "bias": layer.bias is not None}


def _split(result: Any, return_attention: bool) -> tuple[Tensor, Tensor | None]:
    if return_attention:
        if not (isinstance(result, (tuple, list)) and len(result) == 2):
            raise TypeError("forward(..., return_attention=True) must return (output, attention weights)")
        return result[0], result[1]
    return result, None


def attention_function(ns: Any, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> dict:
    result = ns.scaled_dot_product_attention(q, k, v, mask)
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        raise TypeError("scaled_dot_product_attention must return (out, weights)")
    return {"out": result[0], "weights": result[1]}


def single_head(ns: Any, d_model: int, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> dict:
    module = ns.ScaledDotProductAttention(d_model).eval()
    with torch.no_grad():
        out, weights = _split(module(q, k, v, mask, return_attention=True), True)
        plain = module(q, k, v, mask)
    return {"out": out, "weights": weights, "plain": plain, "state": _state(module),
            "linears": {n: _linear_info(module, n) for n in ("w_q", "w_k", "w_v")}}


def multihead(ns: Any, d_model: int, num_heads: int, x: Tensor, mask: Tensor | None = None, bias: bool = True) -> dict:
    module = ns.MultiHeadSelfAttention(d_model, num_heads, 0.0, bias).eval()
    with torch.no_grad():
        out, weights = _split(module(x, mask, return_attention=True), True)
        spec = _multihead_spec(ns, module, num_heads, x, mask)
    return {"out": out, "weights": weights, "spec": spec, "state": _state(module),
            "linears": {n: _linear_info(module, n) for n in ("w_q", "w_k", "w_v", "w_o")}}


def _multihead_spec(ns: Any, module: nn.Module, h: int, x: Tensor, mask: Tensor | None) -> Tensor | None:
    """Multi-head attention built from the student's own projections and attention function: the
    specification a multi-head module that reuses a faulty function is held to."""
    try:
        B, T, D = x.shape

        def split(t: Tensor) -> Tensor:
            return t.reshape(B, T, h, D // h).transpose(1, 2)  # (B, h, T, D/h)

        q, k, v = split(module.w_q(x)), split(module.w_k(x)), split(module.w_v(x))
        out, _ = ns.scaled_dot_product_attention(q, k, v, mask)
        return module.w_o(out.transpose(1, 2).reshape(B, T, D))
    except Exception:  # noqa: BLE001 - no specification; the parent then needs PyTorch parity
        return None


def raises_value_error(ns: Any, name: str, *args: Any) -> dict:
    """Whether ``ns.<name>(*args)`` raises ValueError (and what it raised otherwise)."""
    try:
        getattr(ns, name)(*args)
    except ValueError as e:
        return {"raised": "ValueError", "message": str(e)[:200]}
    except Exception as e:  # noqa: BLE001 - reported to the parent, which decides
        return {"raised": type(e).__name__, "message": str(e)[:200]}
    return {"raised": ""}


def dropout_modes(ns: Any, name: str, args: list, x: Tensor) -> dict:
    """Two forwards in train mode and two in eval mode of ``ns.<name>(*args)``."""
    module = getattr(ns, name)(*args)
    with torch.no_grad():
        module.train()
        train = [module(x), module(x)]
        module.eval()
        evals = [module(x), module(x)]
    return {"train": train, "eval": evals}


def feedforward(ns: Any, d_model: int, d_hidden: int, x: Tensor) -> dict:
    module = ns.FeedForwardBlock(d_model, d_hidden).eval()
    with torch.no_grad():
        out = module(x)
    return {"out": out, "state": _state(module),
            "linears": {n: _linear_info(module, n) for n in ("fc1", "fc2")}}


def residual_block(ns: Any, d_model: int, d_hidden: int, x: Tensor) -> dict:
    """The block's output, and its specification from its own sub-modules: the update
    x + attention(x, x, x), then + mlp(.)."""
    block = ns.SelfAttentionBlock(d_model, d_hidden).eval()
    attention, mlp = getattr(block, "attention", None), getattr(block, "mlp", None)
    if attention is None or mlp is None:
        raise AttributeError("SelfAttentionBlock needs the attributes `attention` and `mlp`")
    with torch.no_grad():
        out = block(x)
        h = x + attention(x, x, x)
        spec = h + mlp(h)
    return {"out": out, "spec": spec,
            "types": {"attention": type(attention).__name__, "mlp": type(mlp).__name__},
            "student_types": {"attention": isinstance(attention, ns.ScaledDotProductAttention),
                              "mlp": isinstance(mlp, ns.FeedForwardBlock)}}


def transformer_block(ns: Any, d_model: int, num_heads: int, d_hidden: int, x: Tensor, mask: Tensor | None = None) -> dict:
    """Output, per-head weights, the pre-LN specification from the block's own sub-modules, and
    the weights for the parent's comparison with nn.TransformerEncoderLayer."""
    block = ns.TransformerBlock(d_model, num_heads, d_hidden, 0.0).eval()
    parts = {n: getattr(block, n, None) for n in ("norm1", "attention", "norm2", "mlp")}
    missing = [n for n, m in parts.items() if m is None]
    if missing:
        raise AttributeError(f"TransformerBlock needs the attributes {', '.join(missing)}")
    with torch.no_grad():
        out, weights = _split(block(x, return_attention=True), True)
        masked = block(x, mask) if mask is not None else None
        h = x + parts["attention"](parts["norm1"](x))
        spec = h + parts["mlp"](parts["norm2"](h))
    return {"out": out, "masked": masked, "weights": weights, "spec": spec,
            "state": _state(block),
            "student_types": {"attention": isinstance(parts["attention"], ns.MultiHeadSelfAttention),
                              "mlp": isinstance(parts["mlp"], ns.FeedForwardBlock),
                              "norms": all(isinstance(parts[n], nn.LayerNorm) for n in ("norm1", "norm2"))}}


def patchify(ns: Any, images: Tensor, patch_size: int) -> dict:
    return {"out": ns.patchify(images, patch_size)}


def vit(ns: Any, kwargs: dict, images: Tensor) -> dict:
    """Logits, attention maps, gradients, whether the student's blocks ran, and the ViT's
    specification from its own parts (class token at 0, positional embedding, head on token 0)."""
    model = ns.VisionTransformer(**kwargs)
    blocks = getattr(model, "blocks", None)
    block_list = list(blocks) if isinstance(blocks, nn.Sequential) else []
    ran: list[int] = []
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: ran.append(k)) for k, b in enumerate(block_list)]
    model.train()
    logits = model(images)
    logits.float().square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    for hook in hooks:
        hook.remove()
    model.eval()
    with torch.no_grad():
        eval_logits = model(images)
        maps = model.attention_maps(images)
        spec = None
        parts = ("embedding", "class_token", "pos_embedding", "norm", "head")
        if block_list and all(hasattr(model, p) for p in parts):
            tokens = model.embedding(ns.patchify(images, kwargs["patch_size"]))  # (B, N, D)
            cls = model.class_token.expand(tokens.size(0), -1, -1)
            x = blocks(torch.cat([cls, tokens], dim=1) + model.pos_embedding)
            spec = model.head(model.norm(x[:, 0]))
    return {
        "logits": logits.detach(), "eval_logits": eval_logits, "spec": spec,
        "maps": [m for m in maps] if isinstance(maps, (list, tuple)) else maps,
        "no_grad": no_grad,
        "blocks": len(block_list),
        "student_blocks": all(isinstance(b, ns.TransformerBlock) for b in block_list) and bool(block_list),
        "blocks_ran": sorted(set(ran)),
        "embedding": _linear_info(model, "embedding"),
        "shapes": {p: list(getattr(model, p).shape) for p in ("class_token", "pos_embedding")
                   if isinstance(getattr(model, p, None), torch.Tensor)},
    }


def train_recipe(ns: Any, recipe_name: str, data_dir: str, device: str, seed: int, time_limit: float) -> dict:
    """Train the student's VisionTransformer with the *reference* training function and recipe;
    return the history and the first block's attention map of test image 0."""
    from grader.worker import report
    from reference.configs import get_recipe
    from reference.data import load_dataset
    from reference.training import resolve_device, train

    recipe = get_recipe(recipe_name)
    data = load_dataset(recipe.dataset, data_dir)
    torch.manual_seed(seed)
    model = recipe.model.build(ns.VisionTransformer)
    # Each evaluation goes to the parent at once: it shows progress, and a later crash or
    # time-out still keeps the thresholds reached before it.
    history = train(model, data, recipe.train, device=device, seed=seed, progress=False,
                    target_accuracy=recipe.target_accuracy, time_limit=time_limit,
                    on_evaluation=lambda h: report(h.to_dict()))
    image = data.normalized_test_image(0, resolve_device(device)).unsqueeze(0)  # (1, C, H, W)
    model.eval()
    with torch.no_grad():
        attention = model.attention_maps(image)[0][0].float().cpu()  # (heads, N+1, N+1)
    return {"history": history.to_dict(), "attention": attention, "image": data.test_images[0].clone()}
