"""Topic 6: the layers' counts and shapes against the text's arithmetic, the pooled maps against
brute force, and the noise statistics against sampling."""
from __future__ import annotations

import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F

from theory.topics import convolution as conv

V = conv.values()
Z = 5.0  # Monte-Carlo tolerance in standard errors: a false alarm has probability < 1e-6


def out_len(length: int, k: int, pad: int, stride: int) -> int:
    return int(V["out_len"].subs({conv.L: length, conv.K: k, conv.p: pad, conv.s: stride}))


def test_output_length_formula_matches_torch():
    for length, k, pad, stride in itertools.product((7, 12, 28, 200), (2, 3, 4), (0, 1), (1, 2, 3)):
        x = torch.zeros(1, 1, length)
        n_conv = F.conv1d(x, torch.zeros(1, 1, k), stride=stride, padding=pad).shape[-1]
        assert n_conv == F.max_pool1d(x, k, stride, pad).shape[-1] == out_len(length, k, pad, stride)


def test_parameter_counts_and_shapes_are_the_texts_arithmetic():
    c1, c2 = conv.CONV1D, conv.CONV2D
    f1, k1, f2, k2 = c1["out_channels"], c1["kernel_size"], c2["out_channels"], c2["kernel_size"]
    w1, w2 = k1 * c1["in_channels"], k2 * k2 * c2["in_channels"]  # weights of one filter
    assert (V["c1_params"], V["c1_weights"], V["c1_biases"]) == (f1 * (w1 + 1), f1 * w1, f1)
    assert (V["c1_out"], V["c1_filters"]) == (out_len(conv.LENGTH, k1, 0, c1["stride"]), f1)
    assert V["c2_filter_weights"] == w2
    assert (V["c2_params"], V["c2_weights"], V["c2_biases"]) == (f2 * (w2 + 1), f2 * w2, f2)
    assert (V["c2_out"], V["c2_filters"]) == (out_len(conv.SIDE, k2, 0, c2["stride"]), f2)
    outputs = V["c2_out"] ** 2 * f2
    assert V["dense_params"] == conv.SIDE**2 * c2["in_channels"] * outputs + outputs
    assert (V["no_depth_params"], V["no_bias_params"]) == (f2 * (k2 * k2 + 1), V["c2_weights"])


def test_pooling_by_brute_force():
    n, k, st = V["n"], conv.POOL, conv.POOL_STRIDE
    starts = range(0, n - k + 1, st)
    for x, p in ((V["x1"], V["p1"]), (V["x2"], V["p2"]), (V["x3"], V["p3"])):
        w = np.array([[x.numpy()[i:i + k, j:j + k] for j in starts] for i in starts])  # (m, m, k, k)
        assert np.array_equal(p["sum"].numpy(), w.sum((2, 3)))
        assert np.array_equal(p["max"].numpy(), w.max((2, 3)))
        assert np.allclose(p["avg"].numpy(), w.mean((2, 3)))
        assert np.allclose(np.array(p["frac"], dtype=float), w.mean((2, 3)))
    assert V["pool_out"] == len(starts) == out_len(n, k, 0, st)
    assert [(a + 1, a + k) for a in starts] == V["windows"]
    assert V["windows"][-1][1] == n  # the last window ends at the edge: no row or column is left out
    assert V["windows"][0][1] - V["windows"][1][0] + 1 == V["overlap"]
    assert bool((V["p1"]["sum"] > 0).all())  # "every window contains a 1"
    assert V["ring_ones"] == V["x2"].sum() and bool((V["p2"]["sum"] == V["p2"]["sum"][0, 0]).all())


def test_max_pooling_forgets_where_average_pooling_does_not():
    x2, x3, sh = V["x2"], V["x3"], conv.SHIFT
    assert torch.equal(x3[:, sh:], x2[:, :-sh]) and x3.sum() == x2.sum()  # X_3 is X_2 shifted right, whole
    assert torch.equal(V["p1"]["max"], V["p2"]["max"]) and torch.equal(V["p2"]["max"], V["p3"]["max"])
    assert not torch.allclose(V["p1"]["avg"], V["p2"]["avg"])
    assert not torch.allclose(V["p2"]["avg"], V["p3"]["avg"])


def noise_windows(seed: int) -> tuple[torch.Tensor, int]:
    """Pure N(0, 1) noise, for non-overlapping (so independent) pooling windows; and the window size."""
    k = conv.POOL
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.standard_normal((20_000, 1, 3 * k, 3 * k))), k


def test_average_pooling_divides_the_noise_std():
    noise, k = noise_windows(16)
    x = F.avg_pool2d(noise, k, stride=k).flatten().numpy()
    se = x.std() / math.sqrt(2 * (len(x) - 1))  # SE of a normal sample's standard deviation
    assert abs(x.std() - float(V["noise_factor"])) <= Z * se
    assert V["window_numel"] == k * k and 1 / V["noise_factor"] == math.sqrt(k * k)


def test_max_pooling_of_noise_has_the_stated_mean():
    noise, k = noise_windows(17)
    x = F.max_pool2d(noise, k, stride=k).flatten().numpy()
    assert abs(x.mean() - V["max_noise_mean"]) <= Z * x.std() / math.sqrt(len(x))
    t = torch.linspace(-10, 10, 200_001, dtype=torch.float64)  # E[max] by the trapezoid rule
    density = k * k * torch.exp(-t * t / 2) / math.sqrt(2 * math.pi) * torch.special.ndtr(t) ** (k * k - 1)
    assert abs(torch.trapezoid(t * density, t).item() - V["max_noise_mean"]) < 1e-6
