"""The operating system's isolation of the student's code, in layers, detected once per run.

Every child that runs student code is started by ``jail_command``. Where bubblewrap works, the
child runs in its own mount, PID, network, IPC and UTS namespaces: it sees the Python
installation (read-only), the staged submission and the runner folder (read-only), and its own
writable folder; not the grader, the reference, the theory, the data directory or any output
folder. The kit's own packages are hidden wherever they lie: in a checkout (not bound), or
installed into the Python installation the child needs (``pip install``, the Gradescope bundle),
where empty folders are mounted over them. When its first process ends, every process it started
ends too (PID namespace), whatever session it put itself in. When the grader runs as root, the
child also drops to a dedicated unprivileged uid with no capabilities (``setpriv``). Where the
machine lets the grader make control groups, each child's whole process tree has its memory and
process count capped and is ended through its group (``grader.cgroups``), jail or not.

``detect`` proves the jail before trusting it: a trial child must start, run as an unprivileged
uid and find none of the kit's files. Where that fails, ``Isolation.complete`` is False and the
grader refuses to grade (``require``) unless the instructor accepted the risk; ``layers`` says
plainly what is not isolated, for the instructor's report and log (never the student's output).
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from grader import cgroups
from grader.children import run_reaped

# The uid the child drops to when the grader runs as root: not a user of the system, so that
# RLIMIT_NPROC (counted per uid) caps the child's own processes and threads only.
JAIL_UID = 61_000
# Processes and threads of the jail's uid; torch starts one thread per core and a few more.
JAIL_NPROC = 512
# The child's writable space in the jail: its working folder and /tmp, each a private in-memory
# folder (tmpfs) of this size, so that it cannot fill the grader's disk (its memory is charged to
# the child's control group, where there is one).
SCRATCH_BYTES = 512 << 20
# The kit's own packages: hidden from the child even where they are installed into site-packages.
KIT_PACKAGES = ("grader", "reference", "theory", "student_template", "course", "tests")
_REPO = Path(__file__).resolve().parent.parent
# Set to 1 (or pass --allow-unisolated) to grade where the jail cannot be had: the student's code
# then runs with the grader's rights. For a developer's machine or a trusted class, never by default.
ALLOW_ENV = "VITKIT_ALLOW_UNISOLATED"


class IsolationError(RuntimeError):
    """The student's code cannot be isolated here and the instructor did not accept the risk."""


@dataclass(frozen=True)
class Isolation:
    """What isolates the child on this machine; ``layers`` is one line per layer, for people."""

    bwrap: str | None  # the bubblewrap executable, when it works here
    uid: int | None  # the uid the child runs as, when it differs from the grader's
    layers: tuple[str, ...]
    tree: cgroups.Hierarchy | None = None  # where each child gets a capped control group

    @property
    def complete(self) -> bool:
        """The jail runs and the child is unprivileged: what grading needs without an explicit waiver."""
        return self.bwrap is not None and (self.uid is not None or os.geteuid() != 0)

    @property
    def nproc(self) -> int | None:
        """RLIMIT_NPROC for the child: only with a dedicated uid (it counts every process of the uid)."""
        return JAIL_NPROC if self.uid is not None else None


def _system_binds() -> list[str]:
    """The system folders a Python interpreter needs, read-only; merged-/usr links kept as links."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    for name in ("/etc/ld.so.cache", "/etc/alternatives", "/etc/localtime"):
        if os.path.exists(name):
            args += ["--ro-bind", name, name]
    return args


def python_roots(nested: bool = False) -> list[Path]:
    """Folders holding this interpreter and its packages; ``nested``: also those inside others."""
    roots = {Path(sys.base_prefix), Path(sys.prefix), Path(sys.executable).resolve().parent.parent}
    for entry in [*site.getsitepackages(), site.getusersitepackages()]:
        if entry and Path(entry).is_dir():
            roots.add(Path(entry))
    keep = sorted({r.resolve() for r in roots if r.is_dir()})
    return keep if nested else [r for r in keep if not any(o != r and o in r.parents for o in keep)]


def kit_locations() -> list[Path]:
    """Where the kit's own files are on this machine: each of its packages wherever Python finds
    it (a checkout, site-packages), this very package, and the checkout when run from one."""
    found = {Path(__file__).resolve().parent}
    for package in KIT_PACKAGES:
        spec = _spec(package)
        for location in (spec.submodule_search_locations or []) if spec is not None else []:
            found.add(Path(location).resolve())
    if (_REPO / "pyproject.toml").is_file():  # a checkout: tests, Makefile and all
        found.add(_REPO)
    for root in python_roots(nested=True):  # the installed kit's metadata (its file list)
        found.update(p.resolve() for p in root.glob("vit_homework_kit-*.dist-info"))
    return sorted(found)


def _inside(path: Path, folders: list[Path]) -> bool:
    return any(path == f or f in path.parents for f in folders)


def _dirs(path: Path) -> list[str]:
    """``--dir`` for every parent of ``path``, world-readable (bwrap makes them 0700 as root)."""
    args: list[str] = []
    for parent in reversed(path.parents):
        if str(parent) not in ("/", "/tmp"):
            args += ["--perms", "0755", "--dir", str(parent)]
    return args


def _masks(bound: list[Path]) -> list[str]:
    """Empty folders over the kit's files that lie inside what the child sees (``bound``); then the
    Python folders inside those, bound again (a venv inside a checkout that is itself visible)."""
    hidden = [p for p in kit_locations() if p.is_dir() and _inside(p, bound)]
    args: list[str] = []
    for path in hidden:
        args += ["--tmpfs", str(path)]
    for root in python_roots(nested=True):
        if _inside(root, hidden) and root not in hidden:
            args += [*_dirs(root), "--ro-bind", str(root), str(root)]
    return args


def jail_command(isolation: Isolation, argv: list[str], *, read_only: list[Path], writable: list[Path],
                 scratch: list[Path] = (), gpu: bool = False) -> list[str]:
    """``argv`` wrapped in the jail: ``read_only`` and ``writable`` paths (folders or files) are
    bound at their own paths (so paths mean the same inside and out), each of ``scratch`` is a new
    empty folder of SCRATCH_BYTES at most, visible to the child only; nothing else of the grader's
    files is visible."""
    if isolation.bwrap is None:
        return argv
    args = [isolation.bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--die-with-parent", "--new-session"]
    if isolation.uid is None and os.geteuid() != 0:
        args.append("--unshare-user")  # an unprivileged grader: namespaces through a user namespace
    # /tmp first: a tmpfs mounted later would hide the folders bound under it
    args += ["--proc", "/proc", "--dev", "/dev", *_sized(isolation.bwrap), "--perms", "1777", "--tmpfs", "/tmp"]
    args += _system_binds()
    roots = python_roots()
    for path in [*roots, *read_only, *writable, *scratch]:
        args += _dirs(Path(path))
    for root in roots:
        args += ["--ro-bind", str(root), str(root)]
    args += _masks([Path("/usr"), *roots])
    for path in read_only:
        args += ["--ro-bind", str(path), str(path)]
    for path in writable:
        args += ["--bind", str(path), str(path)]
    for path in scratch:
        args += [*_sized(isolation.bwrap), "--perms", "1777", "--tmpfs", str(path)]
    if gpu:  # CUDA needs its device nodes and the driver's /proc entries
        for node in sorted(Path("/dev").glob("nvidia*")):
            args += ["--dev-bind", str(node), str(node)]
        if os.path.isdir("/proc/driver/nvidia"):
            args += ["--ro-bind", "/proc/driver/nvidia", "/proc/driver/nvidia"]
    args.append("--")
    if isolation.uid is not None:
        args += [shutil.which("setpriv") or "/usr/bin/setpriv", f"--reuid={isolation.uid}",
                 f"--regid={isolation.uid}", "--clear-groups", "--no-new-privs"]
    return args + argv


@functools.lru_cache(maxsize=4)
def _sized(bwrap: str) -> tuple[str, ...]:
    """``--size SCRATCH_BYTES`` for the next tmpfs, where this bubblewrap has it (0.7 and later)."""
    try:
        usage = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        usage = ""
    return ("--size", str(SCRATCH_BYTES)) if "--size" in usage else ()


def prepare(path: Path, isolation: Isolation, *, writable: bool = False) -> None:
    """Make ``path`` (a folder or file the grader made) usable by the jail's uid: readable, or owned."""
    if isolation.uid is None:
        return
    path.chmod(0o755 if path.is_dir() else 0o644)
    if writable:
        os.chown(path, isolation.uid, isolation.uid)


# The trial child: its uid, and which of the kit's files (by path, or by package name) it can find.
# (A folder mounted over is empty: importing its name finds an empty namespace package, origin None.)
_TRIAL = ("import importlib.util, json, os, sys; names, paths = json.loads(sys.argv[1]); "
          "found = lambda n: getattr(importlib.util.find_spec(n), 'origin', None) is not None; "
          "print(json.dumps({'uid': os.getuid(), 'seen': [p for p in paths if os.path.lexists(p)] "
          "+ [n for n in names if found(n)]}))")


@functools.lru_cache(maxsize=1)
def detect() -> Isolation:
    """Try each layer once on this machine and describe what works. The jail counts only when a
    trial child in it starts, is not root, and sees none of the kit's files."""
    bwrap = shutil.which("bwrap")
    root = os.geteuid() == 0
    uid = JAIL_UID if root and shutil.which("setpriv") else None
    why = "bubblewrap is not installed (Debian: apt-get install bubblewrap)"
    if bwrap is not None and os.environ.get("VITKIT_NO_JAIL") != "1":
        why = _trial(Isolation(bwrap, uid, ()))
        if not why:
            return _describe(bwrap, uid, "", *_tree())
    elif bwrap is not None:
        why = "turned off by VITKIT_NO_JAIL=1"
    return _describe(None, None, why, *_tree())


def _trial(isolation: Isolation) -> str:
    """Why the jail cannot be trusted here ("" when it can): a child started in it must run and
    find nothing of the kit's."""
    names = [n for n in KIT_PACKAGES if _spec(n) is not None]
    paths = [str(_marker(p)) for p in kit_locations()]
    command = jail_command(isolation, [sys.executable, "-s", "-c", _TRIAL, json.dumps([names, paths])],
                           read_only=[], writable=[])
    env = {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8"}
    try:
        done = run_reaped(command, 60, env=env, cwd="/")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap did not start here ({exc})"
    if done.returncode != 0:
        return f"bubblewrap did not start here ({(done.stderr.strip() or 'exit ' + str(done.returncode))[:200]})"
    try:
        seen = json.loads(done.stdout.strip().splitlines()[-1])
        child_uid, visible = int(seen["uid"]), [str(v) for v in seen["seen"]]
    except (ValueError, KeyError, IndexError, TypeError):
        return f"the trial child in the jail answered {done.stdout[-200:]!r}"
    if visible:
        return f"the jail did not hide the kit's files from the child ({', '.join(visible)[:300]})"
    if child_uid == 0:
        return "the child ran as root in the jail (setpriv is missing: apt-get install util-linux)"
    return ""


def _marker(folder: Path) -> Path:
    """A file that shows ``folder``'s content (a mounted-over or mount-point folder is empty)."""
    for name in ("__init__.py", "pyproject.toml", "RECORD"):
        if (folder / name).is_file():
            return folder / name
    return next((p for p in sorted(folder.iterdir()) if p.is_file()), folder) if folder.is_dir() else folder


def _spec(package: str) -> importlib.machinery.ModuleSpec | None:
    """Where this Python finds ``package`` (None: nowhere, or a lookup that fails)."""
    try:
        return importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None


def require(isolation: Isolation, allowed: bool = False) -> None:
    """IsolationError unless the jail is complete here or the instructor accepted the risk
    (``allowed``: --allow-unisolated, or ``VITKIT_ALLOW_UNISOLATED=1``)."""
    if isolation.complete or allowed or os.environ.get(ALLOW_ENV) == "1":
        return
    off = "; ".join(line for line in isolation.layers if "OFF" in line) or isolation.layers[0]
    raise IsolationError(
        f"the student's code cannot be isolated on this machine, so nothing was graded: {off}. Install "
        f"bubblewrap (make jail, or apt-get install bubblewrap) where it can create namespaces; or, for "
        f"submissions you trust, accept the risk with --allow-unisolated ({ALLOW_ENV}=1)")


def _tree() -> tuple[cgroups.Hierarchy | None, str]:
    if os.environ.get("VITKIT_NO_JAIL") == "1":
        return None, "turned off by VITKIT_NO_JAIL=1"
    return cgroups.find()


def _describe(bwrap: str | None, uid: int | None, why: str = "", tree: cgroups.Hierarchy | None = None,
              tree_why: str = "no control groups") -> Isolation:
    if tree is not None:
        limits = (f"limits: memory and processes capped for the whole process tree (control group v{tree.version}); "
                  "memory per process (RLIMIT_AS), file size, wall clock per check")
    else:
        limits = (f"limits: memory per process (RLIMIT_AS), file size, wall clock per check; memory and processes "
                  f"are not capped for the whole process tree ({tree_why})")
    if bwrap is None:
        who = "root" if os.geteuid() == 0 else "the grader's user"
        processes = ("processes: every process the student's code starts ends with its check (control group)"
                     if tree is not None else
                     "processes: partly: what the student's code leaves running is killed when its check ends, "
                     "unless it cleared its environment")
        layers = (
            f"filesystem: OFF ({why}): the student's code can read everything the grader's user can, "
            "the data directory and the reference included",
            processes,
            "network: OFF: the student's code can use the network",
            f"user: OFF: the student's code runs as {who}",
            limits,
        )
        return Isolation(None, None, layers, tree)
    user = (f"user: a dedicated unprivileged uid ({uid}) with no capabilities, at most {JAIL_NPROC} processes"
            if uid is not None else "user: the grader's own (unprivileged) user, in a user namespace")
    disk = (f"disk: the student's code writes only to private in-memory folders of {SCRATCH_BYTES >> 20} MiB each"
            if _sized(bwrap) else "disk: the student's code writes only to private in-memory folders, of no fixed "
            "size (this bubblewrap has no --size; its control group, where there is one, caps them with its memory)")
    layers = (
        "filesystem: the student's code sees only the Python installation, its own files and a private "
        "temporary folder (bubblewrap mount namespace)",
        disk,
        "processes: every process the student's code starts ends with its check (PID namespace)",
        "network: none (network namespace)",
        user,
        limits,
    )
    return Isolation(bwrap, uid, layers, tree)


RUNNER_PACKAGE = "vitkit_child"
# What the child runs: the worker, its run-time traps and probes, and the kit's training code
# (the same files students get). Nothing else of the grader or the reference.
RUNNER_FILES = {"worker.py": _REPO / "grader" / "worker.py", "wire.py": _REPO / "grader" / "wire.py",
                "integrity.py": _REPO / "grader" / "integrity.py",
                "probes.py": _REPO / "grader" / "probes.py", "training.py": _REPO / "student_template" / "training.py",
                "data.py": _REPO / "student_template" / "data.py"}


def stage_runner(folder: Path) -> Path:
    """Copy the child's code into ``folder/vitkit_child/``; returns ``folder`` (for sys.path)."""
    package = folder / RUNNER_PACKAGE
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text('"""The grader\'s child-side code, copied here for the jail."""\n')
    for name, source in RUNNER_FILES.items():
        shutil.copyfile(source, package / name)
    return folder
