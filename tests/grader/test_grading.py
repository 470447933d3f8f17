"""The grader end to end: the reference gets full marks, the template 0, and every broken
submission of the corpus loses points in exactly its component and nowhere else."""
from __future__ import annotations

import json
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from grader.__main__ import main as grader_main
from grader.checks import CHECKS, TEST_CHECKS
from grader.grade import GradeOptions, grade_submission

pytestmark = pytest.mark.integration  # the tier `make test-fast` leaves out (tests/conftest.py)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import make_cifar_npz_dir, make_mnist_dir  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
EXERCISE_FILES = ("attention.py", "blocks.py", "vit.py")
ALL = {"attention", "multihead", "feedforward", "residual_block", "transformer_block", "patchify", "vit"}

POST_NORM = '''        attended, weights = self.attention(x, mask, return_attention=True)
        x = self.norm1(x + self.dropout1(attended))
        x = self.norm2(x + self.dropout2(self.mlp(x)))
        return (x, weights) if return_attention else x'''
PRE_NORM = '''        attended, weights = self.attention(self.norm1(x), mask, return_attention=True)
        x = x + self.dropout1(attended)
        x = x + self.dropout2(self.mlp(self.norm2(x)))
        return (x, weights) if return_attention else x'''
SDPA_LINE = "        out, weights = scaled_dot_product_attention(q, k, v, mask)  # (B, h, T, D/h), (B, h, T, T)"
SCALED_BY_D_MODEL = '''        scores = q @ k.transpose(-2, -1) / math.sqrt(D)  # (B, h, T, T): d_model where d_head belongs
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = scores.softmax(dim=-1)
        out = weights @ v  # (B, h, T, D/h)'''
NORM_ON_BRANCH = '''        attended, weights = self.attention(x, mask, return_attention=True)
        x = x + self.dropout1(self.norm1(attended))
        x = x + self.dropout2(self.norm2(self.mlp(x)))
        return (x, weights) if return_attention else x'''
PATCH_ORDER = "grid.permute(0, 2, 4, 1, 3, 5)"
CNN = '''    def forward(self, images: Tensor) -> Tensor:
        """CNN"""
        if not hasattr(self, "cnn"):
            self.cnn = nn.Sequential(nn.Conv2d(images.size(1), 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                     nn.Linear(8, self.head.out_features))
        return self.cnn(images)

    def unused_forward(self, images: Tensor) -> Tensor:'''

FUSED_QKV = ("        self.w_q = nn.Linear(d_model, d_model, bias=bias)\n        self.w_k = nn.Linear(d_model, d_model, bias=bias)\n"
             "        self.w_v = nn.Linear(d_model, d_model, bias=bias)\n",
             "        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)\n")
FUSED_SPLIT = ("        q, k, v = split_heads(self.w_q(x)), split_heads(self.w_k(x)), split_heads(self.w_v(x))\n",
               "        q, k, v = (split_heads(t) for t in self.qkv(x).chunk(3, dim=-1))\n")
CONV_EMBEDDING = ("self.embedding = nn.Linear(in_channels * patch_size * patch_size, d_model)",
                  "self.embedding = nn.Conv2d(in_channels, d_model, patch_size, stride=patch_size)")
CONV_TOKENS = ("x = self.embedding(patchify(images, self.patch_size))  # (B, N, D)",
               "x = self.embedding(images).flatten(2).transpose(1, 2)  # (B, N, D)")

# name -> (file, [(old, new), ...], the one component that must lose points)
CORPUS: dict[str, tuple[str, list[tuple[str, str]], str]] = {
    "missing_scale": ("attention.py", [(" / math.sqrt(q.size(-1))", "")], "attention"),
    "softmax_wrong_axis": ("attention.py", [("scores.softmax(dim=-1)", "scores.softmax(dim=-2)")], "attention"),
    "scale_by_d": ("attention.py", [(" / math.sqrt(q.size(-1))", " / q.size(-1)")], "attention"),
    "naive_softmax": ("attention.py", [("weights = scores.softmax(dim=-1)  #", "weights = scores.exp() / scores.exp().sum(-1, keepdim=True)  #")],
                      "attention"),
    "inverted_mask": ("attention.py", [("scores.masked_fill(~mask, float(\"-inf\"))", "scores.masked_fill(mask, float(\"-inf\"))")], "attention"),
    "output_not_weights_at_v": ("attention.py", [("return weights @ v, weights  #", "return scores @ v, weights  #")], "attention"),
    "mask_ignored": ("attention.py", [("        scores = scores.masked_fill(~mask, float(\"-inf\"))\n", "        pass\n")], "attention"),
    "output_dtype_not_followed": ("attention.py", [("return weights @ v, weights  #", "return (weights @ v).float(), weights.float()  #")], "attention"),
    "single_head_bias": ("attention.py", [("self.w_q = nn.Linear(d_model, d_model, bias=False)", "self.w_q = nn.Linear(d_model, d_model)")], "attention"),
    "wrong_head_split": ("attention.py", [("t.view(B, T, h, D // h).transpose(1, 2)", "t.reshape(B, h, T, D // h)")], "multihead"),
    "no_output_projection": ("attention.py", [("        out = self.w_o(out)\n", "")], "multihead"),
    "scale_by_d_model": ("attention.py", [(SDPA_LINE, SCALED_BY_D_MODEL)], "multihead"),
    "multihead_mask_not_passed": ("attention.py", [(SDPA_LINE, SDPA_LINE.replace("(q, k, v, mask)", "(q, k, v)"))], "multihead"),
    "mask_filled_with_zero": ("attention.py", [("scores.masked_fill(~mask, float(\"-inf\"))", "scores.masked_fill(~mask, 0.0)")],
                              "attention"),
    "no_value_error": ("attention.py", [("            raise ValueError(f\"d_model={d_model} must be divisible by num_heads={num_heads}\")",
                                         "            pass")], "multihead"),
    "no_attention_dropout": ("attention.py", [("self.dropout = nn.Dropout(dropout)", "self.dropout = nn.Dropout(0.0)")], "multihead"),
    "forbidden_sdpa": ("attention.py", [(SDPA_LINE, SDPA_LINE + "\n        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)")], "multihead"),
    "relu_mlp": ("blocks.py", [("self.act = nn.GELU()", "self.act = nn.ReLU()")], "feedforward"),
    "no_residual": ("blocks.py", [("x = x + self.attention(x, x, x, mask)", "x = self.attention(x, x, x, mask)")], "residual_block"),
    "residual_block_foreign_parts": ("blocks.py", [("self.mlp = FeedForwardBlock(d_model, d_hidden)\n", "self.mlp = nn.Sequential(nn.Linear(d_model, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_model))\n")], "residual_block"),
    "post_norm": ("blocks.py", [(PRE_NORM, POST_NORM)], "transformer_block"),
    "mlp_sees_block_input": ("blocks.py", [("        x = x + self.attention(x, x, x, mask)\n        x = x + self.mlp(x)\n",
                                            "        x = x + self.attention(x, x, x, mask) + self.mlp(x)\n")], "residual_block"),
    "norm_on_branch_output": ("blocks.py", [(PRE_NORM, NORM_ON_BRANCH)], "transformer_block"),
    "no_mlp_residual": ("blocks.py", [("x = x + self.dropout2(self.mlp(self.norm2(x)))", "x = self.dropout2(self.mlp(self.norm2(x)))")],
                        "transformer_block"),
    "norm_is_not_layer_norm": ("blocks.py", [("self.norm1 = nn.LayerNorm(d_model)", "self.norm1 = nn.Identity()")], "transformer_block"),
    "rms_norm": ("blocks.py", [("self.norm2 = nn.LayerNorm(d_model)", "self.norm2 = nn.RMSNorm(d_model)")], "transformer_block"),
    "forbidden_torch_layer": ("blocks.py", [("self.attention = MultiHeadSelfAttention(d_model, num_heads, dropout)",
                                             "self.attention = MultiHeadSelfAttention(d_model, num_heads, dropout)\n        self.torch_layer = nn.TransformerEncoderLayer(d_model, num_heads, d_hidden, batch_first=True)"),
                                            ("        attended, weights = self.attention(self.norm1(x), mask, return_attention=True)\n",
                                             "        attended, weights = self.attention(self.norm1(x), mask, return_attention=True)\n        self.torch_layer(x)\n")], "transformer_block"),
    "no_block_dropout": ("blocks.py", [("        self.dropout1 = nn.Dropout(dropout)", "        self.dropout1 = nn.Dropout(0.0)"),
                                       ("        self.dropout2 = nn.Dropout(dropout)", "        self.dropout2 = nn.Dropout(0.0)"),
                                       ("MultiHeadSelfAttention(d_model, num_heads, dropout)", "MultiHeadSelfAttention(d_model, num_heads, 0.0)"),
                                       ("FeedForwardBlock(d_model, d_hidden, dropout)", "FeedForwardBlock(d_model, d_hidden, 0.0)")], "transformer_block"),
    "patchify_ppc_order": ("vit.py", [("grid.permute(0, 2, 4, 1, 3, 5)", "grid.permute(0, 2, 4, 3, 5, 1)")], "patchify"),
    "patchify_column_major": ("vit.py", [(PATCH_ORDER, "grid.permute(0, 4, 2, 1, 3, 5)")], "patchify"),
    "patchify_transposed_patches": ("vit.py", [(PATCH_ORDER, "grid.permute(0, 2, 4, 1, 5, 3)")], "patchify"),
    "patchify_no_value_error": ("vit.py", [("    if P < 1 or H % P or W % P:\n        raise ValueError", "    if False:\n        raise ValueError")], "patchify"),
    "huge_allocation": ("vit.py", [("    grid = images.reshape(B, C, H // P, P, W // P, P)",
                                    "    if H != W:\n        torch.empty(10 ** 12)\n    grid = images.reshape(B, C, H // P, P, W // P, P)")], "patchify"),
    "cnn_instead_of_blocks": ("vit.py", [("    def forward(self, images: Tensor) -> Tensor:", CNN)], "vit"),
    "vit_norm_is_not_layer_norm": ("vit.py", [("self.norm = nn.LayerNorm(d_model)", "self.norm = nn.Identity()")], "vit"),
    "head_reads_mean": ("vit.py", [("return self.head(self.norm(x[:, 0]))", "return self.head(self.norm(x.mean(1)))")], "vit"),
    "class_token_appended": ("vit.py", [("torch.cat([cls, x], dim=1)", "torch.cat([x, cls], dim=1)")], "vit"),
    "class_token_read_last": ("vit.py", [("return self.head(self.norm(x[:, 0]))", "return self.head(self.norm(x[:, -1]))")], "vit"),
    "class_token_without_gradient": ("vit.py", [("cls = self.class_token.expand(", "cls = self.class_token.detach().expand(")], "vit"),
    "one_attention_map": ("vit.py", [("        return maps\n", "        return maps[:1]\n")], "vit"),
    "attention_weights_none": ("attention.py", [("        return (out, weights) if return_attention else out\n        # END SOLUTION\n\n\nclass MultiHeadSelfAttention",
                                                "        return (out, None) if return_attention else out\n        # END SOLUTION\n\n\nclass MultiHeadSelfAttention")], "attention"),
    # Other interfaces than the kit's: refused, saying which attribute the interface has.
    "fused_qkv_projection": ("attention.py", [FUSED_QKV, FUSED_SPLIT], "multihead"),
    "conv2d_patch_embedding": ("vit.py", [CONV_EMBEDDING, CONV_TOKENS], "vit"),
    # the positional embedding added after the blocks: a wrong forward, yet a transformer (it is trained)
    "pos_embedding_after_blocks": ("vit.py", [("x = torch.cat([cls, x], dim=1) + self.pos_embedding  #", "x = torch.cat([cls, x], dim=1)  #"),
                                              ("x = self.blocks(self.tokens(images))  #", "x = self.blocks(self.tokens(images)) + self.pos_embedding  #")],
                                   "vit"),
    "nan_output": ("vit.py", [("return self.head(self.norm(x[:, 0]))", "return self.head(self.norm(x[:, 0])) * float(\"nan\")")], "vit"),
}
# Breakages of a whole module: the components defined in it (and those that import it) fail.
IMPORT_BREAKAGES: dict[str, tuple[str, str, set[str]]] = {
    "hang_at_import": ("vit.py", "import time\nwhile True:\n    time.sleep(0.1)\n", {"patchify", "vit"}),
    "crash_at_import": ("vit.py", "import os\nos._exit(3)\n", {"patchify", "vit"}),
    # vit.py imports blocks.py, so patchify goes down with it.
    "syntax_error": ("blocks.py", "def broken(:\n", ALL - {"attention", "multihead"}),
    "exception_at_import": ("blocks.py", "raise RuntimeError('training at import time')\n", ALL - {"attention", "multihead"}),
}


def make_submission(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    for f in EXERCISE_FILES:
        shutil.copy(REPO / "reference" / f, folder / f)
    if name in CORPUS:
        file, edits, _ = CORPUS[name]
        text = (folder / file).read_text()
        for old, new in edits:
            assert text.count(old) == 1, f"{name}: the mutation no longer applies to reference/{file}: {old!r}"
            text = text.replace(old, new)
        (folder / file).write_text(text)
    else:
        file, prefix, _ = IMPORT_BREAKAGES[name]
        path = folder / file
        path.write_text(prefix + path.read_text())
    return folder


OPTIONS = GradeOptions(training="none", call_seconds=5.0)


@pytest.fixture(scope="module")
def grades(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    names = ["reference", "template", *CORPUS, *IMPORT_BREAKAGES]

    def grade(name: str):
        path = {"reference": REPO / "reference", "template": REPO / "student_template"}.get(name)
        path = path or make_submission(root / "src", name)
        return name, grade_submission(path, root / "work" / name, OPTIONS)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(grade, names))


def failed_components(grade) -> set[str]:
    return {r.component for r in grade.results if not r.passed and not r.skipped}


def test_reference_gets_full_marks(grades):
    grade = grades["reference"]
    assert failed_components(grade) == set()
    assert grade.score == grade.max_score > 0


def test_unfilled_template_gets_zero_without_a_crash(grades):
    grade = grades["template"]
    assert grade.score == 0 and failed_components(grade) == ALL
    for component in ALL:
        assert any("not implemented yet" in r.message for r in grade.results if r.component == component)


@pytest.mark.parametrize("name", list(CORPUS))
def test_broken_submission_loses_points_in_its_component_only(grades, name):
    expected = CORPUS[name][2]
    assert failed_components(grades[name]) == {expected}
    assert grades[name].score < grades["reference"].score


@pytest.mark.parametrize("name", list(IMPORT_BREAKAGES))
def test_broken_module_costs_what_it_defines(grades, name):
    grade = grades[name]
    assert failed_components(grade) == IMPORT_BREAKAGES[name][2]
    assert any(name.split("_")[0] in note.lower() or "import" in note.lower() or "syntax" in note.lower()
               for note in grade.notes), grade.notes


def test_every_check_is_caught_by_some_broken_submission(grades):
    caught = {r.name for name, g in grades.items() if name not in ("reference", "template")
              for r in g.results if not r.passed and not r.skipped}
    assert set(TEST_CHECKS) - caught == set()


def test_messages_say_what_was_found(grades):
    forbidden = [r.message for r in grades["forbidden_sdpa"].results if not r.passed and not r.skipped]
    assert all("scaled_dot_product_attention at attention.py" in m for m in forbidden)
    assert any("memory" in r.message.lower() for r in grades["huge_allocation"].results if not r.passed)
    assert any("NaN" in r.message for r in grades["nan_output"].results if not r.passed)



# another interface -> what each of its failed checks must say
REFUSED = {"fused_qkv_projection": "`self.w_q = nn.Linear(",
           "conv2d_patch_embedding": "the interface's patch embedding"}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_another_interface_is_refused_naming_the_interfaces_attribute(grades, name):
    failed = [r.message for r in grades[name].results if not r.passed and not r.skipped]
    assert failed and all(REFUSED[name] in m or "parameters not found where the interface puts them" in m for m in failed), failed
    assert any(REFUSED[name] in m for m in failed) and not any("Sizes of tensors" in m for m in failed), failed


# the mistake -> the cause the attention checks must name
CAUSES = {"missing_scale": "the scores are not scaled; divide them by sqrt(d_k)",
          "scale_by_d": "the scores are divided by d_k; divide them by sqrt(d_k)",
          "softmax_wrong_axis": "the softmax is taken over the queries (dim -2)",
          "inverted_mask": "the mask is inverted: True means 'may attend'",
          "output_not_weights_at_v": "the weights are right but the output is not weights @ v",
          "naive_softmax": "subtract the row maximum before exp",
          "mask_ignored": "the mask is ignored: set the scores where the mask is False to -inf",
          "mask_filled_with_zero": "the masked scores are set to 0 instead of -inf"}


@pytest.mark.parametrize("name", sorted(CAUSES))
def test_the_commonest_attention_mistakes_are_named(grades, name):
    messages = [r.message for r in grades[name].results if r.component == "attention" and not r.passed]
    assert any(CAUSES[name] in m for m in messages), messages


# a mistake past the attention function -> its component, and the cause each failed check of it must name
NAMED = {"scale_by_d_model": ("multihead", "the scores are divided by sqrt(d_model); each head's scores are divided by sqrt(d_head)"),
         "wrong_head_split": ("multihead", "your heads are split with reshape only: (B, T, d_model) -> (B, T, heads, d_head) "
                                           "must then be transposed to (B, heads, T, d_head)"),
         "no_output_projection": ("multihead", "W^O is never applied"),
         "multihead_mask_not_passed": ("multihead", "the mask is not applied: pass it to the attention function"),
         "norm_on_branch_output": ("transformer_block", "the LayerNorms are applied to the branches' outputs (x + norm(f(x)))"),
         "class_token_appended": ("vit", "the class token is appended at the end of the tokens; prepend it"),
         "class_token_read_last": ("vit", "the head reads the last position; the class token is at position 0"),
         "pos_embedding_after_blocks": ("vit", "the positional embedding is added after the blocks"),
         "patchify_column_major": ("patchify", "the patches are in column-major order"),
         "patchify_transposed_patches": ("patchify", "each patch is transposed"),
         "patchify_ppc_order": ("patchify", "each patch is flattened in (P, P, C) order"),
         # a wrong composite: the update it computes instead
         "no_residual": ("residual_block", "the attention branch has no residual connection"),
         "mlp_sees_block_input": ("residual_block", "the MLP is applied to the block's input"),
         "post_norm": ("transformer_block", "the norms come after the residual additions (post-norm)"),
         "no_mlp_residual": ("transformer_block", "the MLP branch has no residual connection")}


@pytest.mark.parametrize("name", sorted(NAMED))
def test_the_usual_mistakes_past_the_attention_function_are_named(grades, name):
    component, cause = NAMED[name]
    messages = [r.message for r in grades[name].results if r.component == component and not r.passed]
    assert any(m.startswith(cause) for m in messages), messages


@pytest.mark.parametrize("name", ["scale_by_d_model", "wrong_head_split", "no_output_projection"])
def test_a_multi_head_mistake_costs_what_multi_head_is_worth(grades, name):
    """The head split, each head's scale and W^O are 2 of the component's 5 points: one head sees none of them."""
    lost = {r.name for r in grades[name].results if not r.passed and not r.skipped}
    assert lost == {"multihead:many_heads"}, lost
    assert grades["reference"].score - grades[name].score == CHECKS["multihead:many_heads"].points == 2


def test_an_import_failure_is_named_on_every_check_of_the_module(grades):
    files = {"feedforward": "blocks.py", "residual_block": "blocks.py", "transformer_block": "blocks.py",
             "patchify": "vit.py", "vit": "vit.py"}
    for name in ("syntax_error", "exception_at_import", "hang_at_import"):
        failed = [r for r in grades[name].results if not r.passed and not r.skipped]
        broken = IMPORT_BREAKAGES[name][0]
        assert {r.component for r in failed} == IMPORT_BREAKAGES[name][2]
        for r in failed:  # vit.py imports blocks.py: its message names the file that broke
            assert r.message.startswith(f"{files[r.component]} could not be imported") and broken in r.message, r.message


def test_a_difference_is_reported_where_it_breaks_the_tolerance():
    from grader.checklib import CheckFailed, compare

    expected = torch.tensor([100.0, 0.0])
    with pytest.raises(CheckFailed) as failed:
        compare(torch.tensor([100.005, 0.001]), expected, "out")  # 0.005 is inside 1e-4 + 1e-4 x 100, 0.001 is not
    assert "at index (1,)" in str(failed.value) and "tolerance 0.0001" in str(failed.value)


def test_same_seed_same_verdicts(grades, tmp_path):
    again = grade_submission(make_submission(tmp_path / "src", "missing_scale"), tmp_path / "work", OPTIONS)
    assert [(r.name, r.passed, r.message) for r in again.results] == \
           [(r.name, r.passed, r.message) for r in grades["missing_scale"].results]


def test_cli_writes_gradescope_results_and_report(tmp_path, capsys):
    assert grader_main([str(REPO / "reference"), "--out", str(tmp_path), "--training", "none"]) == 0
    results = json.loads((tmp_path / "reference" / "results.json").read_text())
    assert results["score"] == results["extra_data"]["max_score"] > 0
    for test in results["tests"]:
        assert {"name", "score", "max_score", "status", "output", "visibility"} <= set(test)
    html = (tmp_path / "reference" / "report.html").read_text()
    assert "attention:function_mask" in html and "<script" not in html
    assert "reference:" in capsys.readouterr().out


def test_cli_bad_path_is_a_clear_error(tmp_path, capsys):
    assert grader_main([str(tmp_path / "missing"), "--out", str(tmp_path), "--training", "none"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err


def test_cli_unknown_device_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        grader_main([str(REPO / "reference"), "--out", str(tmp_path), "--device", "gpu"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "unknown device 'gpu': use auto, cpu or cuda" in err
    assert not (tmp_path / "reference").exists()


def test_cli_says_which_recipe_cifar10_trains_on_the_cpu_and_for_how_long(tmp_path, capsys):
    data = make_cifar_npz_dir(make_mnist_dir(tmp_path / "data", 64, 16), 32, 16)
    assert grader_main([str(REPO / "reference"), "--out", str(tmp_path / "out"), "--training", "all", "--device", "cpu",
                        "--data-dir", str(data), "--time-limit", "0"]) == 0
    err = capsys.readouterr().err
    assert "note: CIFAR-10 on the CPU trains the cifar10-cpu recipe" in err and "it stops after 0 s" in err


def test_training_without_its_data_is_an_error_naming_every_path(tmp_path, capsys):
    """Not a quietly smaller maximum: nothing is graded, the exit status says so, and every place
    looked at is named, for each dataset the training needs."""
    nowhere = tmp_path / "no-data"
    assert grader_main([str(REPO / "reference"), "--out", str(tmp_path / "out"), "--training", "all",
                        "--data-dir", str(nowhere)]) == 2
    err = capsys.readouterr().err
    assert "needs data that is missing; nothing was graded" in err and not (tmp_path / "out").exists()
    assert "MNIST not found" in err and "CIFAR-10 not found" in err
    for looked in (nowhere / "mnist" / "t10k-labels-idx1-ubyte.gz", nowhere / "cifar10" / "train.npz"):
        assert str(looked) in err


def test_check_mode_for_students(capsys, monkeypatch):
    monkeypatch.setenv("VITKIT_GRADER_SEED", "1234")  # the deployment's seed never reaches the students' checks
    assert grader_main(["--check"]) == 1  # the template: a check fails
    out = capsys.readouterr().out
    assert "FAIL attention:function_shapes" in out and "not implemented yet" in out and "seed 0" in out
    assert grader_main(["--check", str(REPO / "reference")]) == 0
    out = capsys.readouterr().out
    assert "ok   attention:function_matches_pytorch" in out and "ok   transformer_block:matches_pytorch" in out


ALTERNATIVE = Path(__file__).resolve().parent / "fixtures" / "alternative" / "solution.py"


def alternative_notebook(path: Path) -> Path:
    """The alternative solution as a notebook, with cells the grader must drop."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    nb = new_notebook()
    nb.cells = [new_markdown_cell("# My ViT"), new_code_cell("!pip install einops"),
                new_code_cell(ALTERNATIVE.read_text()),
                new_code_cell("model = VisionTransformer(28, 7, 1, 10, 64, 6, 8, 128)\nfor epoch in range(100):\n    pass"),
                new_code_cell("import matplotlib.pyplot as plt\nplt.plot([1, 2])")]
    nbformat.write(nb, path)
    return path


def test_correct_solutions_in_every_form_get_full_marks(tmp_path):
    archive = shutil.make_archive(str(tmp_path / "submission"), "zip", REPO / "reference")
    forms = {"file": ALTERNATIVE, "notebook": alternative_notebook(tmp_path / "hw.ipynb"), "zip": Path(archive)}
    for kind, path in forms.items():
        grade = grade_submission(path, tmp_path / "work" / kind, OPTIONS)
        assert grade.score == grade.max_score > 0, (kind, [(r.name, r.message) for r in grade.results if not r.passed])
        if kind == "notebook":
            dropped = "\n".join(grade.dropped)
            assert "pip install" in dropped and "for epoch" in dropped and "plt.plot" in dropped
