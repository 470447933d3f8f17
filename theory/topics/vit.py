"""Topic 5: the Transformer and ViT: FFN and embedding sizes, and the homework's two models."""
from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from theory.topics import count

from reference.configs import RECIPES
from reference.vit import patchify

# The original Transformer (Vaswani et al.): token width, FFN width as a multiple of it, and the
# FFN's depth (two linear layers).
D_MODEL, FFN_RATIO, FFN_LAYERS = 512, 4, 2
PE_BASE = 10000  # the base of the sinusoids' wavelengths
PE_PAIR = 2  # a sine and a cosine share each frequency
# ViT-B/16 on ImageNet-sized images: image side, colour channels, patch side, token width.
IMAGE, CHANNELS, PATCH, WIDTH = 224, 3, 16, 768
YEARS = {"transformer": 2017, "vit": 2020}  # publication years, for the comparison table
PRETRAINING_SETS = ("ImageNet-21k", "JFT-300M")  # the ViT paper's large pre-training sets
# The original base translation model: heads, blocks in the encoder and in the decoder, and its
# English-German vocabulary (byte-pair encoding, shared by source and target: about 37,000 tokens),
# whose one embedding table serves both inputs and the output layer.
HEADS, LAYERS, VOCAB = 8, 6, 37_000


def ffn_shares() -> dict[str, float]:
    """The FFNs' share of the parameters of an encoder block, of a decoder block, and of the whole
    original model (blocks, final norms and the shared embedding table), counted on torch's layers."""
    d_ff = FFN_RATIO * D_MODEL
    with torch.device("meta"):  # counted, not allocated
        encoder = nn.TransformerEncoderLayer(D_MODEL, HEADS, d_ff, batch_first=True)
        decoder = nn.TransformerDecoderLayer(D_MODEL, HEADS, d_ff, batch_first=True)
        model = nn.Transformer(D_MODEL, HEADS, LAYERS, LAYERS, d_ff, batch_first=True)  # batch_first: no warning
    ffn = lambda layer: count(layer.linear1) + count(layer.linear2)  # noqa: E731
    blocks = [*model.encoder.layers, *model.decoder.layers]
    return {
        "ffn_share_encoder": ffn(encoder) / count(encoder), "ffn_share_decoder": ffn(decoder) / count(decoder),
        "ffn_share_model": sum(map(ffn, blocks)) / (count(model) + VOCAB * D_MODEL),
    }


def homework(name: str) -> dict[str, object]:
    """Sizes of the homework model of recipe ``name``, read off the reference model itself."""
    config = RECIPES[name].model
    with torch.random.fork_rng(devices=[]):  # building draws the positional embedding: keep the global seed
        model = config.build().eval()
    images = torch.zeros(1, config.in_channels, config.image_size, config.image_size)  # (B, C, H, W)
    patches = patchify(images, config.patch_size)  # (1, N, P*P*C)
    maps = model.attention_maps(images)  # each (1, heads, N+1, N+1)
    pixels = config.image_size**2  # attention over single pixels: one token per pixel, and a class token
    return {
        **vars(config), "grid": config.image_size // config.patch_size,
        "tokens": patches.shape[1], "patch_len": patches.shape[2], "seq": patches.shape[1] + 1,
        "entries": maps[0][0, 0].numel(), "pixels": pixels, "pixel_seq": pixels + 1,
        "pixel_entries": (pixels + 1) ** 2,
        "ln_vectors": count(model.norm) // config.d_model,  # gamma and beta
        "embed_params": count(model.embedding), "block_params": count(model.blocks[0]),
        "params": count(model),
    }


@lru_cache(maxsize=None)
def values() -> dict[str, object]:
    d_ff = FFN_RATIO * D_MODEL
    grid = IMAGE // PATCH
    mnist, cifar = homework("mnist"), homework("cifar10")
    return {
        "d_model": D_MODEL, "ffn_ratio": FFN_RATIO, "ffn_layers": FFN_LAYERS, "d_ff": d_ff,
        "ffn_params": FFN_LAYERS * D_MODEL * d_ff + d_ff + D_MODEL,  # two weights, two biases
        **ffn_shares(), "vocab": VOCAB,
        "pe_base": PE_BASE, "pe_pair": PE_PAIR, "years": YEARS, "pretraining_sets": PRETRAINING_SETS,
        "image": IMAGE, "channels": CHANNELS, "patch": PATCH, "width": WIDTH,
        "grid": grid, "num_patches": grid**2, "num_tokens": grid**2 + 1,
        "patch_embed_params": PATCH * PATCH * CHANNELS * WIDTH + WIDTH,
        "pos_embed_params": (grid**2 + 1) * WIDTH,
        "mnist": mnist, "cifar": cifar,
        # a block's weights grow with D^2: the ratio of the two models' blocks, to the nearest integer
        "block_ratio": round(cifar["block_params"] / mnist["block_params"]),
    }
