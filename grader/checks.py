"""The hidden checks. They run in the grader (the parent): inputs are drawn here from a seed,
sent to the sandbox, and the raw outputs that come back are compared here with values computed
here: PyTorch's own implementations with the student's weights copied into them, or the
specification of a composite put together here from what its own sub-modules returned.

Each check is named ``component:check`` and passes or fails with a message; points come from
the rubric, not from here. A composite (the blocks, the ViT) is judged against its specification
built from the student's own sub-modules, so that one mistake costs points in one component.
Nothing the child says is a verdict: it sends outputs, weights and class names only.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from grader.integrity import ATTENTION, DYNAMIC, LIBRARY, REFERENCE, ForbiddenCall
from grader.sandbox import PROBES
from grader.submission import PACKAGE_NAME
from reference.configs import RECIPES

COMPONENTS = ("attention", "multihead", "feedforward", "residual_block", "transformer_block", "patchify", "vit",
              "training_mnist", "training_cifar10")
# The interface name a forbidden call happened in -> the component charged for it.
OWNER = {
    "scaled_dot_product_attention": "attention", "ScaledDotProductAttention": "attention",
    "MultiHeadSelfAttention": "multihead", "FeedForwardBlock": "feedforward",
    "SelfAttentionBlock": "residual_block", "TransformerBlock": "transformer_block",
    "patchify": "patchify", "VisionTransformer": "vit",
}
FILE_OWNER = {"attention.py": "attention", "blocks.py": "transformer_block", "vit.py": "vit"}
CHARGED = (ATTENTION, LIBRARY, REFERENCE, DYNAMIC)  # categories of forbidden calls that cost points
GELU_FORMS = ("none", "tanh")  # F.gelu's exact form and its tanh approximation: both are GELU
ATOL = RTOL = 1e-4  # float32 with a different but correct order of operations stays well inside


class CheckFailed(Exception):
    """A check's verdict: the message says what was wrong."""


@dataclass
class CheckResult:
    name: str  # "component:check"
    passed: bool
    message: str = ""
    skipped: bool = False  # not run (e.g. no data for training); worth no points either way

    @property
    def component(self) -> str:
        return self.name.split(":", 1)[0]


@dataclass
class Context:
    """What a check needs: a way to call probes, a seeded generator, and what is known so far."""

    call: Callable[..., Any]  # call(probe, *args) -> Outcome
    seed: int
    generator: torch.Generator = field(init=False)
    forbidden: list[ForbiddenCall] = field(default_factory=list)
    results: dict[str, CheckResult] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)  # probe values shared by several checks

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)

    def randn(self, *shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
        return torch.randn(*shape, generator=self.generator, dtype=dtype)

    def mask(self, t_q: int, t_k: int) -> Tensor:
        mask = torch.rand(t_q, t_k, generator=self.generator) > 0.4
        mask[:, 0] = True  # a fully masked row has no defined softmax
        return mask

    def run(self, probe: str, *args: Any) -> Any:
        """The probe's value, or CheckFailed with the child's error and the student's traceback."""
        outcome = self.call(f"{PROBES}:{probe}", *args)
        self.forbidden += outcome.forbidden_calls
        if not outcome.ok:
            trace = f"\n{outcome.student_traceback}" if outcome.student_traceback else ""
            raise CheckFailed(f"{outcome.error}{trace}")
        return outcome.value

    def passed(self, component: str) -> bool:
        """Whether every check of ``component`` run so far passed, and its code used no library attention."""
        own = [r for r in self.results.values() if r.component == component and not r.skipped]
        charged = any(forbidden_owner(c) == component for c in self.forbidden if c.category in CHARGED)
        return bool(own) and all(r.passed for r in own) and not charged


def compare(actual: Any, expected: Tensor, what: str, atol: float = ATOL, rtol: float = RTOL,
            same_nan: bool = False) -> None:
    """CheckFailed unless ``actual`` is a tensor of ``expected``'s shape and values. With
    ``same_nan``, NaN is accepted where ``expected`` has NaN too (a spec built from the student's
    own function inherits its NaN)."""
    if not isinstance(actual, Tensor):
        raise CheckFailed(f"{what}: expected a tensor, got {type(actual).__name__}")
    if tuple(actual.shape) != tuple(expected.shape):
        raise CheckFailed(f"{what}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}")
    actual, expected = actual.detach().double(), expected.detach().double()
    if same_nan:
        both = torch.isnan(actual) & torch.isnan(expected)
        actual, expected = actual.masked_fill(both, 0.0), expected.masked_fill(both, 0.0)
    if not torch.isfinite(actual).all():
        raise CheckFailed(f"{what}: contains NaN or infinity")
    diff = (actual - expected).abs()
    tolerance = atol + rtol * expected.abs()
    if (diff > tolerance).any():  # the element furthest outside its tolerance, not merely the largest difference
        flat = int((diff - tolerance).argmax())
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape))
        raise CheckFailed(f"{what}: at index {index} got {actual[index].item():.5g}, expected "
                          f"{expected[index].item():.5g} (difference {diff[index].item():.3g}, tolerance "
                          f"{tolerance[index].item():.3g} = {atol:g} + {rtol:g} x |expected|)")


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def expect_linear(info: Any, name: str, in_features: int, out_features: int, bias: bool) -> None:
    expect(isinstance(info, dict), f"`{name}` must be an nn.Linear, found {info}")
    got = (info["in"], info["out"], info["bias"])
    expect(got == (in_features, out_features, bias),
           f"`{name}` must be nn.Linear({in_features}, {out_features}, bias={bias}), "
           f"found in={got[0]}, out={got[1]}, bias={got[2]}")


def is_student_class(classes: Any, name: str) -> bool:
    """Whether a module described by the child (its classes, most derived first) is, or derives
    from, the submission's own class ``name``."""
    return isinstance(classes, list) and any(
        isinstance(c, list) and len(c) == 2 and str(c[0]).startswith(PACKAGE_NAME + ".") and c[1] == name
        for c in classes)


def layer_norm_affine(x: Tensor, out: Any) -> tuple[Tensor, Tensor] | None:
    """(weight, bias) when ``out`` is LayerNorm of ``x`` over the last axis with some per-feature
    affine map, whatever the module's class or parameter names; else None. The affine map is
    fitted per feature by least squares from the module's own output, then checked."""
    if not isinstance(out, Tensor) or tuple(out.shape) != tuple(x.shape) or not out.dtype.is_floating_point:
        return None
    z = F.layer_norm(x.double(), x.shape[-1:]).reshape(-1, x.shape[-1])  # (N, D)
    y = out.detach().double().reshape(-1, x.shape[-1])
    zc, yc = z - z.mean(0), y - y.mean(0)
    weight = (zc * yc).sum(0) / (zc * zc).sum(0).clamp_min(1e-12)
    bias = y.mean(0) - weight * z.mean(0)
    try:
        compare(y, z * weight + bias, "layer norm")
    except CheckFailed:
        return None
    return weight.float(), bias.float()


def compare_any(actual: Any, expected: dict[str, Tensor], what: str) -> str:
    """``compare`` against each accepted form (e.g. exact and tanh GELU); the name of the closest
    form that matches, else the failure against the first form."""
    passing, first = [], None
    for name, value in expected.items():
        try:
            compare(actual, value, what)
            passing.append(((actual.detach().double() - value.detach().double()).abs().max().item(), name))
        except CheckFailed as e:
            first = first or e
    if not passing:
        raise first  # type: ignore[misc]
    return min(passing)[1]


def _class_name(classes: Any) -> str:
    return classes[0][1] if isinstance(classes, list) and classes and isinstance(classes[0], list) else str(classes)


def _copy_to_mha(state: dict[str, Tensor], d_model: int, num_heads: int, bias: bool) -> nn.MultiheadAttention:
    mha = nn.MultiheadAttention(d_model, num_heads, bias=bias, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([state[f"{p}.weight"] for p in ("w_q", "w_k", "w_v")]))
        mha.out_proj.weight.copy_(state["w_o.weight"])
        if bias:
            mha.in_proj_bias.copy_(torch.cat([state[f"{p}.bias"] for p in ("w_q", "w_k", "w_v")]))
            mha.out_proj.bias.copy_(state["w_o.bias"])
    return mha.eval()


def _need(state: dict[str, Tensor], *keys: str) -> None:
    missing = [k for k in keys if k not in state]
    expect(not missing, f"parameters not found where the interface puts them: {', '.join(missing)}")


# --- attention -----------------------------------------------------------------------------

def attention_function_shapes(ctx: Context) -> None:
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
    right = softmax(scores / d ** 0.5)
    if not _close(weights, right):
        found = [cause for cause, wrong in causes.items() if _close(weights, wrong, same_nan=True)]
        if found:
            return found[0]
        sums = weights.double().sum(-1)
        if not _close(sums, torch.ones_like(sums)):
            return "each row of the weights must sum to 1 (a softmax over the keys, the last axis)"
        return None  # an unknown mistake: the comparison with PyTorch says where
    if isinstance(out, Tensor) and tuple(out.shape) == (*weights.shape[:-1], v.size(-1)) \
            and not _close(out, weights.double() @ v.double()):
        return "the weights are right but the output is not weights @ v"
    return None


def _close(actual: Any, expected: Tensor, same_nan: bool = False) -> bool:
    try:
        compare(actual, expected, "", same_nan=same_nan)
    except CheckFailed:
        return False
    return True


def attention_function_matches_pytorch(ctx: Context) -> None:
    q, k, v = ctx.randn(3, 2, 6, 16), ctx.randn(3, 2, 9, 16), ctx.randn(3, 2, 9, 8)
    value = ctx.run("attention_function", q, k, v)
    cause = attention_diagnosis(q, k, v, None, value["out"], value["weights"])
    expect(cause is None, f"{cause}" if cause else "")
    compare(value["out"], F.scaled_dot_product_attention(q, k, v), "output vs F.scaled_dot_product_attention")
    weights = torch.softmax(q @ k.transpose(-2, -1) / 16 ** 0.5, dim=-1)
    compare(value["weights"], weights, "attention weights (softmax over the keys of q k^T / sqrt(d_k))")


def attention_function_mask(ctx: Context) -> None:
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


def attention_single_head_interface(ctx: Context) -> None:
    d = 12
    value = ctx.run("single_head", d, ctx.randn(2, 3, d), ctx.randn(2, 4, d), ctx.randn(2, 4, d))
    for name in ("w_q", "w_k", "w_v"):
        expect_linear(value["linears"][name], name, d, d, False)


def attention_single_head_matches_pytorch(ctx: Context) -> None:
    d = 16
    q, k, v = ctx.randn(3, 5, d), ctx.randn(3, 7, d), ctx.randn(3, 7, d)
    mask = ctx.mask(5, 7)
    value = ctx.run("single_head", d, q, k, v, mask)
    state = value["state"]
    _need(state, "w_q.weight", "w_k.weight", "w_v.weight")
    pq, pk, pv = q @ state["w_q.weight"].T, k @ state["w_k.weight"].T, v @ state["w_v.weight"].T
    compare(value["out"], F.scaled_dot_product_attention(pq, pk, pv, attn_mask=mask), "output of Eq. (1) with a mask")
    compare(value["plain"], value["out"], "forward without return_attention must return the same output")
    expect(tuple(value["weights"].shape) == (3, 5, 7), f"attention weights shape {tuple(value['weights'].shape)}, expected (3, 5, 7)")


# --- multi-head ------------------------------------------------------------------------------

def multihead_interface(ctx: Context) -> None:
    for bias in (True, False):
        value = ctx.run("multihead", 16, 4, ctx.randn(1, 3, 16), None, bias)
        for name in ("w_q", "w_k", "w_v", "w_o"):
            expect_linear(value["linears"][name], name, 16, 16, bias)
    raised = ctx.run("raises_value_error", "MultiHeadSelfAttention", 10, 3)
    expect(raised["raised"] == "ValueError",
           f"MultiHeadSelfAttention(10, 3) must raise ValueError (10 is not divisible by 3); "
           f"{'it raised ' + raised['raised'] if raised['raised'] else 'it raised nothing'}")


def _multihead_parity(ctx: Context, num_heads: int, d_model: int) -> None:
    x = ctx.randn(3, 6, d_model)
    mask = ctx.mask(6, 6)
    for m in (None, mask):
        value = ctx.run("multihead", d_model, num_heads, x, m)
        _need(value["state"], *(f"{p}.{w}" for p in ("w_q", "w_k", "w_v", "w_o") for w in ("weight", "bias")))
        mha = _copy_to_mha(value["state"], d_model, num_heads, True)
        with torch.no_grad():
            out, weights = mha(x, x, x, attn_mask=None if m is None else ~m, average_attn_weights=False)
        how = "with a mask" if m is not None else "without a mask"
        try:
            compare(value["out"], out, f"output vs nn.MultiheadAttention ({num_heads} heads, {how})")
            compare(value["weights"], weights, f"per-head weights (B, heads, T, T) vs nn.MultiheadAttention ({num_heads} heads, {how})")
        except CheckFailed:
            # A mistake inherited from the student's own attention function is charged to attention only.
            if ctx.passed("attention"):
                raise
            spec = _multihead_from_own_function(ctx, value["state"], num_heads, x, m)
            compare(value["out"], spec, f"output vs multi-head attention built from your own attention function ({num_heads} heads, {how})",
                    same_nan=True)


def _multihead_from_own_function(ctx: Context, s: dict[str, Tensor], h: int, x: Tensor, mask: Tensor | None) -> Tensor:
    """Multi-head attention with the module's weights and the student's own attention function:
    the projections, the head split and W^O here; only the attention function in the child."""
    B, T, D = x.shape

    def split(p: str) -> Tensor:
        return F.linear(x, s[f"{p}.weight"], s[f"{p}.bias"]).reshape(B, T, h, D // h).transpose(1, 2)  # (B, h, T, D/h)

    heads = ctx.run("attention_function", split("w_q"), split("w_k"), split("w_v"), mask)["out"]
    expect(isinstance(heads, Tensor) and tuple(heads.shape) == (B, h, T, D // h),
           "your attention function gave no output of the right shape for the heads")
    return F.linear(heads.transpose(1, 2).reshape(B, T, D), s["w_o.weight"], s["w_o.bias"])


def multihead_one_head(ctx: Context) -> None:
    _multihead_parity(ctx, 1, 12)


def multihead_many_heads(ctx: Context) -> None:
    _multihead_parity(ctx, 2, 16)
    _multihead_parity(ctx, 4, 16)


def _dropout(ctx: Context, name: str, args: list, x: Tensor) -> None:
    value = ctx.run("dropout_modes", name, args, x)
    compare(value["eval"][0], value["eval"][1], "eval mode must be deterministic (dropout off)")
    expect(not torch.allclose(value["train"][0], value["train"][1]),
           f"with dropout={args[-1]} two forwards in train mode gave the same output: dropout is not applied")


def multihead_dropout(ctx: Context) -> None:
    _dropout(ctx, "MultiHeadSelfAttention", [16, 4, 0.5], ctx.randn(2, 9, 16))


# --- feed-forward, residual block, transformer block -----------------------------------------

def feedforward_interface(ctx: Context) -> None:
    value = ctx.run("feedforward", 8, 24, ctx.randn(2, 3, 8))
    expect_linear(value["linears"]["fc1"], "fc1", 8, 24, True)
    expect_linear(value["linears"]["fc2"], "fc2", 24, 8, True)


def feedforward_matches_spec(ctx: Context) -> None:
    x = ctx.randn(2, 5, 8)
    value = ctx.run("feedforward", 8, 24, x)
    s = value["state"]
    _need(s, "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")
    hidden = F.linear(x, s["fc1.weight"], s["fc1.bias"])
    forms = {form: F.linear(F.gelu(hidden, approximate=form), s["fc2.weight"], s["fc2.bias"]) for form in GELU_FORMS}
    ctx.cache["gelu"] = compare_any(value["out"], forms, "fc2(gelu(fc1(x)))")  # the form the ViT check uses too


def residual_block_uses_its_parts(ctx: Context) -> None:
    classes = ctx.run("residual_block", 8, 16, ctx.randn(2, 4, 8))["classes"]
    expect(is_student_class(classes["attention"], "ScaledDotProductAttention"),
           f"`attention` must be your ScaledDotProductAttention, found {_class_name(classes['attention'])}")
    expect(is_student_class(classes["mlp"], "FeedForwardBlock"),
           f"`mlp` must be your FeedForwardBlock, found {_class_name(classes['mlp'])}")


def residual_block_update(ctx: Context) -> None:
    x = ctx.randn(3, 5, 8)
    value = ctx.run("residual_block", 8, 16, x)
    compare(value["out"], x + value["attended"] + value["mlp_out"],
            "x <- x + attention(x, x, x); x <- x + mlp(x), with the block's own sub-modules")


def transformer_block_pre_norm(ctx: Context) -> None:
    x = ctx.randn(2, 6, 16)
    value = ctx.run("transformer_block", 16, 4, 32, x)
    classes = value["classes"]
    expect(is_student_class(classes["attention"], "MultiHeadSelfAttention") and is_student_class(classes["mlp"], "FeedForwardBlock"),
           "attention must be your MultiHeadSelfAttention and mlp your FeedForwardBlock")
    normed = value.get("normed") or {}
    for name in ("norm1", "norm2"):
        expect(layer_norm_affine(x, normed.get(name)) is not None,
               f"{name} must compute LayerNorm over the last axis (nn.LayerNorm(d_model), or your own equal to it)")
    compare(value["out"], x + value["attended"] + value["mlp_out"],
            "x <- x + attention(norm1(x)); x <- x + mlp(norm2(x)), with the block's own sub-modules")


def transformer_block_matches_pytorch(ctx: Context) -> None:
    expect(ctx.passed("transformer_block"), "not compared with PyTorch: the block does not meet its specification (above)")
    if not all(ctx.passed(c) for c in ("attention", "multihead", "feedforward")):
        return  # judged on its specification alone: the attention's mistake is charged where it lies
    x, mask = ctx.randn(3, 7, 16), ctx.mask(7, 7)
    value = ctx.run("transformer_block", 16, 4, 48, x, mask)
    s = value["state"]
    layer = nn.TransformerEncoderLayer(16, 4, 48, 0.0, activation="gelu", batch_first=True, norm_first=True)
    _need(s, "mlp.fc1.weight", "mlp.fc2.weight", "attention.w_o.weight")
    norms = [layer_norm_affine(x, (value.get("normed") or {}).get(n)) for n in ("norm1", "norm2")]
    expect(all(n is not None for n in norms), "norm1/norm2 must compute LayerNorm over the last axis")
    with torch.no_grad():
        attn = {k[len("attention."):]: v for k, v in s.items() if k.startswith("attention.")}
        layer.self_attn.load_state_dict(_copy_to_mha(attn, 16, 4, True).state_dict())
        for (weight, bias), theirs in zip(norms, (layer.norm1, layer.norm2)):  # fitted from what the norms compute
            theirs.weight.copy_(weight)
            theirs.bias.copy_(bias)
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


def transformer_block_dropout(ctx: Context) -> None:
    _dropout(ctx, "TransformerBlock", [16, 4, 32, 0.3], ctx.randn(2, 5, 16))


# --- patchify and the ViT ----------------------------------------------------------------------

def reference_patches(images: Tensor, p: int) -> Tensor:
    """The documented order: grid row by row; each patch flattened in (C, P, P) order."""
    B, C, H, W = images.shape
    grid = images.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)
    return grid.reshape(B, (H // p) * (W // p), C * p * p)


def patchify_one_channel(ctx: Context) -> None:
    images = ctx.randn(2, 1, 28, 28)
    compare(ctx.run("patchify", images, 7)["out"], reference_patches(images, 7), "patchify((2, 1, 28, 28), 7)")
    compare(ctx.run("patchify", images[:, 0], 4)["out"], reference_patches(images, 4), "patchify((2, 28, 28), 4), read as C = 1")


def patchify_three_channels(ctx: Context) -> None:
    for shape, p in (((2, 3, 8, 8), 4), ((1, 3, 6, 12), 3), ((2, 3, 32, 32), 4)):
        images = ctx.randn(*shape)
        compare(ctx.run("patchify", images, p)["out"], reference_patches(images, p), f"patchify({shape}, {p}): (C, P, P) order per patch")


def patchify_indivisible(ctx: Context) -> None:
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
        ctx.cache[key] = (ctx.run("vit", kwargs, images), images)
    return ctx.cache[key][0]


def _vit_spec(value: dict) -> Tensor:
    """head(norm(blocks([class; embedding(patches)] + pos)[:, 0])), put together here: the
    embedded patches and the blocks' output come from the child, the rest from the weights."""
    parts, s = value["parts"], value["state"]
    needed = ("class_token", "pos_embedding", "head.weight", "head.bias")
    expect(bool(parts) and all(k in s for k in needed) and "normed" in parts,
           "the ViT lacks one of embedding, class_token, pos_embedding, blocks, norm, head")
    affine = layer_norm_affine(parts["blocks_out"], parts["normed"])
    expect(affine is not None, "norm must compute LayerNorm over the last axis (nn.LayerNorm(d_model), or your own equal to it)")
    tokens = parts["tokens"]  # (B, N, D)
    blocks_in = torch.cat([s["class_token"].expand(tokens.size(0), -1, -1), tokens], dim=1) + s["pos_embedding"]
    compare(parts["blocks_in"], blocks_in, "the blocks' input [class; embedding(patches)] + pos")
    first = parts["blocks_out"][:, 0]  # (B, D): the class token after the blocks
    weight, bias = affine  # type: ignore[misc]
    return F.linear(F.layer_norm(first, first.shape[-1:], weight, bias), s["head.weight"], s["head.bias"])


def _reference_logits(kwargs: dict, state: dict[str, Tensor], images: Tensor, gelu: str = "none") -> Tensor | None:
    """The reference ViT with the student's weights and GELU form, when the weights load into it
    exactly; else None."""
    from reference.vit import VisionTransformer

    model = VisionTransformer(**kwargs)
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError):
        return None
    for module in model.modules():
        if isinstance(module, nn.GELU):
            module.approximate = gelu
    with torch.no_grad():
        return model.eval()(images)


def vit_interface(ctx: Context) -> None:
    value = _vit(ctx)
    expect_linear(value["embedding"], "embedding", 3 * 4 * 4, 16, True)
    expect(value["shapes"].get("class_token") == [1, 1, 16], f"class_token must be (1, 1, d_model), found {value['shapes'].get('class_token')}")
    expect(value["shapes"].get("pos_embedding") == [1, 5, 16], f"pos_embedding must be (1, N+1, d_model) = (1, 5, 16), found {value['shapes'].get('pos_embedding')}")
    students = all(is_student_class(c, "TransformerBlock") for c in value["block_classes"])
    expect(value["blocks"] == 2 and students, "blocks must be an nn.Sequential of num_layers of your TransformerBlock")
    expect(value["blocks_ran"] == [0, 1], "forward must run every one of your TransformerBlocks")


def vit_forward(ctx: Context) -> None:
    """On the small ViT and on both recipes' models at their real image sizes (28x28x1, 32x32x3),
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
        compare(value["eval_logits"], _vit_spec(value), f"head(norm(blocks([class; embedding(patches)] + pos))[:, 0]), with the ViT's own parts, {size}")
        expected = _reference_logits(kwargs, value["state"], images, ctx.cache.get("gelu", "none")) if parts_pass else None
        if expected is not None:
            compare(value["eval_logits"], expected, f"logits vs the specified ViT with your weights, {size}")


def vit_gradients(ctx: Context) -> None:
    missing = _vit(ctx)["no_grad"]
    if not all(ctx.passed(c) for c in BLOCK_PARTS):
        missing = [n for n in missing if not n.startswith("blocks.")]  # the blocks' own mistakes are charged to them
    expect(not missing, f"no gradient reaches: {', '.join(missing[:8])}")


def vit_attention_maps(ctx: Context) -> None:
    maps = _vit(ctx)["maps"]
    expect(isinstance(maps, (list, tuple)) and len(maps) == 2, "attention_maps must return a list with one tensor per block")
    for i, m in enumerate(maps):
        expect(isinstance(m, Tensor) and tuple(m.shape) == (3, 2, 5, 5),
               f"attention map {i}: shape {tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__}, expected (B, heads, N+1, N+1) = (3, 2, 5, 5)")


CHECKS: dict[str, Callable[[Context], None]] = {
    "attention:function_shapes": attention_function_shapes,
    "attention:function_matches_pytorch": attention_function_matches_pytorch,
    "attention:function_mask": attention_function_mask,
    "attention:single_head_interface": attention_single_head_interface,
    "attention:single_head_matches_pytorch": attention_single_head_matches_pytorch,
    "multihead:interface": multihead_interface,
    "multihead:one_head": multihead_one_head,
    "multihead:many_heads": multihead_many_heads,
    "multihead:dropout": multihead_dropout,
    "feedforward:interface": feedforward_interface,
    "feedforward:matches_spec": feedforward_matches_spec,
    "residual_block:uses_its_parts": residual_block_uses_its_parts,
    "residual_block:residual_update": residual_block_update,
    "transformer_block:pre_norm_update": transformer_block_pre_norm,
    "transformer_block:matches_pytorch": transformer_block_matches_pytorch,
    "transformer_block:dropout": transformer_block_dropout,
    "patchify:one_channel": patchify_one_channel,
    "patchify:three_channels": patchify_three_channels,
    "patchify:indivisible_raises": patchify_indivisible,
    "vit:interface": vit_interface,
    "vit:forward": vit_forward,
    "vit:gradients": vit_gradients,
    "vit:attention_maps": vit_attention_maps,
}


def run_checks(ctx: Context, names: list[str] | None = None) -> list[CheckResult]:
    """Run the checks (all, or ``names``) in order; then charge forbidden calls to their components."""
    for name in names or list(CHECKS):
        try:
            CHECKS[name](ctx)
            ctx.results[name] = CheckResult(name, True)
        except CheckFailed as e:
            ctx.results[name] = CheckResult(name, False, str(e))
        except Exception as e:  # noqa: BLE001 - output of an unexpected kind: the student's, never a grader crash
            ctx.results[name] = CheckResult(name, False, f"unexpected output ({type(e).__name__}: {e}); "
                                                         "see the docstrings for what each function returns")
    charge_forbidden(ctx)
    return list(ctx.results.values())


def forbidden_owner(call: ForbiddenCall) -> str:
    return OWNER.get(call.component_hint) or FILE_OWNER.get(call.student_file, "vit")


def charge_forbidden(ctx: Context) -> None:
    """A check whose component used library attention (or timm, or dynamic code) fails; a
    submission that imports the reference or the grader fails in every component."""
    charged: dict[str, list[ForbiddenCall]] = {}
    for call in ctx.forbidden:
        if call.category == REFERENCE:
            for component in COMPONENTS:
                charged.setdefault(component, []).append(call)
        elif call.category in CHARGED:
            charged.setdefault(forbidden_owner(call), []).append(call)
    for component, calls in charged.items():
        seen = sorted({f"{c.api} at {c.student_file}:{c.line} (in {c.function})" for c in calls})
        if any(c.category == REFERENCE for c in calls):
            why = "a submission that uses the reference solution or the grader earns no points"
        elif all(c.category == DYNAMIC for c in calls):
            why = "code the grader cannot see through (exec, eval, interpreter internals) is not accepted in the homework"
        else:
            why = "write the attention yourself, library attention earns no points"
        message = "uses " + "; ".join(seen[:3]) + ": " + why
        for name, result in ctx.results.items():
            if result.component == component and not result.skipped:
                ctx.results[name] = CheckResult(name, False, message)


def forbidden_in_model(ctx: Context) -> list[ForbiddenCall]:
    """Forbidden calls in components the ViT runs: the trained model is then not the student's transformer."""
    model_parts = {"attention", "multihead", "feedforward", "transformer_block", "patchify", "vit"}
    return [c for c in ctx.forbidden if c.category in CHARGED and forbidden_owner(c) in model_parts]
