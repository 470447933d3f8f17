"""The student template is generated from the reference and shares its interface."""
import importlib
import inspect
import json

import nbformat
import pytest
import torch

from conftest import REPO
from course.template import EXERCISES, PROVIDED, TemplateError, clear_solutions, stale_files

MODULES = [name[:-3] for name in EXERCISES + PROVIDED]


def test_regenerating_changes_nothing():
    assert stale_files(REPO / "reference", REPO / "student_template") == []


def public_api(module) -> dict[str, str]:
    """Public names defined in the module -> their signatures (methods of classes included)."""
    api = {}
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj):
            api[name] = str(inspect.signature(obj))
        elif inspect.isclass(obj):
            api[name] = str([base.__name__ for base in obj.__mro__])
            for attr, member in vars(obj).items():
                if inspect.isfunction(member) and (not attr.startswith("_") or attr == "__init__"):
                    api[f"{name}.{attr}"] = str(inspect.signature(member))
        elif not inspect.ismodule(obj) and name.isupper():
            api[name] = repr(obj)
    return api


@pytest.mark.parametrize("module", MODULES)
def test_same_names_and_signatures(module):
    ref = importlib.import_module(f"reference.{module}")
    tpl = importlib.import_module(f"student_template.{module}")
    assert public_api(tpl) == public_api(ref)
    assert len(public_api(ref)) > 0


@pytest.mark.parametrize("name", PROVIDED)
def test_provided_code_is_copied_unchanged(name):
    assert (REPO / "student_template" / name).read_bytes() == (REPO / "reference" / name).read_bytes()


def test_exercises_are_left_to_students():
    from student_template import attention, blocks, vit
    x = torch.randn(1, 3, 4)
    calls = [
        lambda: attention.scaled_dot_product_attention(x, x, x),
        lambda: attention.ScaledDotProductAttention(4),
        lambda: attention.MultiHeadSelfAttention(4, 2),
        lambda: blocks.FeedForwardBlock(4, 8),
        lambda: blocks.SelfAttentionBlock(4, 8),
        lambda: blocks.TransformerBlock(4, 2, 8),
        lambda: vit.patchify(torch.randn(1, 1, 4, 4), 2),
        lambda: vit.VisionTransformer(4, 2, 1, 10, 4, 1, 2, 8),
    ]
    for call in calls:
        with pytest.raises(NotImplementedError, match="not implemented yet"):
            call()
    source = (REPO / "student_template" / "attention.py").read_text()
    assert "masked_fill" not in source and "split_heads" not in source  # no solution code left


def test_hint_and_scope_in_the_cleared_body():
    source = (
        "class A:\n"
        "    def f(self):\n"
        '        """Doc."""\n'
        "        # BEGIN SOLUTION hint: add one\n"
        "        return 1 + 1\n"
        "        # END SOLUTION\n"
        "\n"
        "def g():\n"
        "    # BEGIN SOLUTION\n"
        "    return 2\n"
        "    # END SOLUTION\n"
    )
    cleared = clear_solutions(source)
    assert "        # TODO: add one\n" in cleared
    assert 'raise NotImplementedError("A.f: not implemented yet")' in cleared
    assert 'raise NotImplementedError("g: not implemented yet")' in cleared
    assert "return 1 + 1" not in cleared and "return 2" not in cleared and '"""Doc."""' in cleared
    compile(cleared, "<cleared>", "exec")


def test_a_docstring_line_that_looks_like_a_definition_is_not_one():
    source = (
        "class A:\n"
        "    def maps(self):\n"
        '        """Read the tokens first:\n'
        "        class token at index 0, then\n"
        '        def token(x) is not defined here."""\n'
        "        # BEGIN SOLUTION\n"
        "        return 1\n"
        "        # END SOLUTION\n"
    )
    assert 'raise NotImplementedError("A.maps: not implemented yet")' in clear_solutions(source)


@pytest.mark.parametrize("source,message", [
    ("def f():\n    # BEGIN SOLUTION\n    return 1\n", "never closed"),
    ("def f():\n    # BEGIN SOLUTION\n    # BEGIN SOLUTION\n    # END SOLUTION\n", "nested"),
    ("def f():\n    return 1\n    # END SOLUTION\n", "without a"),
])
def test_malformed_markers_are_errors(source, message):
    with pytest.raises(TemplateError, match=message):
        clear_solutions(source, "x.py")


@pytest.mark.parametrize("name", ["attention.ipynb", "vision_transformer.ipynb"])
def test_notebooks_are_valid_and_import_only_the_template(name):
    nb = nbformat.read(REPO / "student_template" / name, as_version=4)
    nbformat.validate(nb)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "load(\"attention\")" in code or "load(\"vit\")" in code  # the code of the notebook's own folder
    assert "student_template" not in code and "reference" not in code
    from IPython.core.inputtransformer2 import TransformerManager  # cells may hold magics (%matplotlib inline)

    for cell in nb.cells:
        if cell.cell_type == "code":
            compile(TransformerManager().transform_cell(cell.source), name, "exec")
            assert not cell.outputs
    assert json.loads((REPO / "student_template" / name).read_text())["nbformat"] == 4
