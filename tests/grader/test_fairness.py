"""Correct means full marks, on every seed: correct solutions written differently from the
reference (einops, the tanh GELU, a LayerNorm written by hand with its own parameter names, a
LayerNorm with eps 1e-6 or 1e-12, projections in an nn.ModuleList behind properties, the class
token and positional embedding started from N(0, 1)) are graded over five seeds and must all get
identical, full scores. The handout's visible tests pass them too (test_agreement)."""
from __future__ import annotations

from pathlib import Path

import pytest

from grader.grade import GradeOptions, grade_submission

pytestmark = pytest.mark.integration  # the tier `make test-fast` leaves out (tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]
EXERCISES = ("attention.py", "blocks.py", "vit.py")
SEEDS = (0, 1, 2, 3, 4)

HAND_LAYER_NORM = '''

class HandLayerNorm(nn.Module):
    """LayerNorm written by hand, with its own names for the affine parameters."""

    def __init__(self, d: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(d))
        self.beta = nn.Parameter(torch.zeros(d))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(-1, keepdim=True)
        var = x.var(-1, keepdim=True, unbiased=False)
        return (x - mean) / torch.sqrt(var + self.eps) * self.gamma + self.beta
'''

# name -> {file: [(old, new), ...], ...}, appended text per file
VARIANTS: dict[str, tuple[dict[str, list[tuple[str, str]]], dict[str, str]]] = {
    "tanh_gelu": ({"blocks.py": [("self.act = nn.GELU()", 'self.act = nn.GELU(approximate="tanh")')]}, {}),
    "hand_layer_norm": ({"blocks.py": [
        ("from torch import Tensor, nn", "import torch\nfrom torch import Tensor, nn"),
        ("self.norm1 = nn.LayerNorm(d_model)", "self.norm1 = HandLayerNorm(d_model)"),
        ("self.norm2 = nn.LayerNorm(d_model)", "self.norm2 = HandLayerNorm(d_model)")]},
        {"blocks.py": HAND_LAYER_NORM}),
    "hand_layer_norm_in_the_vit": ({"vit.py": [
        ("from .blocks import TransformerBlock", "from .blocks import HandLayerNorm, TransformerBlock"),
        ("self.norm = nn.LayerNorm(d_model)", "self.norm = HandLayerNorm(d_model)")]},
        {"blocks.py": HAND_LAYER_NORM.replace("class HandLayerNorm", "import torch\n\n\nclass HandLayerNorm")}),
    # N(0, 1) starts, as some tutorials write (the grader's own training starts from the reference's)
    "tutorial_init": ({"vit.py": [
        ("torch.zeros(1, 1, d_model)", "torch.randn(1, 1, d_model)"),
        ("torch.randn(1, num_patches + 1, d_model) * 0.02", "torch.randn(1, num_patches + 1, d_model)")]}, {}),
    # a LayerNorm's eps as timm (1e-6) and Hugging Face (1e-12) write it, everywhere the interface has one
    "layer_norm_eps_timm": ({"blocks.py": [
        ("self.norm1 = nn.LayerNorm(d_model)", "self.norm1 = nn.LayerNorm(d_model, eps=1e-6)"),
        ("self.norm2 = nn.LayerNorm(d_model)", "self.norm2 = nn.LayerNorm(d_model, eps=1e-6)")],
        "vit.py": [("self.norm = nn.LayerNorm(d_model)", "self.norm = nn.LayerNorm(d_model, eps=1e-6)")]}, {}),
    "layer_norm_eps_hugging_face": ({"blocks.py": [
        ("self.norm1 = nn.LayerNorm(d_model)", "self.norm1 = nn.LayerNorm(d_model, eps=1e-12)"),
        ("self.norm2 = nn.LayerNorm(d_model)", "self.norm2 = nn.LayerNorm(d_model, eps=1e-12)")],
        "vit.py": [("self.norm = nn.LayerNorm(d_model)", "self.norm = nn.LayerNorm(d_model, eps=1e-12)")]}, {}),
    # the same eps in a LayerNorm of the student's own, with its own parameter names
    "hand_layer_norm_eps_timm": ({"blocks.py": [
        ("from torch import Tensor, nn", "import torch\nfrom torch import Tensor, nn"),
        ("self.norm1 = nn.LayerNorm(d_model)", "self.norm1 = HandLayerNorm(d_model, eps=1e-6)"),
        ("self.norm2 = nn.LayerNorm(d_model)", "self.norm2 = HandLayerNorm(d_model, eps=1e-6)")],
        "vit.py": [("from .blocks import TransformerBlock", "from .blocks import HandLayerNorm, TransformerBlock"),
                   ("self.norm = nn.LayerNorm(d_model)", "self.norm = HandLayerNorm(d_model, eps=1e-6)")]},
        {"blocks.py": HAND_LAYER_NORM}),
    # the Annotated Transformer's style: four clones in an nn.ModuleList, named by properties
    "projections_in_a_module_list": ({"attention.py": [
        ("        self.w_q = nn.Linear(d_model, d_model, bias=bias)\n        self.w_k = nn.Linear(d_model, d_model, bias=bias)\n"
         "        self.w_v = nn.Linear(d_model, d_model, bias=bias)\n        self.w_o = nn.Linear(d_model, d_model, bias=bias)\n",
         "        self.linears = nn.ModuleList(nn.Linear(d_model, d_model, bias=bias) for _ in range(4))\n"),
        ("    def forward(\n        self, x: Tensor, mask: Tensor | None = None, return_attention: bool = False\n",
         "    w_q = property(lambda self: self.linears[0])\n    w_k = property(lambda self: self.linears[1])\n"
         "    w_v = property(lambda self: self.linears[2])\n    w_o = property(lambda self: self.linears[3])\n\n"
         "    def forward(\n        self, x: Tensor, mask: Tensor | None = None, return_attention: bool = False\n")]}, {}),
    "einops": ({"vit.py": [
        ("import torch\n", "import torch\nfrom einops import rearrange\n"),
        ("    grid = images.reshape(B, C, H // P, P, W // P, P)  # (B, C, h, P, w, P)\n"
         "    grid = grid.permute(0, 2, 4, 1, 3, 5)  # (B, h, w, C, P, P)\n"
         "    return grid.reshape(B, (H // P) * (W // P), C * P * P)\n",
         '    return rearrange(images, "b c (h p1) (w p2) -> b (h w) (c p1 p2)", p1=P, p2=P)\n')]}, {}),
}


def variant(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    edits, appended = VARIANTS[name]
    for file in EXERCISES:
        text = (REPO / "reference" / file).read_text()
        for old, new in edits.get(file, []):
            assert text.count(old) == 1, f"{name}: the edit no longer applies to reference/{file}: {old!r}"
            text = text.replace(old, new)
        (folder / file).write_text(text + appended.get(file, ""))
    return folder


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_a_correct_solution_written_differently_gets_full_marks_on_every_seed(tmp_path: Path, name: str) -> None:
    folder = variant(tmp_path, name)
    scores = []
    for seed in SEEDS:
        grade = grade_submission(folder, tmp_path / f"work-{seed}", GradeOptions(training="none", seed=seed))
        lost = [(r.name, r.message.splitlines()[0] if r.message else "") for r in grade.results
                if not r.passed and not r.skipped]
        assert grade.score == grade.max_score > 0, (name, seed, lost)
        scores.append(grade.score)
    assert len(set(scores)) == 1
