"""A LayerNorm is judged by what it computes: its scale, shift and eps are found from its output,
whatever its class, parameter names or eps (from Hugging Face's 1e-12 to PyTorch's 1e-5)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from grader.checklib import EPS_RANGE, layer_norm_affine


def rows(d: int = 16) -> torch.Tensor:
    """Rows of variance 1 down to 1e-8, as the ViT check sends: there the eps shows."""
    generator = torch.Generator().manual_seed(0)
    scale = torch.logspace(0, -4, 8).view(1, 8, 1)
    return (torch.randn(1, 8, d, generator=generator) + torch.randn(1, 8, 1, generator=generator)) * scale


def norm(eps: float) -> nn.LayerNorm:
    layer = nn.LayerNorm(16, eps=eps)
    with torch.no_grad():
        layer.weight.copy_(torch.linspace(0.5, 2.0, 16))
        layer.bias.copy_(torch.linspace(-1.0, 1.0, 16))
    return layer


@pytest.mark.parametrize("eps", [1e-5, 3e-6, 1e-6, 1e-12])
def test_the_eps_is_fitted_from_what_the_norm_computes(eps: float) -> None:
    x = rows()
    with torch.no_grad():
        fit = layer_norm_affine(x, norm(eps)(x))
    assert fit is not None and torch.allclose(fit.weight, torch.linspace(0.5, 2.0, 16), atol=1e-4)
    assert abs(fit.eps - eps) < 1e-7  # precise where the rows' variance is 1e-8
    with torch.no_grad():  # and a read eps is used as read
        assert layer_norm_affine(x, norm(eps)(x), eps).eps == eps


def test_a_wrong_eps_or_another_norm_is_not_a_layer_norm() -> None:
    x = rows()
    with torch.no_grad():
        assert layer_norm_affine(x, norm(1e-3)(x)) is None  # too large: the small rows shrink
        assert layer_norm_affine(x, norm(1e-3)(x), 1e-3) is None  # read from the module: outside EPS_RANGE
        assert layer_norm_affine(x, nn.RMSNorm(16)(x)) is None
        assert layer_norm_affine(x, x) is None
    assert EPS_RANGE == (1e-12, 1e-5)
