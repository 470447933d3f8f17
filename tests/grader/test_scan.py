"""The static scan of the student's source: evasions of the run-time traps are found, honest code is clean."""
from __future__ import annotations

import ast
import textwrap
import warnings
from pathlib import Path

import pytest

from grader.integrity import ATTENTION, DYNAMIC, LIBRARY, REFERENCE
from grader.scan import NESTED_TOO_DEEPLY, scan_files, scan_source

from test_integrity import _expected  # the fixture's `# expect:` comments, read one way for both layers

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"
HONEST_FILES = sorted(
    [REPO / "reference" / name for name in ("attention.py", "blocks.py", "vit.py")]
    + list((REPO / "student_template").glob("*.py"))
    + list((FIXTURES / "good").glob("*.py"))
    + [FIXTURES / "alternative" / "solution.py"]
)

HONEST_MODULE = '''
"""Mentions torch.nn.functional.scaled_dot_product_attention and nn.MultiheadAttention in prose."""
from __future__ import annotations

import math
import re
import sys
from typing import Optional

import einops
import torch
import torch.nn.functional as F
from torch import nn

from . import attention
from .attention import MultiHeadSelfAttention, scaled_dot_product_attention
from attention import scaled_dot_product_attention as sdpa_sibling
from student_template.attention import scaled_dot_product_attention as sdpa_template

__all__ = ["scaled_dot_product_attention", "Model"]
torch.backends.cudnn.benchmark = True
PATTERN = re.compile(r"block(\\d+)")


class Model(nn.Module):
    """Like nn.TransformerEncoderLayer, but written by hand."""

    def __init__(self, d: int, depth: int, heads: int = 2) -> None:
        super().__init__()
        for i in range(depth):
            setattr(self, f"norm{i}", nn.LayerNorm(d))
        self.attention = MultiHeadSelfAttention(d, heads)
        self.proj = nn.Linear(d, d)
        self.act = nn.GELU()
        self.depth = depth
        nn.init.xavier_uniform_(self.proj.weight)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        for i in range(self.depth):
            x = getattr(self, f"norm{i}")(x)
        q = einops.rearrange(x, "b t (h d) -> b h t d", h=2)
        scores = torch.einsum("bhqd,bhkd->bhqk", q, q) / math.sqrt(q.shape[-1])
        out, _ = scaled_dot_product_attention(q, q, q, mask)
        out = attention.scaled_dot_product_attention(q, q, q)[0] + sdpa_sibling(q, q, q)[0] + sdpa_template(q, q, q)[0]
        layer = nn.Linear(3, 3)
        y = layer(F.gelu(self.proj(x))) + F.softmax(scores, dim=-1).sum() + torch.nn.functional.softmax(x, -1)
        print(f"scaled_dot_product_attention: {out.shape}", "scaled_dot_product_attention:", file=sys.stderr)
        return self.act(y) + self.attention(x) + x.softmax(-1)


def train(model: nn.Module, eval: bool = False, compile: bool = False) -> nn.Module:
    if compile:
        model = torch.compile(model)
    if eval:
        model.eval()
    dtype = getattr(torch, "float32")
    return model.to(dtype)
'''


@pytest.mark.parametrize("path", HONEST_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_honest_files_are_clean(path: Path) -> None:
    assert scan_source(path.read_text(), path.name) == []


def test_honest_module_with_einops_and_lookalike_names_is_clean() -> None:
    ast.parse(HONEST_MODULE)  # a module that does not parse would be "clean" for nothing
    assert scan_source(HONEST_MODULE, "vit.py") == []


EVASIONS = {
    "direct": ("import torch\nout = torch.nn.functional.scaled_dot_product_attention(q, k, v)\n",
               [("torch.nn.functional.scaled_dot_product_attention", 2)]),
    "module alias": ("import torch.nn.functional as G\nout = G.scaled_dot_product_attention(q, k, v)\n",
                     [("torch.nn.functional.scaled_dot_product_attention", 2)]),
    "from-import alias": ("from torch.nn.functional import scaled_dot_product_attention as sdpa\n\nout = sdpa(q, k, v)\n",
                          [("torch.nn.functional.scaled_dot_product_attention", 1),
                           ("torch.nn.functional.scaled_dot_product_attention", 3)]),
    "rebinding": ("import torch.nn.functional as F\nH = F\nout = H.scaled_dot_product_attention(q, k, v)\n",
                  [("torch.nn.functional.scaled_dot_product_attention", 3)]),
    "rebinding bound later": ("def f(q):\n    return H.scaled_dot_product_attention(q, q, q)\n\n\n"
                              "H = G\nfrom torch.nn import functional as G\n",
                              [("torch.nn.functional.scaled_dot_product_attention", 2)]),
    "getattr": ('import torch.nn.functional as F\nfn = getattr(F, "scaled_dot_product_attention")\n',
                [("torch.nn.functional.scaled_dot_product_attention", 2)]),
    "getattr folded": ('import torch.nn.functional as F\nfn = getattr(F, "scaled_" + "dot_product_attention")\n',
                       [("torch.nn.functional.scaled_dot_product_attention", 2)]),
    "getattr computed": ("import torch.nn.functional as F\nname = input()\nfn = getattr(F, name)\n",
                         [("getattr(torch.nn.functional)", 3)]),
    "getattr on anything": ('fn = getattr(thing, "scaled_dot_product_attention")\n',
                            [("scaled_dot_product_attention", 1)]),
    "getattr class name": ('from torch import nn\nm = getattr(nn, f"Multihead{\'Attention\'}")(8, 2)\n',
                           [("torch.nn.MultiheadAttention", 2)]),
    "torch.ops": ("import torch\nout = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)\n",
                  [("torch.ops", 2), ("torch.ops.aten._scaled_dot_product_flash_attention_for_cpu", 2)]),
    "torch._C": ("import torch\nout = torch._C._nn.scaled_dot_product_attention(q, k, v)\n",
                 [("torch._C._nn.scaled_dot_product_attention", 2), ("torch._C", 2)]),
    "nn.MultiheadAttention": ("from torch import nn\nmha = nn.MultiheadAttention(8, 2)\n",
                              [("torch.nn.MultiheadAttention", 2)]),
    "TransformerEncoderLayer": ("import torch\nlayer = torch.nn.TransformerEncoderLayer(8, 2)\ny = layer(x)\n",
                                [("torch.nn.TransformerEncoderLayer", 2), ("torch.nn.TransformerEncoderLayer.forward", 3)]),
    "modules path": ("import torch.nn.modules.activation as act\nmha = act.MultiheadAttention(8, 2)\n",
                     [("torch.nn.modules.activation.MultiheadAttention", 2)]),
    "star import": ("from torch.nn import *\nmha = MultiheadAttention(8, 2)\n", [("torch.nn.MultiheadAttention", 2)]),
    "subclass": ("from torch import nn\n\n\nclass Mine(nn.MultiheadAttention):\n    pass\n",
                 [("torch.nn.MultiheadAttention", 4)]),
    "unknown base": ("mha = lib.MultiheadAttention(8, 2)\n", [("MultiheadAttention", 1)]),
    "flex attention": ("from torch.nn.attention.flex_attention import flex_attention\n", [("torch.nn.attention", 1)]),
    "__wrapped__": ("import torch.nn.functional as F\nraw = F.scaled_dot_product_attention.__wrapped__\n",
                    [("__wrapped__", 2), ("torch.nn.functional.scaled_dot_product_attention", 2)]),
    "exec": ("exec('out = F.scaled_dot_product_attention(q, k, v)')\n", [("exec", 1)]),
    "eval": ("out = eval('F.scaled_dot_product_attention')(q, k, v)\n", [("eval", 1)]),
    "compile": ("code = compile(source, 'mine.py', 'exec')\n", [("compile", 1)]),
    "exec passed around": ("run = exec\nrun(source)\n", [("exec", 1), ("exec", 2)]),
    "builtins.exec": ("import builtins\nbuiltins.exec(source)\n", [("exec", 2)]),
    "__import__": ('ref = __import__("reference")\n', [("__import__", 1), ("import reference", 1)]),
    "import_module": ('import importlib\nref = importlib.import_module("reference.attention")\n',
                      [("import reference", 2)]),
    "import_module computed": ("import importlib\nmod = importlib.import_module(name)\n",
                               [("importlib.import_module", 2)]),
    "import_module of torch": ('import importlib\nG = importlib.import_module("torch.nn.functional")\n'
                               "out = G.scaled_dot_product_attention(q, k, v)\n",
                               [("torch.nn.functional.scaled_dot_product_attention", 3)]),
    "import reference": ("import reference\n", [("import reference", 1)]),
    "import reference submodule": ("import reference.attention as ra\n", [("import reference", 1)]),
    "from reference": ("from reference.vit import patchify\n", [("import reference", 1)]),
    "from grader": ("from grader import probes\n", [("import grader", 1)]),
    "from course": ("from course.template import clear_solutions\n", [("import course", 1)]),
    "the runner in the jail": ("import vitkit_child.probes as p\n", [("import vitkit_child", 1)]),
    "popping the observer": ("import torch.overrides\ntorch.overrides._pop_mode()\n", [("torch.overrides", 2)]),
    "import timm": ("import timm\n", [("import timm", 1)]),
    "import_module timm": ('import importlib\ntimm = importlib.import_module("timm")\n', [("import timm", 2)]),
    "sys.modules": ('import sys\nF = sys.modules["torch.nn.functional"]\nout = F.scaled_dot_product_attention(q, k, v)\n',
                    [("sys.modules", 2), ("torch.nn.functional.scaled_dot_product_attention", 3)]),
    "sys.meta_path": ("import sys\nsys.meta_path.clear()\n", [("sys.meta_path", 2)]),
    "frames": ("import sys\ng = sys._getframe(1).f_back.f_globals\n",
               [("sys._getframe", 2), ("f_back", 2), ("f_globals", 2)]),
    "inspect frames": ("import inspect\nframe = inspect.currentframe()\n", [("inspect.currentframe", 2)]),
    "__builtins__": ('run = __builtins__["exec"]\n', [("__builtins__", 1)]),
    "patching torch": ("import torch.nn.functional as F\nF.scaled_dot_product_attention = mine\n",
                       [(DYNAMIC, 2)]),
    "patching torch deeply": ("import torch\ntorch.nn.functional.softmax = mine\n",
                              [("assignment to torch.nn.functional.softmax", 2)]),
    "setattr on torch": ('import torch.nn.functional as F\nsetattr(F, "softmax", mine)\n',
                         [("setattr(torch.nn.functional)", 2)]),
    "setattr on a torch class": ('import torch\nsetattr(torch.nn.MultiheadAttention, "forward", mine)\n',
                                 [("setattr(torch.nn.MultiheadAttention)", 2)]),
    "vars of torch": ('import torch.nn.functional as F\nfn = vars(F)[name]\n', [("vars(torch.nn.functional)", 2)]),
    "library model": ("from torchvision.models import vit_b_16\n", [(LIBRARY, 1)]),
    "a list subscript and a reversed name": (
        'import torch\nf = getattr([torch][0].nn.functional, "noitnetta_tcudorp_tod_delacs"[::-1])\n',
        [("torch.nn.functional.scaled_dot_product_attention", 2)]),
    "a name joined in reverse": (
        'import torch.nn.functional as F\nf = getattr(F, "".join(reversed("noitnetta_tcudorp_tod_delacs")))\n',
        [("torch.nn.functional.scaled_dot_product_attention", 2)]),
    "a dict literal": ('import torch.nn.functional as F\nf = {"k": F}["k"].scaled_dot_product_attention\n',
                       [("torch.nn.functional.scaled_dot_product_attention", 2)]),
}


@pytest.mark.parametrize("source, expected", EVASIONS.values(), ids=EVASIONS.keys())
def test_evasions_are_found(source: str, expected: list[tuple[str, int]]) -> None:
    found = scan_source(source, "attention.py")
    by_api = {(c.api, c.line) for c in found}
    by_category = {(c.category, c.line) for c in found}
    for what, line in expected:
        assert (what, line) in by_api | by_category, found


@pytest.mark.parametrize("api, category", [
    ("torch.nn.functional.scaled_dot_product_attention", ATTENTION), ("import timm", LIBRARY),
    ("import reference", REFERENCE), ("exec", DYNAMIC),
])
def test_findings_have_their_category(api: str, category: str) -> None:
    source = ("import timm, reference, torch\n"
              "exec(torch.nn.functional.scaled_dot_product_attention)\n")
    assert {c.api: c.category for c in scan_source(source, "vit.py")}[api] == category


def test_a_use_in_a_method_is_charged_to_its_class() -> None:
    source = textwrap.dedent("""\
        from torch import nn
        import torch.nn.functional as F


        class MultiHeadSelfAttention(nn.Module):
            def __init__(self, d, h):
                super().__init__()
                self.mha = nn.MultiheadAttention(d, h)

            def forward(self, x):
                def helper(y):
                    return F.scaled_dot_product_attention(y, y, y)
                return helper(x) + self.mha(x, x, x)[0]
        """)
    found = {(c.api, c.line): c for c in scan_source(source, "attention.py")}
    inner = found["torch.nn.functional.scaled_dot_product_attention", 12]
    assert (inner.student_file, inner.function, inner.component_hint) == (
        "attention.py", "MultiHeadSelfAttention.forward.<locals>.helper", "MultiHeadSelfAttention")
    forward = found["torch.nn.MultiheadAttention.forward", 13]
    assert (forward.function, forward.component_hint, forward.category) == (
        "MultiHeadSelfAttention.forward", "MultiHeadSelfAttention", ATTENTION)
    assert found["torch.nn.MultiheadAttention", 8].function == "MultiHeadSelfAttention.__init__"


def test_top_level_uses_are_in_module() -> None:
    [call] = scan_source("import timm\n", "vit.py")
    assert (call.function, call.component_hint) == ("<module>", "<module>")


def test_every_expected_use_in_the_cheater_fixture_is_found() -> None:
    folder = FIXTURES / "cheater"
    files = {path.name: path.read_text() for path in sorted(folder.glob("*.py"))}
    found = {(c.api, c.student_file, c.line) for c in scan_files(files)}
    expected = {e for e in _expected(folder) if "conv2d" not in e[0].lower()}  # convolutions are not scanned
    assert expected and expected <= found


def test_findings_are_deduplicated_and_in_file_and_line_order() -> None:
    source = ("import torch.nn.functional as F\n"
              "out = F.scaled_dot_product_attention(F.scaled_dot_product_attention(q, k, v), k, v)\n"
              "import timm\n")
    found = scan_files({"vit.py": source, "attention.py": source})
    assert [(c.student_file, c.line, c.api) for c in found] == [
        ("attention.py", 2, "torch.nn.functional.scaled_dot_product_attention"),
        ("attention.py", 3, "import timm"),
        ("vit.py", 2, "torch.nn.functional.scaled_dot_product_attention"),
        ("vit.py", 3, "import timm"),
    ]


def test_a_file_that_does_not_parse_gives_nothing() -> None:
    assert scan_source("import timm\ndef broken(:\n", "vit.py") == []


def test_a_file_too_deep_to_scan_is_reported_not_skipped() -> None:
    source = "import torch.nn.functional as F\nx = " + " + ".join(["q"] * 2000) + "\n"
    [call] = scan_source(source, "vit.py")
    assert (call.api, call.category) == (NESTED_TOO_DEEPLY, DYNAMIC)


def test_warnings_as_errors_do_not_make_a_file_unparsable() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = scan_source('pattern = "\\d+"\nimport timm\n', "vit.py")
    assert [(c.api, c.line) for c in found] == [("import timm", 2)]


def test_self_rebinding_neither_explodes_nor_hides_torch() -> None:
    growing = "".join(f"    device = device.a{i}\n    device = device.b{i}\n" for i in range(8))
    decoys = "".join(f"F = torch.x{i}\n" for i in range(100))
    source = (f"import torch\ndevice = torch.device\n\n\ndef f(device):\n{growing}    return device\n\n\n"
              f"{decoys}F = torch.nn.functional\nout = F.scaled_dot_product_attention(q, k, v)\n")
    found = scan_source(source, "attention.py")
    assert [(c.api, c.line) for c in found] == [
        ("torch.nn.functional.scaled_dot_product_attention", source.count("\n"))]


def test_the_grader_never_parses_in_two_threads_at_once(monkeypatch) -> None:
    """CPython 3.11 fails under load when two threads build ASTs at once ("AST constructor
    recursion depth mismatch"): the scan and the notebook reader parse one at a time."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from grader.submission import extract_notebook

    inside, most, lock = 0, 0, threading.Lock()
    real = ast.parse

    def watched(*args, **kwargs):
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        time.sleep(0.02)  # long enough for another thread to come in, were it let in
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                inside -= 1

    notebook = '{"cells": [{"cell_type": "code", "id": "c1", "source": "def f():\\n    return 1\\n", "metadata": {}, ' \
               '"outputs": [], "execution_count": null}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
    jobs = [lambda: scan_source("import torch\nx = 1\n", "a.py"), lambda: extract_notebook(notebook)] * 4
    for job in jobs[:2]:  # once here first: what they import lazily (and parses on import) is loaded
        job()
    monkeypatch.setattr(ast, "parse", watched)
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda job: job(), jobs))
    assert most == 1
