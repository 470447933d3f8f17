# Student template, generated from reference/vit.py: fill in every TODO.
"""The Vision Transformer: images cut into patches, a linear patch embedding, a class token,
learned positional embeddings, a stack of pre-LN transformer blocks and a linear head."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .blocks import TransformerBlock


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """Cut images into non-overlapping square patches.

    Args:
        images: (B, C, H, W), or (B, H, W) read as C = 1.
        patch_size: side P of a patch; must divide H and W.

    Returns:
        (B, N, C*P*P) with N = (H/P)(W/P): patches in row-major order over the grid, each
        flattened in (C, P, P) order (einops: ``b c (h p1) (w p2) -> b (h w) (c p1 p2)``).

    Raises:
        ValueError: if H or W is not divisible by ``patch_size``.
    """
    # TODO: check the sizes (ValueError); reshape to (B, C, H/P, P, W/P, P), permute, flatten
    raise NotImplementedError("patchify: not implemented yet")


class VisionTransformer(nn.Module):
    """ViT classifier: ``head(norm(blocks([class; embedding(patches)] + pos)))[:, 0]``.

    Args:
        image_size: side of the (square) input images, or (H, W).
        patch_size: side of the square patches; must divide the image sides.
        in_channels: channels C of the images.
        num_classes: number of output logits.
        d_model: token width.
        num_layers: number of transformer blocks.
        num_heads: attention heads per block.
        d_hidden: width of the MLPs' hidden layers.
        dropout: dropout probability inside the blocks and on the embedded tokens.

    Attributes:
        embedding: ``nn.Linear(C*P*P, d_model)``, applied to ``patchify``'s output (a Conv2d
        with kernel = stride = P computes the same, but is not this interface: the grader refuses
        it); class_token: (1, 1, d_model);
        pos_embedding: (1, N+1, d_model); blocks: ``nn.Sequential`` of ``TransformerBlock``;
        norm: ``nn.LayerNorm(d_model)``; head: ``nn.Linear(d_model, num_classes)``.
        Start class_token at zeros and pos_embedding at N(0, 0.02^2): a start of N(0, 1) drowns the
        patches and learns CIFAR-10 more slowly. The grader's training starts both there anyway.
    """

    def __init__(
        self,
        image_size: int | tuple[int, int],
        patch_size: int,
        in_channels: int,
        num_classes: int,
        d_model: int,
        num_layers: int,
        num_heads: int,
        d_hidden: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        # TODO: N = number of patches; the layers and parameters named in the docstring (class token at position 0)
        raise NotImplementedError("VisionTransformer.__init__: not implemented yet")

    def tokens(self, images: Tensor) -> Tensor:
        """Images (B, C, H, W) -> the input tokens of the first block, (B, N+1, d_model)."""
        # TODO: patchify, embed, prepend the class token, add the positional embedding
        raise NotImplementedError("VisionTransformer.tokens: not implemented yet")

    def forward(self, images: Tensor) -> Tensor:
        """Images (B, C, H, W) -> logits (B, num_classes), read from the class token."""
        # TODO: tokens -> blocks -> norm -> head on position 0
        raise NotImplementedError("VisionTransformer.forward: not implemented yet")

    @torch.no_grad()
    def attention_maps(self, images: Tensor) -> list[Tensor]:
        """The attention weights of every block, each (B, num_heads, N+1, N+1); index 0 is the
        class token."""
        # TODO: run the blocks one by one with return_attention=True and collect the weights
        raise NotImplementedError("VisionTransformer.attention_maps: not implemented yet")
