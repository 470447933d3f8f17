"""What the student reads about a failure in the child: one-line messages and tracebacks.

Built in the parent from the child's error records, which name files and lines only: a frame
counts when it names one of the student's staged files (by name, never a path the child chose),
and its source line is quoted from the parent's own copy of that file, read before any child ran.
Notebook lines are translated to cells (``StagedSubmission.locate``).
"""
from __future__ import annotations

import dataclasses
import os
import re
import stat
from pathlib import Path

from grader.integrity import ForbiddenCall
from grader.submission import NOTEBOOK_MODULE, PACKAGE_NAME, StagedSubmission

MAX_FRAMES = 30  # student frames shown in one traceback (a deep recursion shows its innermost)
MAX_LINE = 200  # characters of one quoted source line
_FAULT_FRAME = re.compile(r'^\s*File "(.*)", line (\d+) in (.*)$')


class Tracebacks:
    """The student's view of errors for one staged submission."""

    def __init__(self, staged: StagedSubmission) -> None:
        self.staged = staged
        self._sources = {p.name: _read_source(p) for p in staged.module_files}
        self._student_paths = {**{str(p): p.name for p in staged.module_files},
                               **{os.path.realpath(p): p.name for p in staged.module_files}}
        self._student_names = set(self._sources)

    def is_students(self, file: str) -> bool:
        """Whether ``file`` (a name a child sent) is one of the student's staged files."""
        return file in self._student_names

    def module_label(self, stem: str) -> str:
        """What the student calls a module: its file, or the notebook it came from."""
        if stem == NOTEBOOK_MODULE and self.staged.notebook_name:
            return self.staged.notebook_name
        return f"{stem}.py"

    def clean(self, text: str, limit: int = 300) -> str:
        """``text`` on one line, without the staging's paths and package name, at most ``limit`` long."""
        text = text.replace(str(self.staged.package_dir) + os.sep, "")
        text = text.replace(PACKAGE_NAME + ".", "").replace(PACKAGE_NAME, "submission")
        text = " ".join(text.split())
        return text if len(text) <= limit else text[: limit - 3] + "..."

    def message(self, record: dict, importing: str | None) -> str:
        """One line: ``Type: message (file line n, in f)`` for calls, ``Type in file line n: message`` at import."""
        type_name, message = record["type_name"], self.clean(record["message"])
        if record["kind"] == "memory":
            return f"ran out of memory ({type_name}{': ' + message if message else ''})" + self.where(record["frames"])
        if importing is None:
            return f"{type_name}: {message}" + self.where(record["frames"])
        frames = self.own(record["frames"])
        syntax = record["syntax"] if record["syntax"] and record["syntax"][0] in self._student_names else None
        located = syntax or (frames[-1] if frames else None)
        if located is None:
            return f"{type_name} while importing {self.module_label(importing)}: {message}"
        file, line = self.staged.locate(located[0], located[1])
        return f"{type_name} in {file} line {line}: {message}"

    def own(self, frames: list[list]) -> list[list]:
        """The frames in the student's own files, by name (the child's record may name any file)."""
        return [f for f in frames if f[0] in self._student_names]

    def where(self, frames: list[list]) -> str:
        """`` (file line n, in f)`` of the innermost student frame, or "" when there is none."""
        frames = self.own(frames)
        if not frames:
            return ""
        file, line, function, _ = frames[-1]
        file, line = self.staged.locate(file, line)
        return f" ({file} line {line}, in {self.clean(function, 80)})"

    def frames_text(self, frames: list[list], last: str) -> str:
        """A traceback of the student's frames, innermost last: only frames in the student's own
        files (by name), at most MAX_FRAMES of them, each line quoted from the parent's copy (a
        child's own account of its source lines is not shown)."""
        frames = self.own(frames)
        lines: list[str] = []
        if len(frames) > MAX_FRAMES:
            lines.append(f"  [... {len(frames) - MAX_FRAMES} outer frames left out ...]")
            frames = frames[-MAX_FRAMES:]
        repeats = 0
        for i, (file, line, function, _) in enumerate(frames):
            if i and frames[i - 1][:3] == [file, line, function]:
                repeats += 1
                continue
            if repeats > 0:
                lines.append(f"  [Previous line repeated {repeats} more times]")
                repeats = 0
            shown_file, shown_line = self.staged.locate(file, line)
            lines.append(f'  File "{shown_file}", line {shown_line}, in {self.clean(function, 80)}')
            code = self.source_line(file, line)
            if code:
                lines.append(f"    {code}")
        if repeats > 0:
            lines.append(f"  [Previous line repeated {repeats} more times]")
        lines.append(last)
        return "\n".join(lines)

    def traceback(self, record: dict) -> str:
        """The student's traceback of an error record: its frames (or syntax error), then the error."""
        last = f"{record['type_name']}: {self.clean(record['message'], 2000)}"
        if record["syntax"] and record["syntax"][0] in self._student_names:
            file, line, _ = record["syntax"]
            shown_file, shown_line = self.staged.locate(file, line)
            return f'  File "{shown_file}", line {shown_line}\n    {self.source_line(file, line)}\n{last}'
        return self.frames_text(record["frames"], last)

    def source_line(self, file: str, line: int) -> str:
        lines = self._sources.get(file, [])
        return lines[line - 1].strip()[:MAX_LINE] if 0 < line <= len(lines) else ""

    def frames_from_dump(self, text: str) -> list[list]:
        """Student frames of the thread faulthandler reported first, outermost first."""
        for block in re.split(r"\n(?=(?:Current thread|Thread) 0x)", text):
            frames = []
            for row in block.splitlines():
                match = _FAULT_FRAME.match(row)
                if match:
                    name = self._student_paths.get(match.group(1))  # by string: nothing named is opened
                    if name is not None:
                        frames.append([name, int(match.group(2)), match.group(3).strip(), ""])
            if frames:
                return frames[::-1]
        return []

    def translate(self, call: ForbiddenCall) -> ForbiddenCall:
        """A recorded call located as the student knows it (a notebook's cell and line)."""
        file, line = self.staged.locate(call.student_file, call.line)
        return call if (file, line) == (call.student_file, call.line) else dataclasses.replace(
            call, student_file=file, line=line)


def _read_source(path: Path, limit: int = 4 << 20) -> list[str]:
    """The lines of a staged file (the grader's own copy), bounded; a link or a non-file gives none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return []
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return []
        return handle.read(limit).decode("utf-8", errors="replace").splitlines()
