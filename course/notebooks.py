"""The student notebooks, built with nbformat: they import the code of their own folder (whatever it
is called), test it against PyTorch's own layers, and hold the training and plotting cells. Cell
ids are fixed so that regenerating changes nothing."""
from __future__ import annotations

from typing import Any, Callable

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

SETUP = '''\
# Your code is the package in this notebook's folder, whatever that folder is called.
%matplotlib inline
%load_ext autoreload
%autoreload 2
import importlib, pathlib, sys
import torch

HERE = pathlib.Path.cwd()  # Jupyter runs a notebook in its own folder
if not (HERE / "attention.py").is_file():
    raise FileNotFoundError(f"attention.py is not in {HERE}: open this notebook from the folder that holds your code")
sys.path.insert(0, str(HERE.parent))


def load(module: str):
    \"\"\"Your ``module``.py from this folder (re-read when you change it: autoreload).\"\"\"
    return importlib.import_module(f"{HERE.name}.{module}")


torch.manual_seed(0)'''
# The same fixed-input tests as the handout's tests/: students run them here, the grader runs its own.
PARITY_TESTS = '''\
# Tests: your attention against PyTorch's own on fixed inputs. Do not change this cell; the grader runs its own checks.
import torch.nn.functional as F
from torch import nn

g = torch.Generator().manual_seed(0)
q, k, v = (torch.randn(2, 5, 8, generator=g) for _ in range(3))
causal = torch.ones(5, 5, dtype=torch.bool).tril()  # True = may attend
for m in (None, causal):
    out, w = scaled_dot_product_attention(q, k, v, m)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=m))
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 5), msg="each row of the weights must sum to 1")

single = ScaledDotProductAttention(8).eval()  # Eq. (1): attention of W^Q q, W^K k, W^V v
torch.testing.assert_close(single(q, k, v, causal),
                           F.scaled_dot_product_attention(single.w_q(q), single.w_k(k), single.w_v(v), attn_mask=causal))

for heads in (1, 4):  # multi-head self-attention vs nn.MultiheadAttention with the same weights
    mine = MultiHeadSelfAttention(16, num_heads=heads).eval()
    theirs = nn.MultiheadAttention(16, heads, batch_first=True).eval()
    with torch.no_grad():
        theirs.in_proj_weight.copy_(torch.cat([mine.w_q.weight, mine.w_k.weight, mine.w_v.weight]))
        theirs.in_proj_bias.copy_(torch.cat([mine.w_q.bias, mine.w_k.bias, mine.w_v.bias]))
        theirs.out_proj.weight.copy_(mine.w_o.weight)
        theirs.out_proj.bias.copy_(mine.w_o.bias)
    x = torch.randn(2, 5, 16, generator=g)
    for m in (None, causal):  # nn.MultiheadAttention's mask means the opposite: True = may not attend
        out, w = mine(x, m, return_attention=True)
        ref, ref_w = theirs(x, x, x, attn_mask=None if m is None else ~m, average_attn_weights=False)
        torch.testing.assert_close(out, ref)
        torch.testing.assert_close(w, ref_w)
print("all tests pass")'''


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
               "pre-LayerNorm transformer block), then run the cells below; the notebook re-reads your files when "
               "you change them. `pytest` in the handout's folder runs the same tests as the test cell below. Write "
               "the attention yourself: `F.scaled_dot_product_attention`, `nn.MultiheadAttention` and "
               "`nn.TransformerEncoderLayer` earn no points (they appear here only as the yardstick of the tests)."),
        ("code", SETUP + "\n\nattention, blocks = load(\"attention\"), load(\"blocks\")\n"
                         "scaled_dot_product_attention = attention.scaled_dot_product_attention\n"
                         "ScaledDotProductAttention = attention.ScaledDotProductAttention\n"
                         "MultiHeadSelfAttention = attention.MultiHeadSelfAttention"),
        ("md", "## Attention by hand\n\nThe keys, values and queries of the by-hand exercise (one per row, "
               "already projected). First the unscaled scores $q_2 \\cdot k_j$ of time step 2, as the question asks "
               "first; then your function, which divides them by $\\sqrt{d} = \\sqrt{3}$. Compare both with your hand "
               "calculation."),
        ("code", "keys = torch.tensor([[2., 0, 0], [3, -1, 0], [1, 0, 2]])\n"
                 "values = torch.tensor([[5., 4, 5], [3, 5, 5], [1, 2, 4]])\n"
                 "queries = torch.tensor([[1., 0, 4], [2, -1, 3], [4, 6, 1]])\n\n"
                 "scores = queries[1] @ keys.T  # q_2 . k_j, unscaled\n"
                 "print('scores of query 2:         ', scores)\n"
                 "print('unscaled weights, a2:      ', scores.softmax(-1), scores.softmax(-1) @ values)\n\n"
                 "out, weights = scaled_dot_product_attention(queries, keys, values)  # scaled by 1/sqrt(3)\n"
                 "print('scaled weights, a2 (yours):', weights[1], out[1])\n"
                 "print('rows sum to 1:', torch.allclose(weights.sum(-1), torch.ones(3)))"),
        ("md", "## Masking\n\nA boolean mask with `True` where a query may attend: here query 2 may not see key 3, "
               "so its weight on key 3 must be exactly 0."),
        ("code", "mask = torch.ones(3, 3, dtype=torch.bool)\n"
                 "mask[1, 2] = False\n"
                 "out, weights = scaled_dot_product_attention(queries, keys, values, mask)\n"
                 "print(weights[1], out[1])"),
        ("md", "## Tests against PyTorch\n\nYour attention function, single-head attention and multi-head "
               "self-attention against PyTorch's own on fixed inputs, with and without a causal mask."),
        ("code", PARITY_TESTS),
        ("md", "## Multi-head self-attention and the blocks\n\nShapes first: every module maps (B, T, D) to "
               "(B, T, D). Then the weights of each head for one sequence."),
        ("code", "x = torch.randn(2, 5, 16)\n"
                 "mhsa = MultiHeadSelfAttention(16, num_heads=4).eval()\n"
                 "out, weights = mhsa(x, return_attention=True)\n"
                 "print(out.shape, weights.shape)  # (2, 5, 16) and (2, 4, 5, 5)\n"
                 "print(blocks.SelfAttentionBlock(16, 32)(x).shape, blocks.TransformerBlock(16, 4, 32)(x).shape)"),
        ("code", "from matplotlib.figure import Figure\n\n"
                 "fig = Figure(figsize=(12, 3), layout='constrained')\n"
                 "for h, ax in enumerate(fig.subplots(1, 4)):\n"
                 "    ax.imshow(weights[0, h].detach(), cmap='viridis', vmin=0, vmax=1)\n"
                 "    ax.set(title=f'head {h + 1}', xlabel='key', ylabel='query', xticks=range(5), yticks=range(5))\n"
                 "fig"),
    ])


def _recipe_code(exercise: str, course: Any, device: bool) -> str:
    """The line(s) that take the recipe the grader trains ``exercise`` with: the kit's, or the
    course file's choice and budget (``grader.course.Course``)."""
    name, epochs = course.recipes.get(exercise, (None, None)) if course is not None else (None, None)
    where = ", DEVICE" if device and name is None else ""
    said = "  # on a CPU: the cifar10-cpu recipe" if where else "  # your course's recipe" if name else ""
    code = f"recipe = configs.get_recipe('{name or exercise}'{where}){said}\n"
    if epochs is not None:
        code += ("import dataclasses\n"
                 f"recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, epochs={epochs:g}))"
                 "  # your course's budget\n")
    return code


def _targets(exercise: str, course: Any) -> str:
    from reference.configs import RECIPES  # the kit's thresholds, unless the course sets its own

    levels = course.thresholds.get(exercise) if course is not None else None
    return ", ".join(f"{round(100 * t)}%" for t in (levels or RECIPES[exercise].thresholds))


def vit_notebook(course: Any = None) -> str:
    """The training notebook; with ``course`` (``grader.course.Course``), the recipes, budgets and
    thresholds that course grades with (the handout's), else the kit's."""
    return _notebook([
        ("md", "# Vision Transformer\n\n"
               "Implement `patchify` and `VisionTransformer` in `vit.py` (after `attention.py` and `blocks.py`), then "
               "train it. The model hyperparameters and the training recipe are fixed in `configs.py`: the grader "
               f"trains your model with exactly the recipes below. Points at these test accuracies: MNIST "
               f"{_targets('mnist', course)}; CIFAR-10 {_targets('cifar10', course)}. Data: set `DATA_DIR` below, or the environment variable `VITKIT_DATA`; "
               "`download=True` fetches the files when you have a network (needs torchvision). Each training stops "
               "at `TIME_LIMIT` seconds."),
        ("code", SETUP + "\n\nvit, configs, data = load(\"vit\"), load(\"configs\"), load(\"data\")\n"
                         "training, plotting = load(\"training\"), load(\"plotting\")\n\n"
                         "DATA_DIR = None  # e.g. '../data'; None: $VITKIT_DATA, else ./data\n"
                         "TIME_LIMIT = 20 * 60  # seconds of training per dataset\n"
                         "DEVICE = training.resolve_device('auto')\n"
                         "print(DEVICE)"),
        ("md", "## Patches\n\nA 4 x 4 image cut into 2 x 2 patches: 4 patches in row-major order, each flattened in "
               "(C, P, P) order."),
        ("code", "image = torch.arange(16.).reshape(1, 1, 4, 4)\n"
                 "print(image[0, 0])\n"
                 "print(vit.patchify(image, 2))  # (1, 4, 4)"),
        ("md", "## MNIST"),
        ("code", _recipe_code("mnist", course, device=False) +
                 "mnist = data.load_dataset('mnist', DATA_DIR)\n"
                 "model = recipe.model.build(vit.VisionTransformer)\n"
                 "print(f'{sum(p.numel() for p in model.parameters()):,} parameters')\n"
                 "history = training.train(model, mnist, recipe.train, device=DEVICE, time_limit=TIME_LIMIT, progress=True)\n"
                 "print(f'test accuracy: {100 * history.final_accuracy:.2f}% in {history.seconds:.0f} s')\n"
                 "torch.save(model.state_dict(), 'mnist.pt')  # the trained weights: submit them where the course grades them"),
        ("code", "plotting.plot_history(history, 'MNIST')"),
        ("md", "The attention of the first block for a random test image: where the class token looks."),
        ("code", "i = int(torch.randint(len(mnist.test_labels), ()))\n"
                 "plotting.plot_attention_map(model, mnist.normalized_test_image(i, DEVICE), mnist.mean, mnist.std,\n"
                 "                            f'MNIST test image {i}: attention of the first block')"),
        ("md", "## CIFAR-10\n\nA few minutes on a GPU. On a CPU, `get_recipe` gives the CPU recipe (a smaller "
               "model and a shorter schedule, the one the grader trains there): about 12 minutes on 2 cores."),
        ("code", _recipe_code("cifar10", course, device=True) +
                 "print(recipe.name, recipe.model)\n"
                 "cifar = data.load_dataset('cifar10', DATA_DIR)\n"
                 "model = recipe.model.build(vit.VisionTransformer)\n"
                 "history = training.train(model, cifar, recipe.train, device=DEVICE, time_limit=TIME_LIMIT, progress=True)\n"
                 "print(f'test accuracy: {100 * history.final_accuracy:.2f}% in {history.seconds:.0f} s')\n"
                 "torch.save(model.state_dict(), 'cifar10.pt')  # the trained weights: submit them where the course grades them"),
        ("code", "plotting.plot_history(history, 'CIFAR-10')"),
        ("code", "i = int(torch.randint(len(cifar.test_labels), ()))\n"
                 "plotting.plot_attention_map(model, cifar.normalized_test_image(i, DEVICE), cifar.mean, cifar.std,\n"
                 "                            f'CIFAR-10 test image {i}: attention of the first block')"),
    ])


NOTEBOOKS: dict[str, Callable[[], str]] = {
    "attention.ipynb": attention_notebook,
    "vision_transformer.ipynb": vit_notebook,
}
