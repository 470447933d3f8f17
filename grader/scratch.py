"""Folders the student's code may fill: the grader's temporary folders, removed whatever they hold.

In the jail the child writes only to private in-memory folders of bounded size (``grader.jail``);
without it, or where a child wrote into a folder of the grader's, a tree of any depth or size may
be left behind. ``shutil.rmtree`` recurses once per level and fails past about a thousand levels
(RecursionError), so removal falls back to ``rm -rf``, which walks any depth without following
links."""
from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator


def remove_tree(path: Path) -> None:
    """Remove ``path`` and everything under it, however deep; never follows a link; says nothing
    when something cannot be removed (like ``rmtree(ignore_errors=True)``)."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        return
    except (OSError, RecursionError):
        try:
            subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], capture_output=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired):
            pass


@contextlib.contextmanager
def temporary_folder(prefix: str) -> Iterator[Path]:
    """A new temporary folder, removed with ``remove_tree`` at the end, whatever it then holds."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        remove_tree(path)
