"""Figures: training curves, and the attention of the first block over a test image.

Functions build ``matplotlib.figure.Figure`` objects directly (no pyplot state), so they work the
same in a notebook, a script or a headless grader; pass ``path`` to also save a PNG.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor, nn

from .training import History


def _save(fig: Figure, path: str | os.PathLike | None) -> Figure:
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def plot_history(
    history: History,
    title: str = "",
    path: str | os.PathLike | None = None,
    *,
    thresholds: Sequence[float] = (),
    reference: History | None = None,
) -> Figure:
    """Training loss per step (and per epoch) and test accuracy per epoch, side by side; with
    ``thresholds`` (fractions, e.g. 0.94) drawn as lines and a ``reference`` run drawn beside it."""
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    steps = len(history.step_loss)
    if steps and history.epochs:
        per_epoch = steps / history.epochs
        loss_ax.plot([(i + 1) / per_epoch for i in range(steps)], history.step_loss, lw=0.6, alpha=0.5, label="step")
    loss_ax.plot(history.epoch, history.train_loss, "o-", label="mean since last evaluation")
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="loss")
    loss_ax.legend()
    acc_ax.plot(history.epoch, [100 * a for a in history.test_accuracy], "o-", label="this run")
    if reference is not None:
        acc_ax.plot(reference.epoch, [100 * a for a in reference.test_accuracy], "-", color="0.6", label="reference")
    for threshold in thresholds:
        acc_ax.axhline(100 * threshold, ls="--", lw=1, color="tab:red")
        acc_ax.annotate(f"{100 * threshold:g}%", (0, 100 * threshold), xycoords=("axes fraction", "data"),
                        xytext=(3, 2), textcoords="offset points", color="tab:red", fontsize=8)
    acc_ax.set(xlabel="epoch", ylabel="test accuracy (%)", title="accuracy")
    if reference is not None:
        acc_ax.legend(loc="lower right")
    acc_ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def block_attention(model: nn.Module, image: Tensor, block: int = 0) -> Tensor:
    """The attention weights of ``block`` for one normalised image (C, H, W), in eval mode:
    (heads, N+1, N+1) on the CPU, index 0 being the class token."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        weights = model.attention_maps(image.unsqueeze(0))[block]  # (1, heads, N+1, N+1)
    model.train(was_training)
    return weights[0].float().cpu()


def class_token_attention(model: nn.Module, image: Tensor, block: int = 0) -> Tensor:
    """How much the class token attends to each patch in ``block``, averaged over heads, laid
    out on the patch grid: (H/P, W/P). ``model`` needs ``attention_maps`` and ``patch_size``."""
    _, H, W = image.shape
    P = model.patch_size
    row = block_attention(model, image, block)[:, 0, 1:].mean(0)  # (N,): class token -> patches
    return row.reshape(H // P, W // P)


def plot_attention_map(
    model: nn.Module,
    image: Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    title: str = "",
    path: str | os.PathLike | None = None,
) -> Figure:
    """The first block's attention for one normalised test image (C, H, W): the image, the class
    token's attention over the patches laid on it, and the full (N+1) x (N+1) map (head average)."""
    pixels = image.cpu() * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
    return draw_attention(block_attention(model, image), pixels.clamp(0, 1), title, path)


def draw_attention(weights: Tensor, pixels: Tensor, title: str = "", path: str | os.PathLike | None = None) -> Figure:
    """Draw attention weights (heads, N+1, N+1) of square patches over an image (C, H, W) with
    values in 0-1 (or uint8): the image, the class token's attention over the patch grid, and the
    head-averaged map."""
    pixels = pixels.float() / 255 if pixels.dtype == torch.uint8 else pixels.float()
    C, H, W = pixels.shape
    mean_map = weights.float().mean(0)  # (N+1, N+1)
    side = math.isqrt(mean_map.size(0) - 1)
    grid_shape = (side, side) if H == W else (round(H * side / W), round(W * side / H))
    grid = mean_map[0, 1:].reshape(grid_shape)  # class token -> patches
    shown = (pixels[0] if C == 1 else pixels.permute(1, 2, 0)).numpy()  # (H, W) or (H, W, C)
    cmap = "gray" if C == 1 else None

    fig = Figure(figsize=(11, 3.8), layout="constrained")
    img_ax, over_ax, map_ax = fig.subplots(1, 3)
    img_ax.imshow(shown, cmap=cmap)
    img_ax.set_title("test image")
    over_ax.imshow(shown, cmap=cmap)
    over_ax.imshow(grid.numpy(), cmap="inferno", alpha=0.6, extent=(-0.5, W - 0.5, H - 0.5, -0.5), interpolation="nearest")
    over_ax.set_title("class token's attention\non the patches")
    for ax in (img_ax, over_ax):
        ax.axis("off")
    im = map_ax.imshow(mean_map.numpy(), cmap="viridis")
    map_ax.set(title="attention map (mean of heads)", xlabel="key token (0 = class)", ylabel="query token (0 = class)")
    for axis in (map_ax.xaxis, map_ax.yaxis):
        axis.set_major_locator(MaxNLocator(nbins=6, integer=True))  # token indices are whole numbers
    fig.colorbar(im, ax=map_ax, shrink=0.85)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_attention_heads(model: nn.Module, image: Tensor, path: str | os.PathLike | None = None) -> Figure:
    """The first block's (N+1) x (N+1) attention map of every head, for one normalised image."""
    weights = block_attention(model, image)  # (heads, N+1, N+1)
    heads = weights.size(0)
    cols = min(4, heads)
    rows = math.ceil(heads / cols)
    fig = Figure(figsize=(3 * cols, 3 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < heads:
            ax.imshow(weights[i].numpy(), cmap="viridis")
            ax.set_title(f"head {i + 1}")
    return _save(fig, path)
