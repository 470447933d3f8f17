"""patchify and the Vision Transformer: interface, shapes and the order of the patches."""
import pytest
import torch

from student_template.vit import VisionTransformer, patchify

SMALL = dict(image_size=28, patch_size=7, in_channels=1, num_classes=10, d_model=32, num_layers=2,
             num_heads=4, d_hidden=64)


def test_patchify_cuts_row_major_patches() -> None:
    images = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    patches = patchify(images, 2)
    assert patches.shape == (2, 6, 12), "(B, N, C*P*P) with N = (4/2)(6/2)"
    # patch 1 is row 0 of the grid, column 1: pixels 2..3 of rows 0..1, channel by channel
    torch.testing.assert_close(patches[0, 1], images[0, :, 0:2, 2:4].reshape(-1))
    torch.testing.assert_close(patches[1, 5], images[1, :, 2:4, 4:6].reshape(-1))


def test_patchify_rejects_sizes_the_patch_does_not_divide() -> None:
    with pytest.raises(ValueError):
        patchify(torch.zeros(1, 1, 28, 28), 5)


def test_the_vit_gives_one_row_of_logits_per_image() -> None:
    torch.manual_seed(0)
    model = VisionTransformer(**SMALL)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    colour = VisionTransformer(**{**SMALL, "image_size": 32, "patch_size": 4, "in_channels": 3})
    assert colour(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_every_parameter_learns() -> None:
    torch.manual_seed(0)
    model = VisionTransformer(**SMALL)
    model(torch.randn(2, 1, 28, 28)).sum().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reaches {missing}"


def test_attention_maps_has_one_map_per_block() -> None:
    torch.manual_seed(0)
    maps = VisionTransformer(**SMALL).attention_maps(torch.randn(2, 1, 28, 28))
    assert len(maps) == 2 and all(m.shape == (2, 4, 17, 17) for m in maps), "(B, heads, N+1, N+1) per block"
