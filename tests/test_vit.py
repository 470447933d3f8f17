"""patchify and the Vision Transformer."""
import pytest
import torch
from torch import nn

from reference.blocks import TransformerBlock
from reference.vit import VisionTransformer, patchify

torch.manual_seed(0)


def patches_by_loops(images: torch.Tensor, P: int) -> torch.Tensor:
    """The documented order, written out: grid rows, then grid columns; each patch in (C, P, P) order."""
    B, C, H, W = images.shape
    return torch.stack([
        torch.stack([images[b, :, i:i + P, j:j + P].reshape(-1) for i in range(0, H, P) for j in range(0, W, P)])
        for b in range(B)
    ])


@pytest.mark.parametrize("shape,P", [((2, 1, 8, 8), 4), ((2, 3, 8, 8), 2), ((1, 3, 6, 12), 3), ((2, 3, 32, 32), 4)])
def test_patchify_order(shape, P):
    images = torch.randn(*shape)
    torch.testing.assert_close(patchify(images, P), patches_by_loops(images, P))


def test_patchify_reads_3d_input_as_one_channel():
    images = torch.randn(2, 28, 28)
    torch.testing.assert_close(patchify(images, 7), patchify(images.unsqueeze(1), 7))
    assert patchify(images, 7).shape == (2, 16, 49)


@pytest.mark.parametrize("shape,P", [((1, 1, 28, 28), 5), ((1, 3, 8, 12), 8)])
def test_patchify_rejects_indivisible_sizes(shape, P):
    with pytest.raises(ValueError, match="divisible"):
        patchify(torch.randn(*shape), P)


def small_vit(**overrides) -> VisionTransformer:
    kwargs = dict(image_size=8, patch_size=4, in_channels=3, num_classes=5, d_model=16, num_layers=2, num_heads=2, d_hidden=32)
    return VisionTransformer(**{**kwargs, **overrides})


def test_vit_interface_and_shapes():
    vit = small_vit()
    assert isinstance(vit.embedding, nn.Linear) and vit.embedding.in_features == 3 * 4 * 4
    assert vit.class_token.shape == (1, 1, 16)
    assert vit.pos_embedding.shape == (1, 5, 16)
    assert isinstance(vit.blocks, nn.Sequential) and all(isinstance(b, TransformerBlock) for b in vit.blocks)
    assert len(vit.blocks) == 2
    images = torch.randn(3, 3, 8, 8)
    assert vit(images).shape == (3, 5)
    maps = vit.attention_maps(images)
    assert len(maps) == 2 and all(m.shape == (3, 2, 5, 5) for m in maps)


def test_vit_non_square_images():
    vit = small_vit(image_size=(8, 12))
    assert vit.pos_embedding.shape == (1, 7, 16)
    assert vit(torch.randn(2, 3, 8, 12)).shape == (2, 5)


def test_vit_gradients_reach_every_parameter():
    vit = small_vit()
    vit(torch.randn(4, 3, 8, 8)).sum().backward()
    missing = [n for n, p in vit.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_vit_reads_the_class_token_at_position_0():
    # Permuting the patches together with their positional embeddings changes nothing: only the
    # class token at position 0 is read, and attention is permutation-equivariant.
    vit = small_vit(image_size=8, patch_size=2).eval()
    images = torch.randn(2, 3, 8, 8)
    perm = torch.randperm(16)
    tokens = vit.tokens(images)
    permuted = torch.cat([tokens[:, :1], tokens[:, 1:][:, perm]], dim=1)
    head = lambda t: vit.head(vit.norm(vit.blocks(t)[:, 0]))
    torch.testing.assert_close(head(permuted), vit(images))
    # And the class token feeds the head: changing it changes the logits.
    with torch.no_grad():
        vit.class_token.add_(torch.randn_like(vit.class_token))  # not a constant: LayerNorm ignores shifts
    assert not torch.allclose(vit(images), head(tokens))
