"""Staging submissions: directories, single files, notebooks, zips, and clear errors for bad input."""
from __future__ import annotations

import ast
import json
import shutil
import stat
import zipfile
from pathlib import Path

import nbformat
import pytest

from grader.submission import (
    PACKAGE_NAME,
    DroppedCode,
    SubmissionError,
    extract_notebook,
    stage_submission,
)

FIXTURES = Path(__file__).parent / "fixtures"
GOOD = FIXTURES / "good"


def _copy_good(dest: Path) -> Path:
    shutil.copytree(GOOD, dest)
    return dest


def _zip(path: Path, entries: dict[str, str | bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def _good_entries(prefix: str = "") -> dict[str, str]:
    return {f"{prefix}{p.name}": p.read_text() for p in sorted(GOOD.glob("*.py"))}


# -- directories and files ---------------------------------------------------------------------


def test_directory_is_staged_as_a_package(tmp_path: Path) -> None:
    src = _copy_good(tmp_path / "hw")
    (src / "utils.py").write_text("X = 1\n")
    (src / "__init__.py").write_text("from .vit import VisionTransformer\n")
    (src / "my-notes.py").write_text("")

    staged = stage_submission(src, tmp_path / "work")

    assert staged.kind == "directory"
    assert staged.source == src
    assert staged.package_dir == tmp_path / "work" / "staged" / PACKAGE_NAME
    assert staged.entry_modules == ["attention", "blocks", "vit"]
    assert sorted(p.name for p in staged.module_files) == ["attention.py", "blocks.py", "utils.py", "vit.py"]
    assert all(p.parent == staged.package_dir and p.is_file() for p in staged.module_files)
    init = (staged.package_dir / "__init__.py").read_text()
    assert "VisionTransformer" not in init  # the student's __init__ is never executed
    assert any("__init__.py was not used" in n for n in staged.notes)
    assert any("my-notes.py was left out" in n for n in staged.notes)
    # the kit's helpers are provided next to the modules, and are not the student's files
    assert {p.name for p in staged.provided_files} <= {"data.py", "training.py", "configs.py", "plotting.py"}
    assert not set(staged.provided_files) & set(staged.module_files)


def test_directory_missing_modules_are_noted(tmp_path: Path) -> None:
    src = tmp_path / "hw"
    src.mkdir()
    shutil.copy(GOOD / "attention.py", src)
    staged = stage_submission(src, tmp_path / "work")
    assert staged.entry_modules == ["attention"]
    assert any("blocks.py, vit.py" in n for n in staged.notes)


def test_student_helper_module_is_kept(tmp_path: Path) -> None:
    src = _copy_good(tmp_path / "hw")
    (src / "data.py").write_text("MINE = True\n")
    staged = stage_submission(src, tmp_path / "work")
    assert (staged.package_dir / "data.py").read_text() == "MINE = True\n"
    assert staged.package_dir / "data.py" in staged.module_files


def test_single_file(tmp_path: Path) -> None:
    src = tmp_path / "homework.py"
    src.write_text("def patchify(x, p):\n    return x\n")
    staged = stage_submission(src, tmp_path / "work")
    assert staged.kind == "file"
    assert staged.entry_modules == ["homework"]
    assert [p.name for p in staged.module_files] == ["homework.py"]


def test_single_file_with_an_unimportable_name_is_renamed(tmp_path: Path) -> None:
    src = tmp_path / "my homework.py"
    src.write_text("X = 1\n")
    staged = stage_submission(src, tmp_path / "work")
    assert staged.entry_modules == ["solution"]
    assert any("solution.py" in n for n in staged.notes)


def test_restaging_replaces_the_previous_submission(tmp_path: Path) -> None:
    first = tmp_path / "a.py"
    first.write_text("A = 1\n")
    second = tmp_path / "b.py"
    second.write_text("B = 1\n")
    stage_submission(first, tmp_path / "work")
    staged = stage_submission(second, tmp_path / "work")
    assert not (staged.package_dir / "a.py").exists()


def test_directory_with_only_one_file_uses_it(tmp_path: Path) -> None:
    src = tmp_path / "hw"
    src.mkdir()
    (src / "answers.py").write_text("X = 1\n")
    staged = stage_submission(src, tmp_path / "work")
    assert staged.kind == "file" and staged.entry_modules == ["answers"]


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda d: d / "nope", "does not exist"),
        (lambda d: (d / "hw.txt").write_text("x") and d / "hw.txt", "unknown kind of submission"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "none of attention.py, blocks.py, vit.py"),
    ],
    ids=["missing", "extension", "empty-directory"],
)
def test_bad_input_gives_a_clear_error(tmp_path: Path, make, fragment: str) -> None:
    with pytest.raises(SubmissionError, match=fragment):
        stage_submission(make(tmp_path), tmp_path / "work")


def test_directory_with_several_candidates_is_ambiguous(tmp_path: Path) -> None:
    src = tmp_path / "hw"
    src.mkdir()
    (src / "one.py").write_text("")
    (src / "two.py").write_text("")
    with pytest.raises(SubmissionError, match="one.py, two.py"):
        stage_submission(src, tmp_path / "work")


# -- notebooks ---------------------------------------------------------------------------------


def _notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Homework")] + [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, path)
    return path


NOTEBOOK_CELLS = (
    "!pip install einops\n%matplotlib inline\nimport math\nimport torch\nfrom torch import nn",
    "D_MODEL = 16\nSIZES = (1, 2)\nHALF = D_MODEL // 2\nrate = -1e-3 * 2\ndevice = torch.device('cpu')",
    "def patchify(images, patch_size):\n    return images\n\n\nclass VisionTransformer(nn.Module):\n"
    "    def forward(self, x):\n        return x.sum()",
    "model = VisionTransformer()\nfor epoch in range(100):\n    model.train()\nprint('done')\nmodel",
    "def broken(:\n    pass",
    "%%time\ndef timed():\n    pass",
    "@torch.no_grad()\ndef evaluate(m):\n    !nvidia-smi\n    return 1\n\nif __name__ == '__main__':\n    evaluate(1)",
)


def test_notebook_keeps_definitions_and_reports_what_it_drops(tmp_path: Path) -> None:
    path = _notebook(tmp_path / "hw.ipynb", *NOTEBOOK_CELLS)
    staged = stage_submission(path, tmp_path / "work")

    assert staged.kind == "notebook"
    assert staged.entry_modules == ["notebook"]
    source = (staged.package_dir / "notebook.py").read_text()
    tree = ast.parse(source)  # the extracted module is valid Python
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assigned = {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets}
    assert defined == {"patchify", "VisionTransformer", "evaluate"}
    assert assigned == {"D_MODEL", "SIZES", "HALF", "rate"}
    assert "import torch" in source and "from torch import nn" in source
    for gone in ("pip", "matplotlib", "device", "epoch", "print", "timed", "broken", "nvidia-smi"):
        assert gone not in source

    reasons = {(d.cell, d.first_line): d.reason for d in staged.dropped}
    assert reasons[(2, "!pip install einops")] == "IPython shell command or magic"
    assert reasons[(2, "%matplotlib inline")] == "IPython shell command or magic"
    assert reasons[(3, "device = torch.device('cpu')")].startswith("assignment of a computed value")
    assert reasons[(5, "for epoch in range(100):")] == "for loop"
    assert reasons[(5, "model = VisionTransformer()")].startswith("assignment of a computed value")
    assert reasons[(5, "print('done')")].startswith("expression")
    assert reasons[(6, "def broken(:")].startswith("does not parse: SyntaxError line 1")
    assert reasons[(7, "%%time")] == "cell magic %%time"
    assert reasons[(8, "!nvidia-smi")] == "IPython shell command or magic"
    assert reasons[(8, "if __name__ == '__main__':")].startswith("if __name__")
    assert all(isinstance(d, DroppedCode) for d in staged.dropped)


def test_notebook_lines_map_back_to_cells(tmp_path: Path) -> None:
    path = _notebook(tmp_path / "hw.ipynb", *NOTEBOOK_CELLS)
    staged = stage_submission(path, tmp_path / "work")
    lines = (staged.package_dir / "notebook.py").read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if "return x.sum()" in text)
    assert staged.locate("notebook.py", line) == ("hw.ipynb cell 4", 7)
    assert staged.locate("other.py", line) == ("other.py", line)


def test_notebook_skips_imports_of_missing_packages() -> None:
    code = extract_notebook(json.dumps(nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import google.colab\nfrom __future__ import annotations\nimport math")])))
    assert code.source.splitlines()[1] == "from __future__ import annotations"
    assert "google" not in code.source and "import math" in code.source
    assert [d.reason for d in code.dropped] == ["import of 'google', which is not installed for the grader"]


def test_notebook_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "hw.ipynb"
    path.write_text("{ this is not json")
    with pytest.raises(SubmissionError, match="hw.ipynb is not a valid notebook: not JSON"):
        stage_submission(path, tmp_path / "work")


def test_json_that_is_not_a_notebook(tmp_path: Path) -> None:
    path = tmp_path / "hw.ipynb"
    path.write_text(json.dumps({"cells": "nope"}))
    with pytest.raises(SubmissionError, match="not a valid Jupyter notebook"):
        stage_submission(path, tmp_path / "work")


# -- zips --------------------------------------------------------------------------------------


def test_zip_of_the_modules(tmp_path: Path) -> None:
    path = _zip(tmp_path / "hw.zip", {**_good_entries(), "__MACOSX/._vit.py": "junk", ".DS_Store": "junk"})
    staged = stage_submission(path, tmp_path / "work")
    assert staged.kind == "zip:directory"
    assert staged.entry_modules == ["attention", "blocks", "vit"]
    assert not (tmp_path / "work" / "unpacked" / "__MACOSX").exists()


def test_zip_with_nested_single_folder_is_descended(tmp_path: Path) -> None:
    path = _zip(tmp_path / "hw.zip", _good_entries("outer/hw/"))
    staged = stage_submission(path, tmp_path / "work")
    assert staged.kind == "zip:directory"
    assert any("used outer/hw" in n for n in staged.notes)


def test_zip_finds_the_module_folder_among_others(tmp_path: Path) -> None:
    path = _zip(tmp_path / "hw.zip", {"README.md": "hi", "data/x.csv": "1", **_good_entries("src/student/")})
    staged = stage_submission(path, tmp_path / "work")
    assert staged.kind == "zip:directory" and len(staged.entry_modules) == 3


def test_zip_of_a_single_file_or_notebook(tmp_path: Path) -> None:
    staged = stage_submission(_zip(tmp_path / "a.zip", {"hw/answers.py": "X = 1\n"}), tmp_path / "w1")
    assert staged.kind == "zip:file" and staged.entry_modules == ["answers"]
    nb = _notebook(tmp_path / "hw.ipynb", "X = 1").read_text()
    staged = stage_submission(_zip(tmp_path / "b.zip", {"hw.ipynb": nb}), tmp_path / "w2")
    assert staged.kind == "zip:notebook"


def _symlink_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        info = zipfile.ZipInfo("vit.py")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    return path


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda d: _zip(d / "x.zip", {"../evil.py": "x", **_good_entries()}), "leaves the archive"),
        (lambda d: _zip(d / "x.zip", {"/abs/vit.py": "x"}), "absolute path"),
        (lambda d: _zip(d / "x.zip", {"C:\\vit.py": "x"}), "absolute path"),
        (lambda d: _symlink_zip(d / "x.zip"), "symbolic link"),
        (lambda d: _zip(d / "x.zip", {"vit.py": "#" * 3000}), "more than the 2.0 kB allowed"),
        (lambda d: _zip(d / "x.zip", {f"f{i}.txt": "" for i in range(30)}), "more than the 20 allowed"),
        (lambda d: (d / "x.zip").write_bytes(b"PK\x03\x04 not really a zip") and d / "x.zip", "not a readable zip"),
        (lambda d: _zip(d / "x.zip", {"a.py": "", "b.py": ""}), "not exactly one"),
    ],
    ids=["dotdot", "absolute", "drive", "symlink", "too-large", "too-many", "corrupt", "ambiguous"],
)
def test_bad_zips_are_rejected(tmp_path: Path, make, fragment: str) -> None:
    with pytest.raises(SubmissionError, match=fragment):
        stage_submission(make(tmp_path), tmp_path / "work", max_bytes=2000, max_files=20)
    assert not (tmp_path.parent / "evil.py").exists()


def test_zip_size_is_counted_while_unpacking(tmp_path: Path) -> None:
    """A header that lies about the size does not get past the limit."""
    path = _zip(tmp_path / "x.zip", {"vit.py": "#" * 5000})
    data = bytearray(path.read_bytes())
    # patch the central directory's uncompressed size (offset 24 in the entry) to claim 10 bytes
    central = data.rfind(b"PK\x01\x02")
    data[central + 24:central + 28] = (10).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(SubmissionError):
        stage_submission(path, tmp_path / "work", max_bytes=2000)


def test_a_source_file_too_large_to_parse_safely_is_refused(tmp_path: Path) -> None:
    """Parsing costs hundreds of times the text in memory: a huge module is refused before it."""
    from grader.submission import MAX_SOURCE_BYTES

    big = "x = [" + "1, " * (MAX_SOURCE_BYTES // 3 + 10) + "]\n"
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ("attention.py", "blocks.py"):
        (folder / name).write_text("")
    (folder / "vit.py").write_text(big)
    with pytest.raises(SubmissionError, match="vit.py is .* more than the 1.0 MB allowed"):
        stage_submission(folder, tmp_path / "w1")
    (tmp_path / "one.py").write_text(big)
    with pytest.raises(SubmissionError, match="one.py is .* more than the 1.0 MB allowed"):
        stage_submission(tmp_path / "one.py", tmp_path / "w2")
    from nbformat.v4 import new_code_cell, new_notebook

    nbformat.write(new_notebook(cells=[new_code_cell(big)]), str(tmp_path / "big.ipynb"))
    with pytest.raises(SubmissionError, match="code cells of big.ipynb hold more than 1.0 MB"):
        stage_submission(tmp_path / "big.ipynb", tmp_path / "w3")
