"""Topic 6: convolution and pooling, computed with torch's layers and pooling functions."""
from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache

import mpmath
import sympy
import torch
import torch.nn.functional as F
from torch import nn

from theory.topics import count

# The questions' layers: question 6.1 (1D, a length-200 signal) and question 6.2 (2D, a 28 x 28 image).
CONV1D = dict(in_channels=1, out_channels=8, kernel_size=4, stride=2, padding=0)
LENGTH = 200
CONV2D = dict(in_channels=3, out_channels=8, kernel_size=4, stride=2, padding=0)
SIDE = 28
# Question 6.3: 3 x 3 pooling, stride 2, no padding, on two 5 x 5 binary maps.
POOL, POOL_STRIDE = 3, 2
X1 = torch.tensor([[1, 1, 1, 0, 1], [1, 0, 1, 0, 1], [1, 1, 1, 0, 1], [0, 0, 0, 0, 1], [1, 1, 1, 1, 1]],
                  dtype=torch.float64)
X2 = torch.tensor([[0, 0, 0, 0, 0], [0, 1, 1, 1, 0], [0, 1, 0, 1, 0], [0, 1, 1, 1, 0], [0, 0, 0, 0, 0]],
                  dtype=torch.float64)
SHIFT = 1  # question 6.4 moves the ring X2 this many pixels to the right
PLACES = 3  # decimals shown

# Outputs of a window of size K (padding p, stride s) along an axis of length L.
L, K, p, s = sympy.symbols("L K p s")
OUT_LEN = sympy.floor((L - K + 2 * p) / s) + 1


def pool(x: torch.Tensor) -> dict[str, object]:
    """Average, maximum and sum of each window of the (n, n) map ``x``; averages also as fractions."""
    x = x[None, None]  # (1, 1, n, n)
    sums = F.avg_pool2d(x, POOL, POOL_STRIDE, divisor_override=1)[0, 0]  # (m, m)
    return {"avg": F.avg_pool2d(x, POOL, POOL_STRIDE)[0, 0], "max": F.max_pool2d(x, POOL, POOL_STRIDE)[0, 0],
            "sum": sums, "frac": [[Fraction(int(v), POOL * POOL) for v in row] for row in sums.tolist()]}


def expected_max_of_normals(n: int) -> float:
    """E[max of n iid N(0, 1)] = integral of x n phi(x) Phi(x)^(n-1) over the real line."""
    f = lambda x: x * n * mpmath.npdf(x) * mpmath.ncdf(x) ** (n - 1)  # noqa: E731
    return float(mpmath.quad(f, [-mpmath.inf, mpmath.inf]))


@lru_cache(maxsize=None)
def values() -> dict[str, object]:
    conv1, conv2 = nn.Conv1d(**CONV1D), nn.Conv2d(**CONV2D)
    with torch.no_grad():
        out1 = conv1(torch.zeros(1, CONV1D["in_channels"], LENGTH))  # (1, filters, length)
        out2 = conv2(torch.zeros(1, CONV2D["in_channels"], SIDE, SIDE))  # (1, filters, height, width)
    # A fully-connected layer with the same input and output sizes (on "meta": counted, not allocated).
    dense = nn.Linear(CONV2D["in_channels"] * SIDE * SIDE, out2.numel(), device="meta")
    c2 = {k: v for k, v in CONV2D.items() if k != "in_channels"}
    x3 = torch.zeros_like(X2)
    x3[:, SHIFT:] = X2[:, :-SHIFT]
    n = X1.shape[0]
    starts = range(0, n - POOL + 1, POOL_STRIDE)  # first index of each window along an axis
    return {
        "out_len": OUT_LEN, "conv1": CONV1D, "length": LENGTH, "conv2": CONV2D, "side": SIDE,
        "c1_params": count(conv1), "c1_weights": conv1.weight.numel(), "c1_biases": conv1.bias.numel(),
        "c1_out": out1.shape[2], "c1_filters": out1.shape[1],
        "c2_params": count(conv2), "c2_weights": conv2.weight.numel(), "c2_biases": conv2.bias.numel(),
        "c2_filter_weights": conv2.weight[0].numel(), "c2_out": out2.shape[2], "c2_filters": out2.shape[1],
        "dense_params": count(dense),
        "no_depth_params": count(nn.Conv2d(1, **c2)),  # the filter forgets the input channels
        "no_bias_params": count(nn.Conv2d(**CONV2D, bias=False)),
        "pool_size": POOL, "pool_stride": POOL_STRIDE, "n": n, "x1": X1, "x2": X2, "x3": x3,
        "p1": pool(X1), "p2": pool(X2), "p3": pool(x3), "pool_out": pool(X1)["avg"].shape[0],
        "windows": [(a + 1, a + POOL) for a in starts], "overlap": POOL - POOL_STRIDE,
        "ring_ones": int(X2.sum()), "shift": SHIFT, "places": PLACES, "window_numel": POOL * POOL,
        "noise_factor": Fraction(1, math.isqrt(POOL * POOL)),  # a mean of n iid values: std sigma/sqrt(n)
        "max_noise_mean": expected_max_of_normals(POOL * POOL),
    }
