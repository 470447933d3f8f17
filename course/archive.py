"""Writing the course's archives: a zip of a folder, never half-written under its real name, the
assignment names the archives may take, and the torch they install."""
from __future__ import annotations

import argparse
import re
import zipfile
from importlib import metadata
from pathlib import Path


def installed_torch() -> str:
    """``torch==<the version installed here>``: the default pin of what the archives install
    (``make`` passes TORCH_SPEC, the kit's one pin, which installed this torch)."""
    try:
        return f"torch=={metadata.version('torch').split('+')[0]}"
    except metadata.PackageNotFoundError:
        return "torch"


def assignment_name(text: str) -> str:
    """An argparse ``type`` for ``--assignment``: a name safe as a file and folder name."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", text):
        raise argparse.ArgumentTypeError(f"{text!r}: use letters, digits, '.', '_' and '-'")
    return text


def write_zip(archive: Path, folder: Path, names_from: Path) -> Path:
    """Zip every file under ``folder`` (caches left out), named relative to ``names_from`` and
    with its permissions kept (Gradescope runs the scripts as they are)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_suffix(".zip.part")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                zf.write(path, path.relative_to(names_from).as_posix())
    partial.replace(archive)  # an interrupted build leaves no archive that looks whole
    return archive
