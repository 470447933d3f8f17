"""Topic 5: the sizes against torch layers and a count by hand, and the claims about FFN, LN,
patch embedding, class token and sinusoids demonstrated."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reference.configs import RECIPES
from reference.vit import VisionTransformer
from theory.topics import vit

V = vit.values()
DTYPE = torch.float64
count = vit.count


def test_ffn_count_matches_torch_and_is_about_twice_attention():
    d, d_ff = V["d_model"], V["d_ff"]
    ffn = nn.Sequential(nn.Linear(d, d_ff), nn.ReLU(), nn.Linear(d_ff, d))
    assert count(ffn) == V["ffn_params"] and sum(isinstance(m, nn.Linear) for m in ffn) == V["ffn_layers"]
    assert round(count(ffn) / count(nn.MultiheadAttention(d, num_heads=8))) == 2  # "about twice"


def test_ffn_shares_match_a_count_by_hand():
    d, d_ff, layers = V["d_model"], V["d_ff"], vit.LAYERS
    attention, ffn, norm = 4 * (d * d + d), 2 * d * d_ff + d_ff + d, 2 * d  # biases included
    encoder, decoder = attention + ffn + 2 * norm, 2 * attention + ffn + 3 * norm
    embedding = V["vocab"] * d  # one table: both inputs and the output layer
    model = layers * (encoder + decoder) + 2 * norm + embedding  # and a final norm after each stack
    assert V["ffn_share_encoder"] == ffn / encoder and V["ffn_share_decoder"] == ffn / decoder
    assert V["ffn_share_model"] == 2 * layers * ffn / model < 0.5  # "not the majority"
    assert 2 * layers * ffn > max(3 * layers * attention, embedding)  # "the largest single part"


def test_pre_ln_leaves_the_residual_stream_unnormalised():
    torch.manual_seed(16)
    x = 10 * torch.randn(2, 5, 16)  # (B, T, D), far from unit scale
    with torch.no_grad():
        post, pre = (nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True, norm_first=first).eval()(x)
                     for first in (False, True))
    assert torch.allclose(post.std(-1, unbiased=False), torch.ones(2, 5), atol=1e-3)  # post-LN: the stream itself
    assert bool((pre.std(-1) > 5).all())  # pre-LN: the stream keeps its scale; only sub-layer inputs are normalised


def test_ffn_is_positionwise_and_two_1x1_convolutions():
    g = torch.Generator().manual_seed(12)
    d = 8
    d_ff = V["ffn_ratio"] * d
    ffn = nn.Sequential(nn.Linear(d, d_ff), nn.GELU(), nn.Linear(d_ff, d)).to(DTYPE)
    x = torch.randn(2, 5, d, generator=g, dtype=DTYPE)  # (B, T, D)
    with torch.no_grad():
        one_by_one = torch.stack([ffn(x[:, t]) for t in range(5)], dim=1)
        conv = F.conv1d(F.gelu(F.conv1d(x.transpose(1, 2), ffn[0].weight[..., None], ffn[0].bias)),
                        ffn[2].weight[..., None], ffn[2].bias).transpose(1, 2)  # kernel size 1
        assert torch.allclose(ffn(x), one_by_one) and torch.allclose(ffn(x), conv)


def test_layer_norm_is_the_formula_per_token():
    g = torch.Generator().manual_seed(13)
    x = torch.randn(2, 5, 16, generator=g, dtype=DTYPE)  # (B, T, D)
    ln = nn.LayerNorm(16).to(DTYPE)
    with torch.no_grad():
        ln.weight.copy_(torch.randn(16, generator=g, dtype=DTYPE))
        ln.bias.copy_(torch.randn(16, generator=g, dtype=DTYPE))
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)  # biased: divide by d
        assert torch.allclose(ln(x), ln.weight * (x - mean) / torch.sqrt(var + ln.eps) + ln.bias)
        y = x.clone()
        y[0, 1] += 10.0  # another token
        y[1] *= 3.0  # another sample
        assert torch.allclose(ln(y)[0, 0], ln(x)[0, 0]) and torch.allclose(ln(y)[0, 2:], ln(x)[0, 2:])


def test_patch_embedding_is_a_strided_convolution_with_the_vit_b16_sizes():
    g = torch.Generator().manual_seed(14)
    C, P, D = 3, 4, 10
    img = torch.randn(2, C, 12, 12, generator=g, dtype=DTYPE)  # (B, C, H, W)
    linear = nn.Linear(C * P * P, D).to(DTYPE)
    conv = nn.Conv2d(C, D, kernel_size=P, stride=P).to(DTYPE)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.view(D, C, P, P))  # linear.weight is E^T: its row j, E's column j
        E = linear.weight.T  # (C*P*P, D): tokens = patches @ E
        assert torch.equal(conv.weight[3], E[:, 3].reshape(C, P, P))  # filter of channel 3 = column 3 of E
        conv.bias.copy_(linear.bias)
        tokens = linear(F.unfold(img, kernel_size=P, stride=P).transpose(1, 2))  # (B, N, D)
        assert torch.allclose(tokens, conv(img).flatten(2).transpose(1, 2))
        b16 = nn.Conv2d(V["channels"], V["width"], kernel_size=V["patch"], stride=V["patch"])
        grid = b16(torch.zeros(1, V["channels"], V["image"], V["image"])).shape[2:]
    assert list(grid) == [V["grid"]] * 2 and grid.numel() == V["num_patches"] == V["num_tokens"] - 1
    model = VisionTransformer(V["image"], V["patch"], V["channels"], 1000, V["width"], 0, 12, 1)
    assert count(b16) == count(model.embedding) == V["patch_embed_params"]
    assert model.pos_embedding.numel() == V["pos_embed_params"]


def test_homework_sizes_match_a_count_by_hand():
    for key, name in (("mnist", "mnist"), ("cifar", "cifar10")):
        c, got = RECIPES[name].model, V[key]
        D, H, K, P = c.d_model, c.d_hidden, c.num_classes, c.patch_size
        n, patch_len = (c.image_size // P) ** 2, P * P * c.in_channels
        block = 2 * 2 * D + 4 * (D * D + D) + (D * H + H) + (H * D + D)
        total = patch_len * D + D + D + (n + 1) * D + c.num_layers * block + 2 * D + D * K + K
        assert (got["tokens"], got["patch_len"], got["seq"], got["ln_vectors"]) == (n, patch_len, n + 1, 2)
        # both counts with a class token: patches + 1 against pixels + 1
        assert (got["entries"], got["pixel_entries"]) == ((n + 1) ** 2, (c.image_size**2 + 1) ** 2)
        assert (got["embed_params"], got["block_params"], got["params"]) == (patch_len * D + D, block, total)
    assert V["cifar"]["d_model"] == 2 * V["mnist"]["d_model"] and V["block_ratio"] == 4  # "doubling", "four"


def test_class_token_sees_every_patch():
    torch.manual_seed(15)
    block = RECIPES["mnist"].model.build().blocks[0].to(DTYPE)
    x = torch.randn(1, V["mnist"]["seq"], V["mnist"]["d_model"], dtype=DTYPE, requires_grad=True)
    (grad,) = torch.autograd.grad(block(x)[0, 0].sum(), x)  # the class token's output, position 0
    assert int((grad[0, 1:].abs().sum(-1) > 0).sum()) == V["mnist"]["tokens"]


def test_sinusoids_shift_by_a_rotation():
    d, k, base, pair = 16, 5, V["pe_base"], V["pe_pair"]
    pos, i = torch.arange(60, dtype=DTYPE)[:, None], torch.arange(d // 2)
    freq = 1 / base ** (pair * i.to(DTYPE) / d)  # the template's PE(pos, 2i) = sin(pos / base^(2i/d)), ...
    pe = torch.zeros(60, d, dtype=DTYPE)  # (pos, d)
    pe[:, pair * i], pe[:, pair * i + 1] = torch.sin(pos * freq), torch.cos(pos * freq)
    c, s = torch.cos(k * freq).tolist(), torch.sin(k * freq).tolist()
    R = torch.block_diag(*(torch.tensor([[ci, si], [-si, ci]], dtype=DTYPE) for ci, si in zip(c, s)))
    assert torch.allclose(pe[k:], pe[:-k] @ R.T)  # PE(pos + k) = R_k PE(pos), R_k independent of pos
