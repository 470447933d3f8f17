"""The student notebooks, built with nbformat: they import the template modules beside them and hold
the training and plotting cells. Cell ids are fixed so that regenerating changes nothing."""
from __future__ import annotations

from typing import Callable

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

SETUP = '''\
# The notebook sits in student_template/; make the package importable whatever the working directory.
import pathlib, sys
ROOT = pathlib.Path.cwd()
sys.path.insert(0, str(ROOT.parent if (ROOT / "attention.py").exists() else ROOT))

import torch
torch.manual_seed(0)'''


def _notebook(cells: list[tuple[str, str]]) -> str:
    nb = new_notebook(metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    })
    for i, (kind, text) in enumerate(cells):
        cell = new_markdown_cell(text) if kind == "md" else new_code_cell(text)
        cell["id"] = f"cell-{i:02d}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


def attention_notebook() -> str:
    return _notebook([
        ("md", "# Attention\n\n"
               "Implement the TODOs in `attention.py` (the attention function, single-head attention of Eq. (1), "
               "multi-head self-attention) and `blocks.py` (the feed-forward block, the residual block and the "
               "pre-LayerNorm transformer block), then run the cells below. `make check` runs the visible checks "
               "on your code. Write the attention yourself: `F.scaled_dot_product_attention`, `nn.MultiheadAttention` "
               "and `nn.TransformerEncoderLayer` earn no points."),
        ("code", SETUP + "\n\nfrom student_template.attention import scaled_dot_product_attention, "
                         "ScaledDotProductAttention, MultiHeadSelfAttention\n"
                         "from student_template.blocks import FeedForwardBlock, SelfAttentionBlock, TransformerBlock"),
        ("md", "## The attention function\n\nThe keys, values and queries of the by-hand exercise: compute the "
               "output at time step 2 with your function and compare it with your hand calculation."),
        ("code", "keys = torch.tensor([[2., 0, 0], [3, -1, 0], [1, 0, 2]])\n"
                 "values = torch.tensor([[5., 4, 5], [3, 5, 5], [1, 2, 4]])\n"
                 "queries = torch.tensor([[1., 0, 4], [2, -1, 3], [4, 6, 1]])\n"
                 "out, weights = scaled_dot_product_attention(queries, keys, values)\n"
                 "print('weights of query 2:', weights[1])\n"
                 "print('a2 =', out[1])\n"
                 "print('rows sum to 1:', torch.allclose(weights.sum(-1), torch.ones(3)))"),
        ("md", "## Masking\n\nA boolean mask with `True` where a query may attend: here query 2 may not see key 3."),
        ("code", "mask = torch.ones(3, 3, dtype=torch.bool)\n"
                 "mask[1, 2] = False\n"
                 "out, weights = scaled_dot_product_attention(queries, keys, values, mask)\n"
                 "print(weights[1], out[1])"),
        ("md", "## Multi-head self-attention and the blocks\n\nShapes first: every module maps (B, T, D) to (B, T, D)."),
        ("code", "x = torch.randn(2, 5, 16)\n"
                 "mhsa = MultiHeadSelfAttention(16, num_heads=4)\n"
                 "out, weights = mhsa(x, return_attention=True)\n"
                 "print(out.shape, weights.shape)  # (2, 5, 16) and (2, 4, 5, 5)\n"
                 "print(SelfAttentionBlock(16, 32)(x).shape, TransformerBlock(16, 4, 32)(x).shape)"),
        ("code", "from matplotlib.figure import Figure\n"
                 "fig = Figure(figsize=(12, 3))\n"
                 "for h, ax in enumerate(fig.subplots(1, 4)):\n"
                 "    ax.imshow(weights[0, h].detach(), cmap='viridis')\n"
                 "    ax.set_title(f'head {h + 1}')\n"
                 "fig"),
    ])


def vit_notebook() -> str:
    return _notebook([
        ("md", "# Vision Transformer\n\n"
               "Implement `patchify` and `VisionTransformer` in `vit.py` (after `attention.py` and `blocks.py`), then "
               "train it. The model hyperparameters and the training recipe are fixed in `configs.py`: the grader "
               "trains your model with exactly these. Targets: MNIST >= 94% test accuracy; CIFAR-10 points at 25%, "
               "50% and 70%. Data: set `DATA_DIR` below, or the environment variable `VITKIT_DATA`; "
               "`download=True` fetches the files when you have a network (needs torchvision)."),
        ("code", SETUP + "\n\nfrom student_template.vit import patchify, VisionTransformer\n"
                         "from student_template.configs import get_recipe\n"
                         "from student_template.data import load_dataset\n"
                         "from student_template.training import train, resolve_device\n"
                         "from student_template.plotting import plot_history, plot_attention_map\n\n"
                         "DATA_DIR = None  # e.g. '../data'; None: $VITKIT_DATA, else ./data\n"
                         "DEVICE = resolve_device('auto')\n"
                         "print(DEVICE)"),
        ("md", "## Patches\n\nA 4 x 4 image cut into 2 x 2 patches: 4 patches in row-major order, each flattened in (C, P, P) order."),
        ("code", "image = torch.arange(16.).reshape(1, 1, 4, 4)\n"
                 "print(image[0, 0])\n"
                 "print(patchify(image, 2))  # (1, 4, 4)"),
        ("md", "## MNIST"),
        ("code", "recipe = get_recipe('mnist')\n"
                 "mnist = load_dataset('mnist', DATA_DIR)\n"
                 "model = recipe.model.build(VisionTransformer)\n"
                 "print(f'{sum(p.numel() for p in model.parameters()):,} parameters')\n"
                 "history = train(model, mnist, recipe.train, device=DEVICE, progress=True)\n"
                 "print(f'test accuracy: {100 * history.final_accuracy:.2f}% in {history.seconds:.0f} s')"),
        ("code", "plot_history(history, 'MNIST')"),
        ("code", "plot_attention_map(model, mnist.normalized_test_image(0, DEVICE), mnist.mean, mnist.std,\n"
                 "                   'MNIST: attention of the first block')"),
        ("md", "## CIFAR-10\n\nThis takes a few minutes on a GPU and much longer on a CPU."),
        ("code", "recipe = get_recipe('cifar10')\n"
                 "cifar = load_dataset('cifar10', DATA_DIR)\n"
                 "model = recipe.model.build(VisionTransformer)\n"
                 "history = train(model, cifar, recipe.train, device=DEVICE, progress=True)\n"
                 "print(f'test accuracy: {100 * history.final_accuracy:.2f}% in {history.seconds:.0f} s')"),
        ("code", "plot_history(history, 'CIFAR-10')"),
        ("code", "plot_attention_map(model, cifar.normalized_test_image(0, DEVICE), cifar.mean, cifar.std,\n"
                 "                   'CIFAR-10: attention of the first block')"),
    ])


NOTEBOOKS: dict[str, Callable[[], str]] = {
    "attention.ipynb": attention_notebook,
    "vision_transformer.ipynb": vit_notebook,
}
