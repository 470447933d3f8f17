"""The operating system's isolation of the student's code, in layers, detected once per run.

Every child that runs student code is started by ``jail_command``. Where bubblewrap works, the
child runs in its own mount, PID, network, IPC and UTS namespaces: it sees the Python
installation (read-only), the staged submission and the runner folder (read-only), and its own
writable folder; not the grader, the reference, the theory, the data directory or any output
folder. When its first process ends, every process it started ends too (PID namespace), whatever
session it put itself in. When the grader runs as root, the child also drops to a dedicated
unprivileged uid with no capabilities (``setpriv``). Where the machine lets the grader make control
groups, each child's whole process tree has its memory and process count capped and is ended
through its group (``grader.cgroups``), jail or not. Where a layer is missing, grading still
works and ``Isolation.layers`` says plainly what is not isolated; the report shows those lines.
"""
from __future__ import annotations

import functools
import os
import shutil
import site
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from grader import cgroups

# The uid the child drops to when the grader runs as root: not a user of the system, so that
# RLIMIT_NPROC (counted per uid) caps the child's own processes and threads only.
JAIL_UID = 61_000
# Processes and threads of the jail's uid; torch starts one thread per core and a few more.
JAIL_NPROC = 512
# The kit's own packages: hidden from the child even where they are installed into site-packages.
KIT_PACKAGES = ("grader", "reference", "theory", "student_template", "course", "tests")
_REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Isolation:
    """What isolates the child on this machine; ``layers`` is one line per layer, for people."""

    bwrap: str | None  # the bubblewrap executable, when it works here
    uid: int | None  # the uid the child runs as, when it differs from the grader's
    layers: tuple[str, ...]
    tree: cgroups.Hierarchy | None = None  # where each child gets a capped control group

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


def python_roots() -> list[Path]:
    """Folders holding this interpreter and its packages (not the kit's source tree)."""
    roots = {Path(sys.base_prefix), Path(sys.prefix), Path(sys.executable).resolve().parent.parent}
    for entry in [*site.getsitepackages(), site.getusersitepackages()]:
        if entry and Path(entry).is_dir():
            roots.add(Path(entry))
    keep = sorted(r.resolve() for r in roots if r.is_dir())
    # Drop nested roots, and never the kit's tree itself (a venv inside it is fine: bound alone).
    keep = [r for r in keep if not any(o != r and o in r.parents for o in keep)]
    return [r for r in keep if r != _REPO and r not in _REPO.parents]


def _dirs(path: Path) -> list[str]:
    """``--dir`` for every parent of ``path``, world-readable (bwrap makes them 0700 as root)."""
    args: list[str] = []
    for parent in reversed(path.parents):
        if str(parent) not in ("/", "/tmp"):
            args += ["--perms", "0755", "--dir", str(parent)]
    return args


def _masks(roots: list[Path]) -> list[str]:
    """Empty folders over the kit's packages where they are installed in site-packages."""
    args: list[str] = []
    for root in roots:
        for package in KIT_PACKAGES:
            found = root / package
            if found.is_dir():
                args += ["--tmpfs", str(found)]
    return args


def jail_command(isolation: Isolation, argv: list[str], *, read_only: list[Path], writable: list[Path],
                 gpu: bool = False) -> list[str]:
    """``argv`` wrapped in the jail: ``read_only`` and ``writable`` folders are bound at their own
    paths (so paths mean the same inside and out), nothing else of the grader's files is visible."""
    if isolation.bwrap is None:
        return argv
    args = [isolation.bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--die-with-parent", "--new-session"]
    if isolation.uid is None and os.geteuid() != 0:
        args.append("--unshare-user")  # an unprivileged grader: namespaces through a user namespace
    # /tmp first: a tmpfs mounted later would hide the folders bound under it
    args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp"]
    args += _system_binds()
    roots = python_roots()
    for path in [*roots, *read_only, *writable]:
        args += _dirs(Path(path))
    for root in roots:
        args += ["--ro-bind", str(root), str(root)]
    args += _masks(roots)
    for path in read_only:
        args += ["--ro-bind", str(path), str(path)]
    for path in writable:
        args += ["--bind", str(path), str(path)]
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


def prepare(path: Path, isolation: Isolation, *, writable: bool = False) -> None:
    """Make ``path`` (a folder the grader made) usable by the jail's uid: readable, or owned."""
    if isolation.uid is None:
        return
    path.chmod(0o755)
    if writable:
        os.chown(path, isolation.uid, isolation.uid)


@functools.lru_cache(maxsize=1)
def detect() -> Isolation:
    """Try each layer once on this machine and describe what works."""
    bwrap = shutil.which("bwrap")
    root = os.geteuid() == 0
    uid = JAIL_UID if root and shutil.which("setpriv") else None
    why = "bubblewrap is not installed (Debian: apt-get install bubblewrap)"
    if bwrap is not None and os.environ.get("VITKIT_NO_JAIL") != "1":
        trial = Isolation(bwrap, uid, ())
        try:
            done = subprocess.run(jail_command(trial, [sys.executable, "-c", "import os; print(os.getuid())"],
                                               read_only=[], writable=[]),
                                  capture_output=True, text=True, timeout=60)
            if done.returncode == 0:
                return _describe(bwrap, uid, "", *_tree())
            why = f"bubblewrap did not start here ({(done.stderr.strip() or 'exit ' + str(done.returncode))[:200]})"
        except (OSError, subprocess.TimeoutExpired) as exc:
            why = f"bubblewrap did not start here ({exc})"
    elif bwrap is not None:
        why = "turned off by VITKIT_NO_JAIL=1"
    return _describe(None, None, why, *_tree())


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
    layers = (
        "filesystem: the student's code sees only the Python installation, its own files and a private "
        "temporary folder (bubblewrap mount namespace)",
        "processes: every process the student's code starts ends with its check (PID namespace)",
        "network: none (network namespace)",
        user,
        limits,
    )
    return Isolation(bwrap, uid, layers, tree)


RUNNER_PACKAGE = "vitkit_child"
# What the child runs: the worker, its run-time traps and probes, and the kit's training code
# (the same files students get). Nothing else of the grader or the reference.
RUNNER_FILES = {"worker.py": _REPO / "grader" / "worker.py", "integrity.py": _REPO / "grader" / "integrity.py",
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
