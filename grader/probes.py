"""Probes: the grader's code that runs *inside* the sandbox child, next to the student's code.

Each probe builds the student's objects, calls them on inputs the parent sent and returns raw
results only: output tensors, ``state_dict``s and a description of the module structure (class
names, never verdicts). Every expected value is computed by the parent from those raw results;
a probe never judges, so a submission that tampers with a probe can only corrupt its own
answers, never a verdict. This file runs as ``vitkit_child.probes`` in the jail and may import
only torch and its siblings in the runner package.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .worker import ask, report


# The parameters each interface names, as paths of attributes.
ATTENTION_PARAMS = tuple(f"{p}.{w}" for p in ("w_q", "w_k", "w_v", "w_o") for w in ("weight", "bias"))
MLP_PARAMS = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")
BLOCK_PARAMS = (*(f"attention.{n}" for n in ATTENTION_PARAMS), *(f"mlp.{n}" for n in MLP_PARAMS))
VIT_PARAMS = ("embedding.weight", "embedding.bias", "class_token", "pos_embedding", "head.weight", "head.bias")


def _state(module: nn.Module, names: tuple[str, ...] = ()) -> dict[str, Tensor]:
    """The module's ``state_dict``, and under each of ``names`` (``"w_q.weight"``) the tensor the
    module's attributes lead to: a projection held in an nn.ModuleList behind a property is found
    where the interface names it, whatever its key in the state_dict."""
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    for name in names:
        value = _attribute(module, name)
        if isinstance(value, Tensor):
            state[name] = value.detach().clone()
    return state


def _attribute(obj: object, path: str) -> object:
    """``obj.a.b``, or ``obj.blocks[2]`` for a digit; None where the path leads nowhere."""
    for part in path.split("."):
        if part.isdigit():
            obj = obj[int(part)] if isinstance(obj, (nn.Sequential, nn.ModuleList)) and int(part) < len(obj) else None
        else:
            obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _classes(obj: object) -> list[list[str]] | str:
    """The class and its bases as (module, qualified name) pairs; "missing" for None."""
    if obj is None:
        return "missing"
    return [[str(getattr(c, "__module__", "")), str(getattr(c, "__qualname__", ""))] for c in type(obj).__mro__]


def _linear_info(module: nn.Module, name: str) -> dict[str, Any] | str:
    """What attribute ``name`` is: a dict for an nn.Linear, else the type name (or "missing")."""
    layer = getattr(module, name, None)
    if layer is None:
        return "missing"
    if not isinstance(layer, nn.Linear):
        return type(layer).__name__
    return {"in": layer.in_features, "out": layer.out_features, "bias": layer.bias is not None}


def _layer_norm_eps(module: object) -> float | None:
    """The eps of an nn.LayerNorm, as the module holds it; None for any other module (the parent
    then fits it from what the module computes)."""
    eps = getattr(module, "eps", None) if isinstance(module, nn.LayerNorm) else None
    return float(eps) if isinstance(eps, (int, float)) and not isinstance(eps, bool) else None


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
    return {"out": out, "weights": weights, "plain": plain, "state": _state(module, ("w_q.weight", "w_k.weight", "w_v.weight")),
            "linears": {n: _linear_info(module, n) for n in ("w_q", "w_k", "w_v")}}


def multihead(ns: Any, d_model: int, num_heads: int, x: Tensor, mask: Tensor | None = None, bias: bool = True) -> dict:
    module = ns.MultiHeadSelfAttention(d_model, num_heads, 0.0, bias).eval()
    with torch.no_grad():
        out, weights = _split(module(x, mask, return_attention=True), True)
    return {"out": out, "weights": weights, "state": _state(module, ATTENTION_PARAMS),
            "linears": {n: _linear_info(module, n) for n in ("w_q", "w_k", "w_v", "w_o")}}


def raises_value_error(ns: Any, name: str, *args: Any) -> dict:
    """What ``ns.<name>(*args)`` raised, if anything (the parent decides what that means)."""
    try:
        getattr(ns, name)(*args)
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
    return {"out": out, "state": _state(module, MLP_PARAMS),
            "linears": {n: _linear_info(module, n) for n in ("fc1", "fc2")}}


def residual_block(ns: Any, d_model: int, d_hidden: int, x: Tensor) -> dict:
    """The block's output, and what its own sub-modules give on the way: ``attended`` =
    attention(x, x, x) and ``mlp_out`` = mlp(x + attended). The parent puts them together."""
    block = ns.SelfAttentionBlock(d_model, d_hidden).eval()
    attention, mlp = getattr(block, "attention", None), getattr(block, "mlp", None)
    if attention is None or mlp is None:
        raise AttributeError("SelfAttentionBlock needs the attributes `attention` and `mlp`")
    with torch.no_grad():
        out = block(x)
        attended = attention(x, x, x)
        mlp_out = mlp(x + attended)
        other = {"mlp(x)": mlp(x), "mlp(attended)": mlp(attended)}  # for naming a wrong update
    return {"out": out, "attended": attended, "mlp_out": mlp_out, "other": other,
            "classes": {"attention": _classes(attention), "mlp": _classes(mlp)}}


def transformer_block(ns: Any, d_model: int, num_heads: int, d_hidden: int, x: Tensor, mask: Tensor | None = None) -> dict:
    """Output, per-head weights, the weights, and what the block's own sub-modules give on the
    way (``attended`` = attention(norm1(x)), ``mlp_out`` = mlp(norm2(x + attended)))."""
    block = ns.TransformerBlock(d_model, num_heads, d_hidden, 0.0).eval()
    parts = {n: getattr(block, n, None) for n in ("norm1", "attention", "norm2", "mlp")}
    missing = [n for n, m in parts.items() if m is None]
    if missing:
        raise AttributeError(f"TransformerBlock needs the attributes {', '.join(missing)}")
    with torch.no_grad():
        out, weights = _split(block(x, return_attention=True), True)
        masked = block(x, mask) if mask is not None else None
        attended = parts["attention"](parts["norm1"](x))
        mlp_out = parts["mlp"](parts["norm2"](x + attended))
        normed = {n: parts[n](x) for n in ("norm1", "norm2")}  # judged by what they compute, not their class
        eps = {n: _layer_norm_eps(parts[n]) for n in ("norm1", "norm2")}
        after = parts["norm1"](x + parts["attention"](x))  # post-norm, for naming a wrong update
        branch_normed = x + parts["norm1"](parts["attention"](x))  # x + norm(f(x)), for naming a wrong update
        other = {"post_norm": parts["norm2"](after + parts["mlp"](after)), "mlp(norm2(x))": parts["mlp"](normed["norm2"]),
                 "mlp(norm2(attended))": parts["mlp"](parts["norm2"](attended)),
                 "norm_on_branch": branch_normed + parts["norm2"](parts["mlp"](branch_normed))}
    return {"out": out, "masked": masked, "weights": weights, "attended": attended, "mlp_out": mlp_out,
            "normed": normed, "eps": eps, "other": other, "state": _state(block, BLOCK_PARAMS), "classes": {n: _classes(m) for n, m in parts.items()}}


def patchify(ns: Any, images: Tensor, patch_size: int) -> dict:
    return {"out": ns.patchify(images, patch_size)}


def vit(ns: Any, kwargs: dict, images: Tensor, norm_input: Tensor | None = None) -> dict:
    """Logits (train and eval mode), attention maps, which parameters got a gradient, which blocks
    ran, the weights, and the parts' outputs: ``tokens`` = embedding(patchify(images)) and
    ``blocks_out`` = blocks(``blocks_in``), where ``blocks_in`` = [class; tokens] + pos; the blocks'
    output on the usual wrong inputs (``variants``: [tokens; class] + pos, [class; tokens]); and what
    each norm (``blocks.<i>.norm1``, ``blocks.<i>.norm2``, ``norm``) gives on ``norm_input``, with
    its eps when it is an nn.LayerNorm."""
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
        parts, parts_error, variants = {}, "", {}
        if block_list and all(hasattr(model, p) for p in ("embedding", "class_token", "pos_embedding")):
            try:  # the interface's parts, called as the interface describes them
                tokens = model.embedding(ns.patchify(images, kwargs["patch_size"]))  # (B, N, D)
                blocks_in = torch.cat([model.class_token.expand(tokens.size(0), -1, -1), tokens], dim=1) + model.pos_embedding
                parts = {"tokens": tokens, "blocks_in": blocks_in, "blocks_out": blocks(blocks_in)}
                if isinstance(getattr(model, "norm", None), nn.Module):
                    parts["normed"] = model.norm(parts["blocks_out"])  # judged by what it computes
            except Exception as e:  # noqa: BLE001 - reported to the parent, which decides
                parts, parts_error = {}, f"{type(e).__name__}: {str(e)[:200]}"
            try:  # the blocks on the usual wrong inputs, for naming a wrong forward (never a verdict)
                cls = model.class_token.expand(tokens.size(0), -1, -1)  # (B, 1, D)
                variants = {"class_last": blocks(torch.cat([tokens, cls], dim=1) + model.pos_embedding),
                            "no_pos": blocks(torch.cat([cls, tokens], dim=1))}  # (B, N+1, D) each
            except Exception:  # noqa: BLE001 - a forward that cannot be named is compared as it is
                variants = {}
        norms = {f"blocks.{i}.{n}": getattr(b, n, None) for i, b in enumerate(block_list) for n in ("norm1", "norm2")}
        norms["norm"] = getattr(model, "norm", None)
        normed = {path: {"out": m(norm_input), "eps": _layer_norm_eps(m)} for path, m in norms.items()
                  if isinstance(m, nn.Module) and norm_input is not None}
    return {
        "logits": logits.detach(), "eval_logits": eval_logits, "parts": parts, "variants": variants, "norms": normed,
        "maps": [m for m in maps] if isinstance(maps, (list, tuple)) else maps,
        "no_grad": no_grad, "parts_error": parts_error,
        "state": _state(model, (*VIT_PARAMS, *(f"blocks.{i}.{n}" for i in range(len(block_list)) for n in BLOCK_PARAMS))),
        "blocks": len(block_list), "block_classes": [_classes(b) for b in block_list],
        "blocks_ran": sorted(set(ran)),
        "embedding": _linear_info(model, "embedding"),
        "shapes": {p: list(getattr(model, p).shape) for p in ("class_token", "pos_embedding")
                   if isinstance(getattr(model, p, None), torch.Tensor)},
    }


# --- training: weights out; the grader measures them ------------------------------------------


def train(ns: Any, model_kwargs: dict, train_kwargs: dict, data: dict, device: str, seed: int,
          time_limit: float) -> dict:
    """Train the student's VisionTransformer with the kit's training function on the training
    split only (this process never sees the test split), from the reference's class token and
    positional embedding (``_start_like_the_reference``). Before the first step and at each
    evaluation point it sends the weights to the grader, which measures them elsewhere and answers
    only "continue" or "stop" (this process never learns an accuracy). Returns the final weights
    and the run's own history (an account that decides nothing; its accuracies are placeholders,
    1.0 where the grader said stop, which the grader replaces with its own measurements)."""
    from .data import ImageDataset
    from .training import TrainConfig
    from .training import train as train_model

    empty = torch.zeros((0, *data["train_images"].shape[1:]), dtype=torch.uint8)
    dataset = ImageDataset(data["name"], data["train_images"], data["train_labels"], empty,
                           torch.zeros(0, dtype=torch.long), tuple(data["classes"]), tuple(data["mean"]),
                           tuple(data["std"]))
    torch.manual_seed(seed)
    model = ns.VisionTransformer(**model_kwargs)
    _start_like_the_reference(model, model_kwargs["d_model"], seed)

    def stop_now(m: nn.Module, initial: bool = False) -> bool:
        answer = ask({"weights": _state(m), "initial": initial})
        return not isinstance(answer, dict) or answer.get("stop") is not False

    if stop_now(model, initial=True):  # the untrained model, measured before the first step
        return {"history": None, "weights": {k: v.cpu() for k, v in _state(model).items()}}
    history = train_model(model, dataset, TrainConfig(**train_kwargs), device=device, seed=seed, progress=False,
                          target_accuracy=1.0, time_limit=time_limit,
                          on_evaluation=lambda h: report(h.to_dict()),
                          evaluator=lambda m: 1.0 if stop_now(m) else 0.0)  # stops where the grader says
    return {"history": history.to_dict(), "weights": {k: v.cpu() for k, v in _state(model).items()}}


def _start_like_the_reference(model: nn.Module, d_model: int, seed: int) -> None:
    """Set the class token to zeros and the positional embedding to N(0, 0.02^2), as
    reference/vit.py starts them, where the model has them under the interface's names and
    shapes. The exercise leaves their initial values open, and they decide too much: from N(0, 1)
    (as some tutorials write) the cifar10-cpu model learns 6 points slower, so the score would
    measure that choice rather than the student's model."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, std, tokens in (("class_token", 0.0, 1), ("pos_embedding", 0.02, None)):
            value = getattr(model, name, None)
            if (isinstance(value, Tensor) and value.dim() == 3 and value.shape[0] == 1 and value.shape[2] == d_model
                    and tokens in (None, value.shape[1]) and value.is_floating_point()):
                value.copy_(torch.randn(value.shape, generator=generator) * std)


def _model(ns: Any, model_kwargs: dict, weights: dict, device: str) -> nn.Module:
    model = ns.VisionTransformer(**model_kwargs)
    model.load_state_dict(weights, strict=True)
    return model.to(device).eval()


def _normalized(images: Tensor, mean: list[float], std: list[float], device: str) -> Tensor:
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    return (images.to(device).float() / 255 - m) / s


def checkpoint(ns: Any, configurations: list[dict], path: str) -> dict:
    """The weights in the submitted file ``path``, loaded as data only (``weights_only``), and the
    names and shapes of the parameters the student's own model has in each of the recipes'
    ``configurations``: the grader compares them."""
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    expected = [{k: list(v.shape) for k, v in ns.VisionTransformer(**kwargs).state_dict().items()}
                for kwargs in configurations]
    if isinstance(loaded, dict) and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in loaded.items()):
        return {"state": {k: v.detach().contiguous() for k, v in loaded.items()}, "expected": expected}
    keys = sorted(str(k) for k in loaded)[:8] if isinstance(loaded, dict) else []
    return {"state": None, "found": type(loaded).__name__, "keys": keys, "expected": expected}


def logits(ns: Any, model_kwargs: dict, weights: dict, images: Tensor, mean: list[float], std: list[float],
           device: str, batch_size: int = 1000) -> Tensor:
    """The student's model with ``weights``, on unlabelled uint8 ``images`` (N, C, H, W): logits (N, classes)."""
    model = _model(ns, model_kwargs, weights, device)
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            out.append(model(_normalized(images[i:i + batch_size], mean, std, device)).float().cpu())
    return torch.cat(out)


def attention_map(ns: Any, model_kwargs: dict, weights: dict, image: Tensor, mean: list[float], std: list[float],
                  device: str) -> Tensor:
    """The first block's attention of the model with ``weights`` for one uint8 image (C, H, W)."""
    model = _model(ns, model_kwargs, weights, device)
    with torch.no_grad():
        return model.attention_maps(_normalized(image[None], mean, std, device))[0][0].float().cpu()
