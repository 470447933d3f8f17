"""Stage a student submission into a normalised package directory, without executing any of it.

A submission is a directory laid out like the template, a single ``.py`` file, a Jupyter
notebook, or a ``.zip`` holding any of those. Whatever the input, staging produces one directory
``<workdir>/staged/student_submission/`` that the sandbox child imports as the package
``student_submission``:

* it always holds an empty ``__init__.py`` written by the grader (a student's own ``__init__.py``
  is not used, so that one broken module cannot stop the others from being imported);
* the student's modules sit in it as ``attention.py``, ``blocks.py``, ``vit.py`` (and any other
  ``.py`` files of theirs), or as one module for a single file or a notebook;
* the kit's helper modules (``data``, ``training``, ``configs``, ``plotting``) are copied in
  when the submission lacks them, so that ``from .data import ...`` keeps working; they are
  listed in ``provided_files`` and are not treated as the student's code.

Notebooks are reduced with ``ast`` to imports, definitions and literal constants; the rest is
dropped and reported (see ``extract_notebook``).
"""
from __future__ import annotations

import ast
import importlib.util
import json
import keyword
import re
import shutil
import stat
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from grader.checklib import PACKAGE_NAME
from grader.scratch import remove_tree
from grader.syntax import parse

INTERFACE_NAMES: tuple[str, ...] = (
    "scaled_dot_product_attention",
    "ScaledDotProductAttention",
    "MultiHeadSelfAttention",
    "FeedForwardBlock",
    "SelfAttentionBlock",
    "TransformerBlock",
    "patchify",
    "VisionTransformer",
)
EXPECTED_MODULES: tuple[str, ...] = ("attention", "blocks", "vit")
HELPER_MODULES: tuple[str, ...] = ("data", "training", "configs", "plotting")
NOTEBOOK_MODULE = "notebook"
FALLBACK_MODULE = "solution"

MAX_UNPACKED_BYTES = 50 * 1024 * 1024
MAX_FILES = 500
# One source file, as staged: the template's modules are a few kB; parsing (the grader's scan, the
# notebook's cells) costs memory hundreds of times the text, so a huge file is refused up front.
MAX_SOURCE_BYTES = 1024 * 1024
MAX_CHECKPOINT_BYTES = 64 * 1024 * 1024  # the CIFAR-10 recipe's weights are 3.3 MB
CHECKPOINT_RECIPES = ("mnist", "cifar10")  # <recipe>.pt next to the modules: the weights the notebook saves

# Module names a student's file may not take: they would shadow the grader or libraries.
RESERVED_STEMS = frozenset(
    {"torch", "numpy", "grader", "reference", "student_template", "tests", "conftest", "timm",
     PACKAGE_NAME, "__init__", "__main__"}
)
_REPO_ROOT = Path(__file__).resolve().parent.parent


class SubmissionError(Exception):
    """The submission cannot be staged; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class DroppedCode:
    """A piece of a notebook that was not kept. ``cell`` counts all cells from 1, top to bottom."""

    cell: int
    first_line: str
    reason: str


@dataclass(frozen=True)
class CellSpan:
    """Lines ``module_line .. module_line + n_lines - 1`` of the extracted notebook module came
    from lines ``cell_line ..`` of notebook cell ``cell`` (counted from 1)."""

    module_line: int
    cell: int
    cell_line: int
    n_lines: int


@dataclass
class StagedSubmission:
    """A submission laid out as an importable package; see the module docstring."""

    kind: str  # "directory" | "file" | "notebook" | "zip:<inner kind>"
    source: Path
    package_dir: Path
    module_files: list[Path]  # the student's own staged modules
    entry_modules: list[str] = field(default_factory=list)  # imported in this order by the child
    provided_files: list[Path] = field(default_factory=list)  # kit helpers copied in by the grader
    dropped: list[DroppedCode] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cell_spans: list[CellSpan] = field(default_factory=list)
    notebook_name: str | None = None
    checkpoints: dict[str, Path] = field(default_factory=dict)  # recipe -> its staged weights (<recipe>.pt)

    @property
    def package_root(self) -> Path:
        """The directory to put on ``sys.path`` so that ``import student_submission`` works."""
        return self.package_dir.parent

    def locate(self, file: str, line: int) -> tuple[str, int]:
        """Translate a (staged file name, line) to what the student knows: for a notebook, the
        cell and the line in it; otherwise unchanged."""
        if self.notebook_name is None or file != f"{NOTEBOOK_MODULE}.py":
            return file, line
        for span in reversed(self.cell_spans):
            if span.module_line <= line:
                if line < span.module_line + span.n_lines:
                    return f"{self.notebook_name} cell {span.cell}", span.cell_line + line - span.module_line
                break
        return file, line


def stage_submission(
    path: Path,
    workdir: Path,
    *,
    helper_dirs: list[Path] | None = None,
    max_bytes: int = MAX_UNPACKED_BYTES,
    max_files: int = MAX_FILES,
) -> StagedSubmission:
    """Stage ``path`` (directory, ``.py``, ``.ipynb`` or ``.zip``) under ``workdir``.

    ``helper_dirs`` are searched, in order, for kit helper modules the submission lacks; by
    default the repository's ``student_template/`` then ``reference/``. Raises
    ``SubmissionError`` for anything that cannot be staged.
    """
    path = Path(path)
    workdir = Path(workdir)
    if not path.exists():
        raise SubmissionError(f"{path} does not exist: check the path of the submission.")
    package_dir = _fresh_package_dir(workdir)
    helpers = _default_helper_dirs() if helper_dirs is None else [Path(p) for p in helper_dirs]

    if path.is_dir():
        staged = _stage_from_folder(path, package_dir, max_bytes, max_files)
    elif path.suffix.lower() == ".zip":
        staged = _stage_zip(path, workdir, package_dir, max_bytes, max_files)
    elif path.suffix.lower() == ".py":
        staged = _stage_file(path, package_dir, max_bytes)
    elif path.suffix.lower() == ".ipynb":
        staged = _stage_notebook(path, package_dir, max_bytes)
    else:
        raise SubmissionError(
            f"{path.name}: unknown kind of submission (extension {path.suffix or 'none'!r}). "
            "Submit a folder with attention.py, blocks.py and vit.py, one .py file, a .ipynb "
            "notebook, or a .zip of one of those."
        )
    staged.source = path
    _write_init(package_dir)
    staged.provided_files = _provide_helpers(package_dir, helpers, staged.notes)
    return staged


# ---------------------------------------------------------------------------------------------
# layout


def _fresh_package_dir(workdir: Path) -> Path:
    staged_root = workdir / "staged"
    if staged_root.exists():
        remove_tree(staged_root)  # ours: left over from an earlier staging into this workdir
    package_dir = staged_root / PACKAGE_NAME
    package_dir.mkdir(parents=True)
    return package_dir


def _default_helper_dirs() -> list[Path]:
    return [_REPO_ROOT / "student_template", _REPO_ROOT / "reference"]


def _write_init(package_dir: Path) -> None:
    (package_dir / "__init__.py").write_text('"""Staged student submission (written by the grader)."""\n')


def _provide_helpers(package_dir: Path, helper_dirs: list[Path], notes: list[str]) -> list[Path]:
    provided = []
    for name in HELPER_MODULES:
        target = package_dir / f"{name}.py"
        if target.exists():
            continue
        for folder in helper_dirs:
            candidate = folder / f"{name}.py"
            if candidate.is_file():
                shutil.copyfile(candidate, target)
                provided.append(target)
                break
    if provided:
        names = ", ".join(p.name for p in provided)
        notes.append(f"the kit's helper modules were provided by the grader: {names}")
    return provided


def _is_importable_stem(stem: str) -> bool:
    return stem.isidentifier() and not keyword.iskeyword(stem)


def _check_size(path: Path, max_bytes: int) -> None:
    size = path.stat().st_size
    if size > max_bytes:
        raise SubmissionError(
            f"{path.name} is {_size(size)}, more than the {_size(max_bytes)} allowed: "
            "submit only the source code (no data, checkpoints or outputs)."
        )


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB" if n_bytes >= 100_000 else f"{n_bytes / 1e3:.1f} kB"


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SubmissionError(f"{path.name} is not UTF-8 text ({exc.reason}): save it as UTF-8.") from None
    except OSError as exc:
        raise SubmissionError(f"cannot read {path.name}: {exc.strerror}.") from None


# ---------------------------------------------------------------------------------------------
# the three kinds of content


def _stage_from_folder(folder: Path, package_dir: Path, max_bytes: int, max_files: int) -> StagedSubmission:
    """A folder with the template's modules, or one nested inside it (a zipped folder, unpacked);
    failing that, exactly one .py or .ipynb in it."""
    expected = [m for m in EXPECTED_MODULES if (folder / f"{m}.py").is_file()]
    if not expected:
        nested = _template_folder(folder)
        if nested is not None and nested != folder:
            staged = _stage_from_folder(nested, package_dir, max_bytes, max_files)
            staged.notes.insert(0, f"used the modules in {nested.relative_to(folder).as_posix()}/")
            return staged
        return _stage_single_from_folder(folder, package_dir, max_bytes)

    notes: list[str] = []
    py_files = sorted(p for p in folder.glob("*.py") if _regular(p))
    if len(py_files) > max_files:
        raise SubmissionError(f"{folder.name} holds {len(py_files)} .py files, more than {max_files}.")
    module_files, total = [], 0
    for src in py_files:
        if src.name == "__init__.py":
            if _has_code(src.read_text(encoding="utf-8", errors="replace")):
                notes.append("the submission's __init__.py was not used (the grader imports each module itself)")
            continue
        if not _is_importable_stem(src.stem) or src.stem in RESERVED_STEMS:
            notes.append(f"{src.name} was left out: its name cannot be imported as a module of the submission")
            continue
        _check_size(src, MAX_SOURCE_BYTES)
        total += src.stat().st_size
        if total > max_bytes:
            raise SubmissionError(f"the .py files in {folder.name} exceed {_size(max_bytes)} in total.")
        dst = package_dir / src.name
        shutil.copyfile(src, dst)
        module_files.append(dst)

    missing = [f"{m}.py" for m in EXPECTED_MODULES if m not in expected]
    if missing:
        notes.append(f"missing from the submission: {', '.join(missing)}")
    others = sorted(p.name for p in folder.glob("*.ipynb"))
    if others:
        notes.append(f"the notebooks ({', '.join(others)}) are not graded: the grader grades the .py modules")
    kind = "directory"
    return StagedSubmission(kind, folder, package_dir, module_files, entry_modules=expected, notes=notes,
                            checkpoints=_stage_checkpoints(folder, package_dir, notes))


def _stage_checkpoints(folder: Path, package_dir: Path, notes: list[str]) -> dict[str, Path]:
    """``<recipe>.pt`` files next to the modules, copied beside the staged modules (where the
    child, which alone opens them, can read them); a link or an oversized file is left out."""
    found = {}
    for recipe in CHECKPOINT_RECIPES:
        src = folder / f"{recipe}.pt"
        if not src.exists() and not src.is_symlink():
            continue
        if not _regular(src):
            notes.append(f"{src.name} was left out: it is not a regular file")
        elif src.stat().st_size > MAX_CHECKPOINT_BYTES:
            notes.append(f"{src.name} was left out: {_size(src.stat().st_size)}, more than {_size(MAX_CHECKPOINT_BYTES)}")
        else:
            found[recipe] = package_dir / src.name
            shutil.copyfile(src, found[recipe])
    return found


def _regular(path: Path) -> bool:
    """A regular file, not a link to one: nothing a submission links to is read."""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def _stage_single_from_folder(folder: Path, package_dir: Path, max_bytes: int) -> StagedSubmission:
    py = sorted(p for p in folder.glob("*.py") if p.stem not in HELPER_MODULES and p.name != "__init__.py")
    nb = sorted(folder.glob("*.ipynb"))
    if len(py) == 1:
        staged = _stage_file(py[0], package_dir, max_bytes)
    elif not py and len(nb) == 1:
        staged = _stage_notebook(nb[0], package_dir, max_bytes)
    else:
        found = ", ".join(p.name for p in py + nb) or "no .py or .ipynb files"
        raise SubmissionError(
            f"{folder.name} has none of attention.py, blocks.py, vit.py (found: {found}). Name the "
            "modules as in the template, or submit a single .py file or notebook."
        )
    staged.notes.insert(0, f"{folder.name} has no template modules; used its only candidate file")
    return staged


def _module_name_for(path: Path, notes: list[str]) -> str:
    stem = path.stem
    if _is_importable_stem(stem) and stem not in RESERVED_STEMS and stem not in HELPER_MODULES \
            and stem not in sys.stdlib_module_names:
        return stem
    notes.append(f"{path.name} was staged as {FALLBACK_MODULE}.py (its name cannot be imported as is)")
    return FALLBACK_MODULE


def _refuse_link(path: Path) -> None:
    """A submitted file must be the file itself: a link may point at anything the grader can read."""
    if path.is_symlink():
        raise SubmissionError(f"{path.name} is a symbolic link: submit the file itself, not a link to it.")


def _stage_file(path: Path, package_dir: Path, max_bytes: int) -> StagedSubmission:
    _refuse_link(path)
    _check_size(path, min(max_bytes, MAX_SOURCE_BYTES))
    _read_text(path)  # fail early, with a clear message, on unreadable or non-UTF-8 files
    notes: list[str] = []
    name = _module_name_for(path, notes)
    dst = package_dir / f"{name}.py"
    shutil.copyfile(path, dst)
    return StagedSubmission("file", path, package_dir, [dst], entry_modules=[name], notes=notes)


def _stage_notebook(path: Path, package_dir: Path, max_bytes: int) -> StagedSubmission:
    _refuse_link(path)
    _check_size(path, max_bytes)
    code = extract_notebook(_read_text(path), path.name)
    dst = package_dir / f"{NOTEBOOK_MODULE}.py"
    dst.write_text(code.source, encoding="utf-8")
    notes = [f"code cells of {path.name} were reduced to definitions in {dst.name}"]
    if code.dropped:
        notes.append(f"{len(code.dropped)} piece(s) of notebook code were dropped: only imports, definitions and simple "
                     "constants are graded (each is listed with the report)")
    return StagedSubmission(
        "notebook", path, package_dir, [dst], entry_modules=[NOTEBOOK_MODULE], dropped=code.dropped,
        notes=notes, cell_spans=code.spans, notebook_name=path.name,
    )


# ---------------------------------------------------------------------------------------------
# zip archives


def _stage_zip(path: Path, workdir: Path, package_dir: Path, max_bytes: int, max_files: int) -> StagedSubmission:
    _refuse_link(path)
    unpacked = workdir / "unpacked"
    if unpacked.exists():
        remove_tree(unpacked)
    unpacked.mkdir(parents=True)
    safe_unzip(path, unpacked, max_bytes=max_bytes, max_files=max_files)

    root = unpacked
    while True:  # a zip of one folder (possibly nested): descend into it
        entries = [p for p in root.iterdir() if not p.name.startswith(".")]
        if len(entries) == 1 and entries[0].is_dir():
            root = entries[0]
        else:
            break
    inner = _find_submission(root)
    if inner.is_dir():
        staged = _stage_from_folder(inner, package_dir, max_bytes, max_files)
    elif inner.suffix == ".py":
        staged = _stage_file(inner, package_dir, max_bytes)
    else:
        staged = _stage_notebook(inner, package_dir, max_bytes)
    rel = inner.relative_to(unpacked).as_posix()
    staged.notes.insert(0, f"unpacked {path.name}; used {rel or 'its top level'}")
    staged.kind = f"zip:{staged.kind}"
    return staged


def _template_folder(root: Path) -> Path | None:
    """The folder under ``root`` with the most template modules (shallowest on ties), if any."""
    best: tuple[int, int, str] | None = None
    best_dir = None
    for folder in [root, *sorted(p for p in root.rglob("*") if p.is_dir() and not p.is_symlink())][:MAX_FILES]:
        count = sum((folder / f"{m}.py").is_file() for m in EXPECTED_MODULES)
        if count:
            key = (-count, len(folder.relative_to(root).parts), folder.as_posix())
            if best is None or key < best:
                best, best_dir = key, folder
    return best_dir


def _find_submission(root: Path) -> Path:
    """The folder with the most template modules (shallowest on ties), else the only .py/.ipynb."""
    best_dir = _template_folder(root)
    if best_dir is not None:
        return best_dir
    py = sorted(p for p in root.rglob("*.py") if p.stem not in HELPER_MODULES and p.name != "__init__.py")
    nb = sorted(root.rglob("*.ipynb"))
    if len(py) == 1:
        return py[0]
    if not py and len(nb) == 1:
        return nb[0]
    found = ", ".join(p.relative_to(root).as_posix() for p in py + nb) or "no .py or .ipynb files"
    raise SubmissionError(
        f"the archive has no folder with attention.py, blocks.py or vit.py, and not exactly one "
        f".py or .ipynb file (found: {found}). Zip the template folder with your modules in it."
    )


def safe_unzip(
    path: Path, dest: Path, *, max_bytes: int = MAX_UNPACKED_BYTES, max_files: int = MAX_FILES
) -> list[Path]:
    """Unpack ``path`` into ``dest`` after checking every entry; return the files written.

    Rejects absolute paths, ``..`` components, symbolic links, more than ``max_files`` entries
    and more than ``max_bytes`` unpacked (counted while unpacking, not trusted from the
    header). Skips ``__MACOSX/``, ``__pycache__`` and dotfiles.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SubmissionError(f"{path.name} is not a readable zip archive ({exc}): re-create the zip.") from None
    written: list[Path] = []
    with archive:
        infos = archive.infolist()
        for info in infos:
            _check_zip_entry(path, info)
        if len(infos) > max_files:
            raise SubmissionError(f"{path.name} holds {len(infos)} entries, more than the {max_files} allowed.")
        declared = sum(i.file_size for i in infos)
        if declared > max_bytes:
            raise SubmissionError(
                f"{path.name} unpacks to {_size(declared)}, more than the {_size(max_bytes)} allowed: "
                "submit only the source code."
            )
        budget = max_bytes
        for info in infos:
            parts = _zip_parts(info.filename)
            if not parts or _ignored(parts):
                continue
            target = dest.joinpath(*parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            budget = _copy_member(archive, info, target, budget, path.name, max_bytes)
            written.append(target)
    return written


def _zip_parts(name: str) -> list[str]:
    return [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]


def _ignored(parts: list[str]) -> bool:
    return parts[0] == "__MACOSX" or any(p.startswith(".") or p == "__pycache__" for p in parts)


def _check_zip_entry(path: Path, info: zipfile.ZipInfo) -> None:
    name = info.filename
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise SubmissionError(f"{path.name} contains an absolute path ({name!r}): zip with relative paths.")
    if ".." in name.replace("\\", "/").split("/"):
        raise SubmissionError(f"{path.name} contains a path that leaves the archive ({name!r}): remove it.")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise SubmissionError(f"{path.name} contains a symbolic link ({name!r}): zip the files themselves.")


def _copy_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: int,
                 label: str, max_bytes: int) -> int:
    try:
        with archive.open(info) as src, open(target, "wb") as dst:
            while chunk := src.read(1 << 16):
                budget -= len(chunk)
                if budget < 0:
                    raise SubmissionError(
                        f"{label} unpacks to more than the {_size(max_bytes)} allowed: submit only the source code."
                    )
                dst.write(chunk)
    except (zipfile.BadZipFile, RuntimeError, OSError, EOFError, NotImplementedError) as exc:
        # RuntimeError: encrypted entry; NotImplementedError: unsupported compression.
        raise SubmissionError(f"cannot unpack {info.filename!r} from {label} ({exc}): re-create the zip.") from None
    return budget


# ---------------------------------------------------------------------------------------------
# notebooks


@dataclass
class NotebookCode:
    """The module made from a notebook's code cells."""

    source: str
    dropped: list[DroppedCode]
    spans: list[CellSpan]


_MAGIC = re.compile(r"^\s*[!%]")
_SAFE_BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow)
_SAFE_UNARY = (ast.UAdd, ast.USub, ast.Not, ast.Invert)


def extract_notebook(text: str, label: str = "notebook") -> NotebookCode:
    """Keep the imports, ``def``/``class`` statements and literal constants of the code cells.

    Parsed with ``ast`` only, never executed. Everything else is dropped and reported.
    """
    cells = _read_cells(text, label)
    header = [f'"""Definitions extracted by the grader from {label}."""']
    futures: set[str] = set()
    chunks: list[tuple[int, int, list[str]]] = []  # (cell, first cell line, lines)
    dropped: list[DroppedCode] = []
    constants: set[str] = set()
    code = 0
    for number, cell in enumerate(cells, start=1):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        if not source.strip():
            continue
        code += len(source.encode("utf-8", errors="replace"))
        if code > MAX_SOURCE_BYTES:  # before parsing it: the parse is what costs
            raise SubmissionError(f"the code cells of {label} hold more than {_size(MAX_SOURCE_BYTES)} of code: "
                                  "submit your own code only (no data or generated code in cells).")
        tree, lines = _parse_cell(source, number, dropped)
        if tree is None:
            continue
        for node in tree.body:
            reason = _why_dropped(node, constants)
            if reason == "":
                continue  # silently ignored: placeholders for magics, bare strings
            if reason is not None:
                dropped.append(DroppedCode(number, _first_line(lines, node), reason))
                continue
            if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                futures.update(a.name for a in node.names)
                continue
            chunks.append((number, _start_line(node), _node_lines(node, lines, tree)))

    out = list(header)
    if futures:
        out.append(f"from __future__ import {', '.join(sorted(futures))}")
    spans: list[CellSpan] = []
    last_cell = None
    for cell_no, cell_line, lines in chunks:
        if cell_no != last_cell:
            out.extend(["", f"# ---- cell {cell_no} ----"])
            last_cell = cell_no
        elif len(lines) > 1:
            out.append("")  # a blank line between definitions, for whoever reads the file
        spans.append(CellSpan(len(out) + 1, cell_no, cell_line, len(lines)))
        out.extend(lines)
    return NotebookCode("\n".join(out) + "\n", dropped, spans)


def _read_cells(text: str, label: str) -> list[dict]:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SubmissionError(
            f"{label} is not a valid notebook: not JSON ({exc.msg} at line {exc.lineno}). "
            "Re-save it from Jupyter, or submit a .py file instead."
        ) from None
    try:
        import nbformat  # lazily: only notebooks need it

        nb = nbformat.reads(text, as_version=4)
        cells = [dict(c) for c in nb.cells]
    except ImportError:
        cells = raw.get("cells") if isinstance(raw, dict) else None
    except Exception as exc:  # nbformat raises several unrelated types for malformed files
        raise SubmissionError(
            f"{label} is not a valid Jupyter notebook ({type(exc).__name__}: {exc}). Re-save it from Jupyter."
        ) from None
    if not isinstance(cells, list):
        raise SubmissionError(f"{label} is not a valid Jupyter notebook (it has no list of cells).")
    return cells


def _parse_cell(source: str, number: int, dropped: list[DroppedCode]) -> tuple[ast.Module | None, list[str]]:
    lines = source.splitlines()
    first = next((ln for ln in lines if ln.strip()), "")
    if first.lstrip().startswith("%%"):
        dropped.append(DroppedCode(number, first.strip(), f"cell magic {first.split()[0]}"))
        return None, lines
    try:
        return parse(source), lines
    except SyntaxError:
        pass
    # IPython syntax (!cmd, %magic) is not Python: replace such lines by `pass` at the same indent,
    # which keeps both the line numbers and any enclosing block valid.
    patched = []
    for ln in lines:
        if _MAGIC.match(ln):
            indent = ln[: len(ln) - len(ln.lstrip())]
            patched.append(f"{indent}pass")
            dropped.append(DroppedCode(number, ln.strip(), "IPython shell command or magic"))
        else:
            patched.append(ln)
    try:
        return parse("\n".join(patched)), patched
    except SyntaxError as exc:
        dropped.append(DroppedCode(number, first.strip(), f"does not parse: SyntaxError line {exc.lineno}: {exc.msg}"))
        return None, lines


def _why_dropped(node: ast.stmt, constants: set[str]) -> str | None:
    """None: keep. "": ignore silently. Otherwise the reason for dropping the statement."""
    if isinstance(node, ast.Pass) or (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
                                      and isinstance(node.value.value, str)):
        return ""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return None
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return _why_import_dropped(node)
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        names = [n for t in targets for n in _target_names(t)]
        if any(n is None for n in names):
            return "assignment to something other than plain names"
        if node.value is not None and not _is_literal(node.value, constants):
            return "assignment of a computed value (only literal constants are kept)"
        constants.update(n for n in names if n is not None)
        return None
    if isinstance(node, ast.Try) and all(_why_dropped(s, constants) in (None, "") for s in _try_statements(node)):
        return None  # e.g. try: import x / except ImportError: x = None
    if isinstance(node, ast.If) and _is_main_guard(node):
        return "if __name__ == '__main__' block"
    return {
        ast.For: "for loop", ast.AsyncFor: "for loop", ast.While: "while loop", ast.If: "if block",
        ast.With: "with block", ast.AsyncWith: "with block", ast.Try: "try block",
        ast.Expr: "expression (e.g. a call or a displayed value)", ast.AugAssign: "augmented assignment",
        ast.Delete: "del statement", ast.Assert: "assert statement",
    }.get(type(node), f"{type(node).__name__.lower()} statement")


def _why_import_dropped(node: ast.Import | ast.ImportFrom) -> str | None:
    if isinstance(node, ast.ImportFrom) and (node.level or node.module == "__future__"):
        return None
    modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
    for module in modules:
        top = module.split(".")[0]
        if top in HELPER_MODULES or top in EXPECTED_MODULES:
            continue
        try:
            found = importlib.util.find_spec(top) is not None  # top level only: runs no package code
        except (ImportError, ValueError):
            found = False
        if not found:
            return f"import of {top!r}, which is not installed for the grader"
    return None


def _target_names(target: ast.expr) -> list[str | None]:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for elt in target.elts for n in _target_names(elt)]
    return [None]


def _is_literal(node: ast.expr, constants: set[str]) -> bool:
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.Name):
        return node.id in constants
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return all(_is_literal(e, constants) for e in node.elts)
    if isinstance(node, ast.Dict):
        return all(k is not None and _is_literal(k, constants) for k in node.keys) and all(
            _is_literal(v, constants) for v in node.values)
    if isinstance(node, ast.UnaryOp):
        return isinstance(node.op, _SAFE_UNARY) and _is_literal(node.operand, constants)
    if isinstance(node, ast.BinOp):
        return isinstance(node.op, _SAFE_BINOPS) and _is_literal(node.left, constants) and _is_literal(
            node.right, constants)
    return False


def _try_statements(node: ast.Try) -> list[ast.stmt]:
    statements = list(node.body) + list(node.orelse) + list(node.finalbody)
    for handler in node.handlers:
        statements.extend(handler.body)
    return statements


def _is_main_guard(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__")


def _start_line(node: ast.stmt) -> int:
    decorators = getattr(node, "decorator_list", [])
    return min([node.lineno, *(d.lineno for d in decorators)])


def _first_line(lines: list[str], node: ast.stmt) -> str:
    return lines[_start_line(node) - 1].strip() if _start_line(node) - 1 < len(lines) else ""


def _node_lines(node: ast.stmt, lines: list[str], tree: ast.Module) -> list[str]:
    start, end = _start_line(node), node.end_lineno or node.lineno
    shares_line = any(
        other is not node and _start_line(other) <= end and (other.end_lineno or other.lineno) >= start
        for other in tree.body
    )
    if shares_line:  # `a = 1; train()` on one line: keep only this statement
        return ast.unparse(node).splitlines()
    return lines[start - 1:end]


def _has_code(source: str) -> bool:
    """Whether a module holds more than a docstring (unreadable source counts as code)."""
    try:
        body = parse(source).body
    except SyntaxError:
        return True
    return any(not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)) for n in body)
