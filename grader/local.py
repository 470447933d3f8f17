"""Calls of the grader's probes in this process: how the handout's visible tests run the
students' checks on the student's own machine, where there is nothing to protect and no sandbox.

The submission is imported as the grader's child imports it (its modules as ``PACKAGE_NAME.<name>``,
so that a class is the student's by the same test) and every call starts from the state a child
starts each request from (``worker.reset_state`` with the same seed), so that a check sees here the
numbers ``make check`` sees. The handout carries this file with ``checklib``, ``probes`` and the
child's ``worker`` (``course.visible_checks``).
"""
from __future__ import annotations

import importlib
import sys
import traceback
import types
from pathlib import Path
from typing import Any

import torch

from . import probes
from .checklib import PACKAGE_NAME, Outcome
from .worker import build_namespace, classify, reset_state, to_plain

MODULES = ("attention", "blocks", "vit")  # the exercises, in the template's layout


class LocalSubmission:
    """The submission in ``folder`` (the template's layout), imported on the first call."""

    def __init__(self, folder: Path, seed: int) -> None:
        self.folder, self.seed = Path(folder).resolve(), seed
        self.statuses: dict[str, str] | None = None  # module -> "ok" or why its import failed
        self.ns: Any = None

    def modules(self) -> dict[str, str]:
        """Import the exercises (once): each module's status, "ok" or why it could not be imported."""
        if self.statuses is None:
            package = types.ModuleType(PACKAGE_NAME)
            package.__path__ = [str(self.folder)]  # the grader's own empty package over the student's files
            sys.modules[PACKAGE_NAME] = package
            imported, self.statuses = {}, {}
            for name in MODULES:
                reset_state(self.seed, torch.get_num_threads())
                try:
                    imported[name] = importlib.import_module(f"{PACKAGE_NAME}.{name}")
                    self.statuses[name] = "ok"
                except BaseException as e:  # noqa: BLE001 -- the student's module may raise anything
                    self.statuses[name] = self._said(e)
            self.ns = build_namespace(imported)
        return self.statuses

    def call(self, probe: str, *args: Any) -> Outcome:
        """``probes.<probe>(ns, *args)`` from a child's starting state; its value as plain data."""
        self.modules()
        reset_state(self.seed, torch.get_num_threads())
        try:
            return Outcome(True, value=to_plain(getattr(probes, probe)(self.ns, *args)))
        except Exception as e:  # noqa: BLE001 -- reported as the sandbox reports it
            return Outcome(False, error=self._said(e), kind=classify(e), student_traceback=self._frames(e))

    def _said(self, e: BaseException) -> str:
        """``Type: message``, with the innermost line of the student's code (as the sandbox says it)."""
        frames = self._own(e)
        where = f" ({Path(frames[-1].filename).name} line {frames[-1].lineno}, in {frames[-1].name})" if frames else ""
        return f"{type(e).__name__}: {e}{where}"

    def _frames(self, e: BaseException) -> str:
        return "".join(traceback.format_list(self._own(e)))

    def _own(self, e: BaseException) -> list[traceback.FrameSummary]:
        return [f for f in traceback.extract_tb(e.__traceback__) if Path(f.filename).resolve().parent == self.folder]
