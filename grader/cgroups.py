"""Caps on a child's whole process tree (resident memory, processes and threads), and a sure way
to end that tree, through a control group per child where this machine lets the grader make one.

Per-process limits (RLIMIT_AS) do not stop a submission that splits its memory over many
processes; a cgroup counts them together, and everything started inside one stays inside it,
whatever session or process group it moves to. Both cgroup layouts are handled: the unified
hierarchy (v2: one folder, ``memory.max``, ``pids.max``) and the legacy one (v1: a folder per
controller, ``memory.limit_in_bytes``). The child enters its group before ``exec`` (a one-line
shell wrapper), so nothing it starts is ever outside.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CONTROLLERS = ("memory", "pids")
_ENTER = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'


@dataclass(frozen=True)
class Hierarchy:
    """Where this grader may make child groups: ``parents`` is the grader's own group, one folder
    for v2, the memory folder then the pids folder for v1."""

    version: int
    parents: tuple[Path, ...]


def _own_groups(proc_cgroup: Path) -> dict[str, str]:
    """Controller (or "" for v2) -> the grader's group path, from /proc/self/cgroup."""
    groups: dict[str, str] = {}
    for line in proc_cgroup.read_text().splitlines():
        number, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            groups[name] = path
    return groups


def _folder(mount: Path, path: str) -> Path:
    """The grader's group under ``mount``; a container often mounts its own group as the root."""
    nested = mount / path.lstrip("/")
    return nested if nested.is_dir() else mount


def _writable(parent: Path) -> bool:
    probe = parent / f"vitkit-probe-{os.getpid()}"
    try:
        probe.mkdir()
    except OSError:
        return False
    probe.rmdir()
    return True


def find(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")) -> tuple[Hierarchy | None, str]:
    """The hierarchy the grader can make capped groups in, or None and why not."""
    try:
        groups = _own_groups(proc_cgroup)
    except (OSError, ValueError):
        return None, "this system has no control groups (/proc/self/cgroup)"
    if (root / "cgroup.controllers").is_file():  # the unified hierarchy mounted alone
        parent = _folder(root, groups.get("", "/"))
        try:
            available = (parent / "cgroup.controllers").read_text().split()
            enabled = (parent / "cgroup.subtree_control").read_text().split()
        except OSError:
            return None, "the grader's control group cannot be read"
        missing = [c for c in CONTROLLERS if c not in available]
        if missing:
            return None, f"the {' and '.join(missing)} controller is not delegated to the grader's control group"
        if any(c not in enabled for c in CONTROLLERS):
            try:  # fails when the grader's group holds processes (cgroup v2 puts them in leaves only)
                (parent / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in CONTROLLERS))
            except OSError as exc:
                return None, (f"cannot enable memory and pids for child groups ({exc.strerror}); run the grader "
                              "in a delegated group, e.g. systemd-run --scope -p Delegate=yes")
        if not _writable(parent):
            return None, "the grader's control group is read-only here"
        return Hierarchy(2, (parent,)), ""
    parents = []
    for name in CONTROLLERS:
        mount = root / name
        if name not in groups or not mount.is_dir():
            return None, f"the {name} controller is not mounted"
        parents.append(_folder(mount, groups[name]))
    if not all(_writable(p) for p in parents):
        return None, "the control groups are read-only here (a container without a delegated cgroup)"
    return Hierarchy(1, tuple(parents)), ""


class TreeGroup:
    """One child's group: made with its caps, entered by the child before it runs, ended and
    removed with it."""

    def __init__(self, hierarchy: Hierarchy, name: str, memory_bytes: int | None, processes: int | None) -> None:
        self.hierarchy = hierarchy
        self.folders = tuple(parent / name for parent in hierarchy.parents)
        self.memory_bytes = memory_bytes
        for folder in self.folders:
            folder.mkdir()
        memory, pids = (self.folders[0], self.folders[-1])
        if hierarchy.version == 2:
            if memory_bytes is not None:
                _write(memory / "memory.max", memory_bytes)
                _write(memory / "memory.swap.max", 0, optional=True)
            if processes is not None:
                _write(pids / "pids.max", processes)
        else:
            if memory_bytes is not None:
                _write(memory / "memory.limit_in_bytes", memory_bytes)
                _write(memory / "memory.memsw.limit_in_bytes", memory_bytes, optional=True)  # no swapping past it
            if processes is not None:
                _write(pids / "pids.max", processes)

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` started inside this group (the shell enters it, then becomes ``argv``)."""
        return ["/bin/sh", "-c", _ENTER, "vitkit-enter", *(str(f / "cgroup.procs") for f in self.folders), "--", *argv]

    def pids(self) -> list[int]:
        found: set[int] = set()
        for folder in self.folders:
            try:
                found.update(int(p) for p in (folder / "cgroup.procs").read_text().split())
            except (OSError, ValueError):
                pass
        return sorted(found)

    def ran_out_of_memory(self) -> bool:
        """Whether the kernel killed a process of this group for its memory cap."""
        memory = self.folders[0]
        name = "memory.events" if self.hierarchy.version == 2 else "memory.oom_control"
        try:
            fields = dict(line.split()[:2] for line in (memory / name).read_text().splitlines() if line.strip())
            return int(fields.get("oom_kill", 0)) > 0  # kernels before 4.13 do not count: False
        except (OSError, ValueError):
            return False

    def peak_bytes(self) -> int | None:
        """The most memory the group's processes held together so far (None where the kernel does not say)."""
        name = "memory.peak" if self.hierarchy.version == 2 else "memory.max_usage_in_bytes"
        try:
            return int((self.folders[0] / name).read_text())
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        """Kill every process still in the group, then remove it."""
        if self.hierarchy.version == 2 and (self.folders[0] / "cgroup.kill").exists():
            _write(self.folders[0] / "cgroup.kill", 1, optional=True)
        for _ in range(200):  # a process may fork while we kill: repeat until the group is empty
            alive = self.pids()
            if not alive:
                break
            for pid in alive:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.01)
        for folder in self.folders:
            for _ in range(100):  # rmdir fails while the last processes are being reaped
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def _write(path: Path, value: int, *, optional: bool = False) -> None:
    try:
        path.write_text(str(value))
    except OSError:
        if not optional:
            raise
