"""``python -m course.template`` (``make template``): generate ``student_template/`` from ``reference/``.

In the reference's exercise modules every solution sits between two marker lines:

    # BEGIN SOLUTION hint: what the student should do, in one line
    ...the reference code...
    # END SOLUTION

The student template keeps everything else (signatures, docstrings) and replaces each marked
region with the hint as a ``# TODO`` comment and ``raise NotImplementedError``. Provided modules
(data, training, configs, plotting) are copied byte for byte; the notebooks and the theory
question sheet are generated. ``--check`` regenerates into a
temporary directory and reports any file that differs from the committed template.
"""
from __future__ import annotations

import argparse
import ast
import filecmp
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXERCISES = ("attention.py", "blocks.py", "vit.py")
PROVIDED = ("data.py", "training.py", "configs.py", "plotting.py")
BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"

INIT_DOCSTRING = '''"""Student template of the attention and Vision Transformer homework.

Fill in the parts marked TODO in attention.py, blocks.py and vit.py; data.py, training.py,
configs.py and plotting.py are provided and need no change.
"""
'''


class TemplateError(ValueError):
    """The reference's solution markers are malformed; the message says where."""


def _scopes(source: str, filename: str) -> list[tuple[int, int, str]]:
    """(first line, last line, qualified name) of every function and class, from the syntax tree
    (a docstring line that looks like a definition is not one)."""
    try:
        tree = ast.parse(source, filename)
    except SyntaxError:
        return []  # the markers' own errors are reported by the caller; names fall back to "this exercise"
    found: list[tuple[int, int, str]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                found.append((child.lineno, child.end_lineno or child.lineno, name))
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def _innermost(scopes: list[tuple[int, int, str]], line: int) -> str:
    inside = [(first, name) for first, last, name in scopes if first <= line <= last]
    return max(inside)[1] if inside else ""


def clear_solutions(source: str, filename: str = "<source>") -> str:
    """Replace every marked solution region in ``source`` by its hint and ``raise NotImplementedError``."""
    out: list[str] = []
    scopes = _scopes(source, filename)
    begin_line = 0
    hint = ""
    for number, line in enumerate(source.splitlines(keepends=True), start=1):
        stripped = line.strip()
        if begin_line:
            if stripped.startswith(BEGIN):
                raise TemplateError(f"{filename}:{number}: nested {BEGIN} (the one at line {begin_line} is still open)")
            if stripped.startswith(END):
                begin_line = 0
            continue
        if stripped.startswith(END):
            raise TemplateError(f"{filename}:{number}: {END} without a {BEGIN}")
        if stripped.startswith(BEGIN):
            indent = line[: len(line) - len(line.lstrip())]
            hint = stripped[len(BEGIN):].strip()
            hint = hint[len("hint:"):].strip() if hint.startswith("hint:") else hint
            where = _innermost(scopes, number) or "this exercise"
            if hint:
                out.append(f"{indent}# TODO: {hint}\n")
            out.append(f'{indent}raise NotImplementedError("{where}: not implemented yet")\n')
            begin_line = number
            continue
        out.append(line)
    if begin_line:
        raise TemplateError(f"{filename}:{begin_line}: {BEGIN} is never closed by {END}")
    return "".join(out)


def generate(reference_dir: Path, out_dir: Path) -> list[Path]:
    """Write the student template into ``out_dir``; return the files written."""
    from .notebooks import NOTEBOOKS  # the notebooks are built from code, not copied

    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "__init__.py"]
    written[0].write_text(INIT_DOCSTRING)
    for name in EXERCISES:
        source = (reference_dir / name).read_text()
        if BEGIN not in source:
            raise TemplateError(f"{reference_dir / name}: an exercise module without any {BEGIN} marker")
        header = f"# Student template, generated from reference/{name}: fill in every TODO.\n"
        (out_dir / name).write_text(header + clear_solutions(source, str(reference_dir / name)))
        written.append(out_dir / name)
    for name in PROVIDED:
        source = (reference_dir / name).read_text()
        if BEGIN in source:
            raise TemplateError(f"{reference_dir / name}: provided modules are copied unchanged and must hold no markers")
        (out_dir / name).write_text(source)
        written.append(out_dir / name)
    for name, build in NOTEBOOKS.items():
        (out_dir / name).write_text(build())
        written.append(out_dir / name)
    from theory.build import question_sheet  # the theory questions, without their answers

    written.append(out_dir / "theory_questions.md")
    written[-1].write_text(question_sheet())
    return written


def stale_files(reference_dir: Path, template_dir: Path) -> list[str]:
    """Files of the committed template that differ from a fresh generation (or are missing)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(reference_dir, Path(tmp))
        return [f.name for f in fresh
                if not (template_dir / f.name).is_file() or not filecmp.cmp(f, template_dir / f.name, shallow=False)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course.template", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, default=REPO / "reference")
    parser.add_argument("--out", type=Path, default=REPO / "student_template")
    parser.add_argument("--check", action="store_true", help="only report files that are out of date")
    args = parser.parse_args(argv)
    try:
        if args.check:
            stale = stale_files(args.reference, args.out)
            if stale:
                print(f"student template out of date: {', '.join(stale)}; run `make template`", file=sys.stderr)
                return 1
            print("student template is up to date")
            return 0
        written = generate(args.reference, args.out)
    except TemplateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
