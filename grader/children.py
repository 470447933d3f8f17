"""A sandbox child as a process: its environment, its pipes and output, and its end.

``grader.sandbox`` starts one per submission (in the jail, ``grader.jail``) and speaks the wire
(``grader.wire``) over its pipes; this module holds what does not depend on what is said: the
clean environment, the process and its pipes, the bounded tail of what the student's code
printed, and, without a PID namespace, finding and killing what a child left running.
"""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from grader import cgroups


class OutputTail:
    """The last bytes the children wrote to stdout/stderr (``Child.drain`` feeds it)."""

    def __init__(self, limit: int) -> None:
        self._limit = max(limit, 256)
        self._buf = bytearray()
        self._total = 0

    def feed(self, data: bytes) -> None:
        self._buf += data
        self._total += len(data)
        keep = self._limit + 256
        if len(self._buf) > 2 * keep:
            del self._buf[:-keep]

    def mark(self) -> int:
        return self._total

    def since(self, mark: int) -> str:
        wanted = self._total - mark
        cut = wanted > len(self._buf)
        text = bytes(self._buf[len(self._buf) - min(wanted, len(self._buf)):]).decode("utf-8", errors="replace")
        if cut or len(text) > self._limit:
            return "[... earlier output cut ...]\n" + text[-self._limit:]
        return text


def base_env(threads: int, gpu: bool = False) -> dict[str, str]:
    """A clean environment: no PYTHONPATH or user settings, threads pinned, no GPU unless asked."""
    n = str(threads)
    env = {
        "PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg",
        "CUDA_VISIBLE_DEVICES": "",  # CPU only: determinism, and RLIMIT_AS breaks CUDA
    }
    if gpu:
        del env["CUDA_VISIBLE_DEVICES"]
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                "VECLIB_MAXIMUM_THREADS"):
        env[var] = n
    return env


@dataclass
class Child:
    """One worker process and the parent's ends of its pipes."""

    proc: subprocess.Popen
    req_w: int
    resp_r: int
    out_r: int | None  # the student's stdout/stderr, read only while the parent waits for a message
    fault_path: Path
    group: cgroups.TreeGroup | None = None  # its control group, where the machine gives one
    buffer: bytearray = field(default_factory=bytearray)
    exit_code: int | None = None
    stack: list[str] = field(default_factory=list)  # student modules being imported, innermost last
    worker_pid: int | None = None  # the worker's pid as seen here, once it said hello (``python_pid``)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float) -> int | None:
        if self.exit_code is None:
            try:
                self.exit_code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        return self.exit_code

    def drain(self, tail: OutputTail, limit: int = 4 << 20) -> None:
        """Move what waits on the output pipe into ``tail``, without blocking; at most ``limit``
        bytes, so that a process that never stops printing cannot hold the parent here."""
        while self.out_r is not None and limit > 0:
            try:
                data = os.read(self.out_r, 1 << 16)
            except BlockingIOError:
                return
            if not data:
                os.close(self.out_r)
                self.out_r = None
                return
            tail.feed(data)
            limit -= len(data)

    def python_pid(self) -> int:
        """The worker's pid as seen here: the launcher's deepest descendant (bwrap starts two levels)."""
        pid = self.pid
        for _ in range(4):
            children = children_of(pid)
            if not children:
                break
            pid = children[0]
        return pid

    def cpu_demand(self) -> tuple[float, float] | None:
        """(seconds on a CPU, seconds runnable but waiting for one) of the worker's live threads,
        from the scheduler's own account (/proc/<pid>/task/*/schedstat); None where the kernel
        does not keep it. A busy machine shows in the second figure, slow code in the first."""
        return scheduler_seconds(self.worker_pid or self.python_pid())

    def others_cpu(self) -> float:
        """CPU seconds of every other process of the child's tree since it started (what the
        student's code started): CPU the child used, however it split its work."""
        worker = self.worker_pid or self.python_pid()
        return sum(process_cpu(pid) for pid in descendants(self.pid) if pid != worker)

    def kill(self) -> None:
        if self.exit_code is None:  # never signal a pid that may have been reused
            below = descendants(self.pid)
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except OSError:  # not yet its own process group (just started): the process alone
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except OSError:
                    pass
            self.wait(5.0)
            reap(below)

    def close_pipes(self) -> None:
        for fd in (self.req_w, self.resp_r, self.out_r):
            if fd is not None:
                os.close(fd)
        self.out_r = None


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def read_tail(path: Path, start: int, limit: int = 1 << 20) -> str:
    """At most ``limit`` bytes from ``start`` on (the child can write to this file too)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""  # a fifo or device planted by the child
        handle.seek(max(start, handle.seek(0, os.SEEK_END) - limit))
        return handle.read(limit).decode("utf-8", errors="replace")


MARK = "VITKIT_SANDBOX"  # in every child's environment: finds what it left behind without a jail


def become_subreaper() -> None:
    """Orphaned descendants of our children (double forks, new sessions) become our children
    rather than init's, so that ``kill_orphans`` finds them (Linux; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
        except Exception:  # noqa: BLE001 - the layer is then simply absent
            pass


def kill_orphans(marker: str) -> None:
    """Kill and reap the processes that a sandbox child left behind: our children (by the
    subreaper) whose environment carries the child's marker."""
    wanted = f"{MARK}={marker}".encode()
    for pid in children_of(os.getpid()):
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                if wanted not in handle.read().split(b"\0"):
                    continue
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (OSError, ChildProcessError):
            continue


def scheduler_seconds(pid: int) -> tuple[float, float] | None:
    """(on a CPU, waiting for one) in seconds, summed over the threads of ``pid``; None if unreadable."""
    running = waiting = read = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as handle:
                fields = handle.read().split()
            running, waiting, read = running + int(fields[0]), waiting + int(fields[1]), read + 1
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return (running / 1e9, waiting / 1e9) if read else None


def reap(pids: list[int]) -> None:
    """Collect those of ``pids`` (a killed child's tree) that died as our children: where this
    process is a subreaper (``become_subreaper``), bwrap's inner process outlives its parent by an
    instant and would stay a zombie. Only these pids: other children are their owners' to wait for."""
    for pid in pids:
        for _ in range(50):  # it is dying: SIGKILL was sent to its group
            try:
                done, _status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not ours (its parent reaped it) or already collected
                break
            if done:
                break
            time.sleep(0.01)


def run_reaped(command: list[str], timeout: float, **popen: object) -> subprocess.CompletedProcess:
    """``subprocess.run(command, capture_output=True, text=True)`` that also collects the processes
    the command started and left to us as zombies (bwrap's inner process, where this process is a
    subreaper): their pids are noted while it runs. TimeoutExpired after ``timeout`` seconds."""
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen) as proc:
        seen: set[int] = set()
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            seen.update(descendants(proc.pid))
            time.sleep(0.02)
        try:
            out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            reap(sorted(seen))
            raise
    reap(sorted(seen))
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def process_cpu(pid: int) -> float:
    """User and system CPU seconds of ``pid`` and the children it waited for; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime
    except (OSError, ValueError, IndexError):
        return 0.0


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (one pass over /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(parent, []).append(int(entry))
    found, frontier = [], [pid]
    while frontier:
        below = parents.get(frontier.pop(), [])
        found += below
        frontier += below
    return found


def children_of(pid: int) -> list[int]:
    """The direct children of ``pid`` (from /proc), oldest first."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return sorted(found)
