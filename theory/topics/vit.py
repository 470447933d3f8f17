"""Topic 5: the Transformer and ViT: FFN and embedding sizes, and the homework's two models."""
from __future__ import annotations

from functools import lru_cache

import torch

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


def homework(name: str) -> dict[str, object]:
    """Sizes of the homework model of recipe ``name``, read off the reference model itself."""
    config = RECIPES[name].model
    with torch.random.fork_rng(devices=[]):  # building draws the positional embedding: keep the global seed
        model = config.build().eval()
    images = torch.zeros(1, config.in_channels, config.image_size, config.image_size)  # (B, C, H, W)
    patches = patchify(images, config.patch_size)  # (1, N, P*P*C)
    maps = model.attention_maps(images)  # each (1, heads, N+1, N+1)
    pixels = config.image_size**2
    return {
        **vars(config), "grid": config.image_size // config.patch_size,
        "tokens": patches.shape[1], "patch_len": patches.shape[2], "seq": patches.shape[1] + 1,
        "entries": maps[0][0, 0].numel(), "pixels": pixels, "pixel_entries": pixels**2,
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
        "pe_base": PE_BASE, "pe_pair": PE_PAIR, "years": YEARS, "pretraining_sets": PRETRAINING_SETS,
        "image": IMAGE, "channels": CHANNELS, "patch": PATCH, "width": WIDTH,
        "grid": grid, "num_patches": grid**2, "num_tokens": grid**2 + 1,
        "patch_embed_params": PATCH * PATCH * CHANNELS * WIDTH + WIDTH,
        "pos_embed_params": (grid**2 + 1) * WIDTH,
        "mnist": mnist, "cifar": cifar,
        # a block's weights grow with D^2: the ratio of the two models' blocks, to the nearest integer
        "block_ratio": round(cifar["block_params"] / mnist["block_params"]),
    }
