"""Run student code in a child process; the parent (the grader) decides everything.

One long-lived worker child per submission imports the staged package once and answers
``call`` requests. A request names a *probe*, a grader-side function ``"package.module:function"``
that the child imports and calls as ``function(ns, *args, **kwargs)``, where ``ns`` is the
submission's namespace (``ns.VisionTransformer``, ``ns.modules["attention"]``; see
``grader.worker.SubmissionNamespace``). For example, in ``grader/probes.py``::

    def attention_output(ns, q, k, v):
        out, weights = ns.scaled_dot_product_attention(q, k, v)
        return {"out": out, "weights": weights}

    with Sandbox(staged, Limits(call_seconds=5)) as box:
        report = box.start()            # import; report.value["names"] lists what was found
        outcome = box.call("grader.probes:attention_output", q, k, v)

Failures never raise: the ``Outcome`` says what happened (``kind``: "timeout", "starved", "crash",
"memory", "exception", "import", "protocol"). After a timeout, a crash or a protocol error the
child is killed and the next request transparently gets a fresh one (the submission is imported
again, with the same seed). Between requests the child keeps its state (module globals), but
the RNGs, grad mode and default dtype are reset before every request.

Safety of the parent: messages from the child are never unpickled: the wire format
(``grader.wire``) is JSON and raw tensor bytes, every tensor built here within an element budget
and every message checked against the wire's table of what a child may send; the student's
stdout/stderr travel on another pipe and are kept bounded. Each child is a fresh interpreter
started in the jail (``grader.jail``), which runs the copy of the worker in the sandbox's runner
folder: the child never imports the grader itself.

This module is the request loop; the rest has a module each: the wire format and its messages
(``grader.wire``), a child as a process (``grader.children``), and what the student reads about
a failure (``grader.tracebacks``).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import secrets
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from grader import cgroups, jail
from grader.children import (MARK, Child, OutputTail, base_env, become_subreaper, kill_orphans, read_tail,
                             signal_name)
from grader.scratch import remove_tree
from grader.tracebacks import Tracebacks
from grader.checklib import Outcome
from grader.integrity import ForbiddenCall
from grader.submission import (
    EXPECTED_MODULES,
    HELPER_MODULES,
    INTERFACE_NAMES,
    NOTEBOOK_MODULE,
    PACKAGE_NAME,
    RESERVED_STEMS,
    StagedSubmission,
)
from grader.wire import FROM_CHILD, HEADER, WireError, check, decode, encode

KINDS = ("timeout", "starved", "crash", "memory", "exception", "import", "protocol")
# A request past its time limit was starved by the machine's other work, not slow, when its child
# had a CPU for less than this share of the CPU time its threads were allowed and waited for one
# longer than it had one: no verdict ("starved"), where a slow or stuck one is "timeout". Every
# time limit is several times what correct code needs, so correct code meets it only far below this.
STARVED_SHARE = 0.25
_BOOT = ("import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
         f"sys.path.insert(0, sys.argv[1]); import {jail.RUNNER_PACKAGE}.worker as w; "
         "w.spawn_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))")
PROBES = f"{jail.RUNNER_PACKAGE}.probes"  # the grader's probes, as the child imports them


@dataclass(frozen=True)
class Limits:
    """Resource limits for the child.

    ``memory_bytes`` caps the address space (RLIMIT_AS) at what the worker maps after importing
    torch plus ``memory_bytes``: allocations past it fail with MemoryError or torch's "can't
    allocate memory" RuntimeError, reported as kind "memory".
    """

    call_seconds: float = 10.0  # wall clock per request
    import_seconds: float = 20.0  # wall clock for importing the submission
    memory_bytes: int | None = 4 << 30  # address space the student's code may add (RLIMIT_AS); None: no limit
    tree_memory_bytes: int | None = 4 << 30  # resident memory of the child and all it starts (cgroup, where there is one)
    tree_processes: int | None = 512  # processes and threads of the child and all it starts (cgroup)
    threads: int = 1  # OMP/MKL/OpenBLAS threads and torch.set_num_threads
    output_bytes: int = 10_000  # the student's stdout/stderr kept per request (the tail)
    file_bytes: int = 256 << 20  # largest file the child may write (RLIMIT_FSIZE)
    startup_seconds: float = 60.0  # starting an interpreter and importing torch
    max_message_bytes: int = 256 << 20  # largest result the parent accepts
    max_elements: int = 64 << 20  # elements of all the tensors in one message, together
    gpu: bool = False  # let the child see CUDA (training); needs memory_bytes=None: RLIMIT_AS breaks CUDA
    gpu_memory_fraction: float | None = None  # the share of the GPU's memory the child may allocate (JOBS share one)


class SandboxError(Exception):
    """Misuse of the sandbox by the grader (not the student's fault): raised, not reported."""


# ---------------------------------------------------------------------------------------------
# talking to a child


class _Timeout(Exception):
    pass


class _Violation(Exception):
    """The child broke the protocol."""


@dataclass
class _Reply:
    result: dict | None = None
    failure: tuple[str, str] | None = None  # (kind, message) when the child had to be killed
    frames: list[list] = field(default_factory=list)  # student frames at the failure, outermost first
    forbidden: list[ForbiddenCall] = field(default_factory=list)
    culprit: str | None = None  # the student module whose import was running at the failure
    cpu: tuple[float, float] | None = None  # (on a CPU, waiting for one) during the exchange, when readable
    update: object | None = None  # the last worker.report() value of this request


def _check_record(record: object) -> dict:
    if not isinstance(record, dict):
        raise _Violation("an error record must be a dict")
    for key, kind in (("type_name", str), ("message", str), ("kind", str)):
        if not isinstance(record.get(key), kind):
            raise _Violation(f"error field {key!r} is missing or malformed")
    if record["kind"] not in KINDS:
        raise _Violation(f"unknown error kind {record['kind']!r}")
    frames = record.get("frames")
    if not isinstance(frames, list) or not all(
            isinstance(f, list) and len(f) == 4 and isinstance(f[0], str) and isinstance(f[1], int)
            and isinstance(f[2], str) and isinstance(f[3], str) for f in frames):
        raise _Violation("malformed traceback frames")
    syntax = record.get("syntax")
    if syntax is not None and not (isinstance(syntax, list) and len(syntax) == 3 and isinstance(syntax[0], str)
                                   and isinstance(syntax[1], int) and isinstance(syntax[2], str)):
        raise _Violation("malformed syntax-error location")
    return record


def _decode(payload: bytes, max_elements: int = Limits.max_elements) -> dict:
    """A frame from the child: the wire's plain data (never unpickled; tensors built here within
    ``max_elements``), one of the messages the child may send, an error record checked too."""
    try:
        message = check(decode(payload, max_elements), FROM_CHILD)
    except WireError as exc:
        raise _Violation(str(exc)) from None
    if message["type"] == "result" and message["ok"] is False:
        _check_record(message["error"])
    return message


def _check_plain(value: object, where: str = "argument", depth: int = 0) -> None:
    import torch

    if depth > 32:
        raise SandboxError(f"{where} is nested too deeply")
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes, torch.Tensor, torch.dtype,
                                           torch.device)):
        return
    if isinstance(value, (list, tuple, set, frozenset)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise SandboxError(f"{where} has a non-str/int key")
            _check_plain(item, f"{where}[{key!r}]", depth + 1)
        return
    raise SandboxError(f"{where} is a {type(value).__name__}: probes take only tensors and plain data")




# ---------------------------------------------------------------------------------------------
# the sandbox


class Sandbox:
    """A worker child for one staged submission; see the module docstring. Not thread-safe."""

    def __init__(self, staged: StagedSubmission, limits: Limits = Limits(), *, seed: int = 0,
                 probe_paths: Sequence[Path | str] = (), isolation: jail.Isolation | None = None) -> None:
        """``seed``: the child's RNG seed before every request, which the child can read (pass one
        derived from the deployment's secret, ``grader.seeds``). ``probe_paths``: extra directories
        (visible to the child, read-only) on its ``sys.path`` for probe modules of tests; the
        grader's own probes are always there. ``isolation``: the jail (default: what
        ``grader.jail.detect()`` finds on this machine)."""
        self.staged = staged
        self.limits = limits
        self.seed = seed
        self.restarts = 0
        self.isolation = isolation if isolation is not None else jail.detect()
        self._probe_paths = [str(Path(p).resolve()) for p in probe_paths]
        self._tmp: Path | None = None
        self._tail = OutputTail(limits.output_bytes)
        self._marker = secrets.token_hex(8)
        self._child: Child | None = None
        self._generation = 0
        self._next_id = 0
        self._blocked: dict[str, tuple[str, str]] = {}  # module -> (why it is skipped, traceback)
        self._import_outcome: Outcome | None = None
        self._broken: Outcome | None = None
        self._closed = False
        self.tracebacks = Tracebacks(staged)  # reads the staged files now, before any child runs

    # -- public --------------------------------------------------------------------------------

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def import_outcome(self) -> Outcome | None:
        """The Outcome of ``start()``, once it ran."""
        return self._import_outcome

    def start(self) -> Outcome:
        """Start the child and import the submission (once; later calls return the same Outcome).

        ``value`` is ``{"names": {name: "class"|"function"|"other:<type>"}, "signatures":
        {name: str}, "modules": {module: "ok" | error message}}``, also when ``ok`` is False
        because some module failed: the names from the modules that did import are usable.
        A module that hangs or crashes at import is skipped (imports of it fail) and the
        others are imported in a fresh child.
        """
        self._check_open()
        if self._import_outcome is None:
            self._import_outcome = self._import(first=True)
        return self._import_outcome

    def call(self, probe: str, /, *args: object, **kwargs: object) -> Outcome:
        """``request(probe, args, kwargs)`` with the sandbox's seed and the per-call time limit."""
        return self.request(probe, args, kwargs)

    def request(self, probe: str, args: Sequence[object] = (), kwargs: Mapping[str, object] | None = None, *,
                seed: int | None = None, timeout: float | None = None,
                on_update: Callable[[object], None] | None = None,
                on_ask: Callable[[object], object] | None = None) -> Outcome:
        """Run ``probe`` (``"package.module:function"``) in the child as ``function(ns, *args, **kwargs)``.

        ``on_update`` is called in the parent with each value the probe sends with
        ``worker.report()`` while it runs; the last one is also ``Outcome.update``. ``on_ask``
        answers the probe's ``worker.ask(value)`` (plain data back); without it, asking is a
        protocol error.
        """
        self._check_open()
        kwargs = dict(kwargs or {})
        _check_plain(list(args), "args")
        _check_plain(kwargs, "kwargs")
        if self._import_outcome is None:
            self.start()
        if self._broken is not None:
            return dataclasses.replace(self._broken, forbidden_calls=[], output="")
        if self._child is None:
            failed = self._import(first=False)
            if self._child is None:
                return dataclasses.replace(failed, error=f"could not restart the submission: {failed.error}")
            self.restarts += 1
        message = {"type": "call", "probe": probe, "args": list(args), "kwargs": kwargs,
                   "seed": self.seed if seed is None else int(seed)}
        limit = self.limits.call_seconds if timeout is None else timeout
        reply, output = self._request(message, limit, on_update, on_ask)
        return self._call_outcome(reply, output, limit)

    def output(self) -> str:
        """Everything the student's code printed recently (bounded)."""
        return self._tail.since(0)

    def close(self) -> None:
        """Kill the child and remove the sandbox's temporary files."""
        if self._closed:
            return
        self._closed = True
        self._stop_child()
        if self._tmp is not None:
            remove_tree(self._tmp)

    # -- importing -----------------------------------------------------------------------------

    def _import(self, *, first: bool) -> Outcome:
        forbidden: list[ForbiddenCall] = []
        mark = self._tail.mark()
        for _attempt in range(len(self.staged.entry_modules) + 2):
            failure = self._launch()
            if failure is not None:
                kind, error = failure
                self._broken = Outcome(False, error=error, kind=kind, output=self._tail.since(mark))
                return self._broken
            message = {"type": "import", "seed": self.seed, "blocked": sorted(self._blocked)}
            reply, _ = self._request(message, self.limits.import_seconds)
            forbidden.extend(reply.forbidden)
            if reply.failure is None:
                return self._import_report(reply.result, forbidden, self._tail.since(mark))
            error = self._import_failure(reply)
            trace = self.tracebacks.frames_text(reply.frames, error)
            starved = reply.failure[0] == "starved"  # the machine's fault, not the module's: blocks nothing
            if starved or reply.culprit is None or reply.culprit in self._blocked or not first:
                outcome = Outcome(False, error=error, kind="starved" if starved else "import", student_traceback=trace,
                                  forbidden_calls=forbidden, output=self._tail.since(mark))
                if first:
                    self._broken = outcome
                return outcome
            self._blocked[reply.culprit] = (error, trace)  # skip it; import the others in a fresh child
        raise AssertionError("unreachable: every attempt blocks one more module")

    def _import_failure(self, reply: _Reply) -> str:
        kind, message = reply.failure
        where = self.tracebacks.module_label(reply.culprit) if reply.culprit else "the submission"
        if kind == "timeout":
            text = f"{where} did not finish importing within {self.limits.import_seconds:g} s"
        elif kind == "starved":
            text = f"importing {where} {message}"
        else:
            text = f"{message} while importing {where}"
        own = self.tracebacks.own(reply.frames)
        if own:
            file, line, function, _ = own[-1]
            file, line = self.staged.locate(file, line)
            text += f" (at {file} line {line}, in {self.tracebacks.clean(function, 80)})"
        return text

    def _import_report(self, result: dict, forbidden: list[ForbiddenCall], output: str) -> Outcome:
        if not result["ok"]:  # the import request itself failed (not one module): unusual
            record = result["error"]
            return Outcome(False, error=self.tracebacks.message(record, None), kind="import",
                           student_traceback=self.tracebacks.traceback(record), forbidden_calls=forbidden, output=output)
        try:
            value = self._check_import_value(result["value"])
        except _Violation as exc:
            self._stop_child()
            self._broken = Outcome(False, error=f"protocol error: {exc}", kind="import", output=output)
            return self._broken
        statuses, errors, tracebacks, traces = {}, [], [], []
        for stem, status in value["modules"].items():
            if status is None:
                statuses[stem] = "ok"
                continue
            if status == "blocked":
                text, trace = self._blocked.get(stem, (f"{stem}.py was skipped", ""))
                errors.insert(0, text)
            else:
                text, trace = self.tracebacks.message(status, stem), self.tracebacks.traceback(status)
                errors.append(text)
            if trace in tracebacks:  # one broken module makes the modules importing it fail alike
                trace = "(the same error as above)"
            else:
                tracebacks.append(trace)
            traces.append(f"while importing {self.tracebacks.module_label(stem)}:\n{trace}")
            statuses[stem] = text
        report = {"names": value["names"], "signatures": value["signatures"], "modules": statuses}
        if not errors:
            return Outcome(True, value=report, forbidden_calls=forbidden, output=output)
        error = errors[0] + (f" (and {len(errors) - 1} more module error(s))" if len(errors) > 1 else "")
        return Outcome(False, value=report, error=error, kind="import", student_traceback="\n\n".join(traces),
                       forbidden_calls=forbidden, output=output)

    @staticmethod
    def _check_import_value(value: object) -> dict:
        if not isinstance(value, dict):
            raise _Violation("the import report must be a dict")
        for key in ("names", "signatures"):
            table = value.get(key)
            if not isinstance(table, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in table.items()):
                raise _Violation(f"malformed {key} in the import report")
        modules = value.get("modules")
        if not isinstance(modules, dict) or not all(isinstance(k, str) for k in modules):
            raise _Violation("malformed module statuses")
        for status in modules.values():
            if status is not None and status != "blocked":
                _check_record(status)
        return value

    # -- calls ---------------------------------------------------------------------------------

    def _call_outcome(self, reply: _Reply, output: str, limit: float) -> Outcome:
        forbidden = reply.forbidden
        if reply.failure is not None:
            kind, message = reply.failure
            if kind == "timeout":
                message = f"timed out after {limit:g} s"
            error = message + self.tracebacks.where(reply.frames)
            return Outcome(False, error=error, kind=kind, student_traceback=self.tracebacks.frames_text(reply.frames, message),
                           forbidden_calls=forbidden, output=output, update=reply.update, cpu=reply.cpu)
        result = reply.result
        if result["ok"]:
            return Outcome(True, value=result["value"], forbidden_calls=forbidden, output=output, update=reply.update,
                           cpu=reply.cpu)
        record = result["error"]
        return Outcome(False, error=self.tracebacks.message(record, None), kind=record["kind"],
                       student_traceback=self.tracebacks.traceback(record), forbidden_calls=forbidden, output=output,
                       update=reply.update, cpu=reply.cpu)

    # -- child lifecycle -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise SandboxError("the sandbox is closed")

    def _workspace(self) -> Path:
        """``runner/`` (the child's code and configs, read-only to it), ``cwd/`` (its working folder:
        in the jail a private in-memory folder over it) and ``faults/`` (its fault dump, the one file
        of ours it may write); the jail shows the child these and nothing else of ours."""
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="grader-sandbox-"))
            jail.stage_runner(self._tmp / "runner")
            for name, writable in (("runner", False), ("cwd", True), ("faults", False)):
                (self._tmp / name).mkdir(exist_ok=True)
                jail.prepare(self._tmp / name, self.isolation, writable=writable)
            jail.prepare(self._tmp / "runner" / jail.RUNNER_PACKAGE, self.isolation)
        return self._tmp

    def _config(self, fault_path: Path) -> dict:
        staged = self.staged
        cwd = str(self._workspace() / "cwd")
        stems = sorted(p.stem for p in staged.package_dir.glob("*.py") if p.stem != "__init__")
        return {
            "package": PACKAGE_NAME, "package_dir": str(staged.package_dir), "package_root": str(staged.package_root),
            "entry_modules": list(staged.entry_modules), "module_stems": stems,
            "aliases": [s for s in stems if _may_alias(s)],
            "student_files": {str(p): p.name for p in staged.module_files},
            "student_stems": [p.stem for p in staged.module_files],
            "components": list(INTERFACE_NAMES),
            "extra_paths": [str(self._workspace() / "runner"), *self._probe_paths],
            "probe_modules": [PROBES], "nproc": self.isolation.nproc,
            "threads": self.limits.threads, "memory_bytes": self.limits.memory_bytes,
            "gpu_memory_fraction": self.limits.gpu_memory_fraction if self.limits.gpu else None,
            "file_bytes": self.limits.file_bytes, "max_message_bytes": self.limits.max_message_bytes,
            "cwd": cwd, "env": {"HOME": cwd, "TMPDIR": cwd, "MPLCONFIGDIR": cwd},
            "fault_path": str(fault_path),
        }

    def _launch(self) -> tuple[str, str] | None:
        """Start a child in the jail and wait for its hello; None, or (kind, why it could not start)."""
        self._stop_child()
        self._generation += 1
        work = self._workspace()
        fault_path = work / "faults" / f"faults-{self._generation}.txt"
        fault_path.touch()  # bound alone into the jail: the child writes this file, nothing else of ours
        jail.prepare(fault_path, self.isolation, writable=True)
        config = self._config(fault_path)
        config_path = work / "runner" / f"config-{self._generation}.json"
        config_path.write_text(json.dumps(config))
        config_path.chmod(0o644)
        env = {**base_env(self.limits.threads, self.limits.gpu), **config["env"], MARK: self._marker}
        if self.isolation.bwrap is None:
            become_subreaper()  # no PID namespace: what the child leaves behind comes back to us
        argv = [sys.executable, "-s", "-u", "-X", "utf8", "-c", _BOOT, str(work / "runner"), str(config_path)]
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        out_r, out_w = os.pipe()
        command = jail.jail_command(
            self.isolation, [*argv, str(req_r), str(resp_w)],
            read_only=[self.staged.package_root, work / "runner", *map(Path, self._probe_paths)],
            writable=[fault_path], scratch=[work / "cwd"], gpu=self.limits.gpu)
        group = None
        try:
            if self.isolation.tree is not None:
                group = cgroups.TreeGroup(self.isolation.tree, f"vitkit-{os.getpid()}-{self._marker}-{self._generation}",
                                          self.limits.tree_memory_bytes, self.limits.tree_processes)
                command = group.wrap(command)
            proc = subprocess.Popen(command, pass_fds=(req_r, resp_w), env=env, cwd=config["cwd"],
                                    stdin=subprocess.DEVNULL, stdout=out_w, stderr=out_w, start_new_session=True)
        except OSError as exc:
            for fd in (req_w, resp_r, out_r):
                os.close(fd)
            if group is not None:
                group.close()
            return "import", f"the worker process could not be started ({exc})"
        finally:
            for fd in (req_r, resp_w, out_w):
                os.close(fd)
        os.set_blocking(req_w, False)
        os.set_blocking(out_r, False)
        self._child = Child(proc, req_w, resp_r, out_r, fault_path, group)
        reply = self._exchange(None, self.limits.startup_seconds)
        if reply.failure is not None:
            kind, said = reply.failure
            memory = f" (is the memory limit of {self.limits.memory_bytes / 2**30:.2f} GiB too small?)" \
                if self.limits.memory_bytes and kind != "starved" else ""
            return ("starved" if kind == "starved" else "import"), f"the worker did not start: {said}{memory}"
        self._child.worker_pid = self._child.python_pid()  # found once: what the student starts comes later
        return None

    def _stop_child(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            child.kill()
            child.drain(self._tail)  # what it printed before it died
            child.close_pipes()
            if child.group is not None:
                child.group.close()  # everything it started, whatever session or group it moved to
            if self.isolation.bwrap is None:
                kill_orphans(self._marker)

    def _request(self, message: dict, timeout: float, on_update: Callable[[object], None] | None = None,
                 on_ask: Callable[[object], object] | None = None) -> tuple[_Reply, str]:
        """Send one request to the live child and wait for its result; also the output it printed."""
        self._next_id += 1
        message["id"] = self._next_id
        mark = self._tail.mark()
        reply = self._exchange(message, timeout, on_update, on_ask)
        if self._child is not None:  # the worker flushes its output before it sends the result
            self._child.drain(self._tail)
        return reply, self._tail.since(mark)

    def _exchange(self, message: dict | None, timeout: float, on_update: Callable[[object], None] | None = None,
                  on_ask: Callable[[object], object] | None = None) -> _Reply:
        """Send ``message`` (None: just wait for the hello) and read until its result."""
        child = self._child
        reply = _Reply()
        started = time.monotonic()
        deadline = started + timeout
        before = child.cpu_demand() if message is not None else (0.0, 0.0)
        try:
            if message is not None:
                self._send(child, encode(message), deadline)
            while True:
                frame = self._read_frame(child, deadline)
                kind = frame["type"]
                if kind == "forbidden":
                    try:
                        call = ForbiddenCall.from_dict(frame.get("call"))
                    except ValueError as exc:
                        raise _Violation(str(exc)) from None
                    if self.tracebacks.is_students(call.student_file):  # messages name the student's files only
                        reply.forbidden.append(self.tracebacks.translate(call))
                elif kind == "progress":
                    if frame["state"] == "begin":
                        child.stack.append(frame["module"])
                    elif frame["module"] in child.stack:
                        del child.stack[len(child.stack) - 1 - child.stack[::-1].index(frame["module"])]
                elif kind == "update" and message is not None and frame["id"] == message["id"]:
                    reply.update = frame.get("value")
                    if on_update is not None:
                        on_update(reply.update)
                elif kind == "ask" and message is not None and frame["id"] == message["id"] and on_ask is not None:
                    answer = {"type": "answer", "id": message["id"], "value": on_ask(frame["value"])}
                    self._send(child, encode(answer), deadline)
                elif kind == "hello" and message is None:
                    reply.result = frame
                    return reply
                elif kind == "result" and message is not None and frame["id"] == message["id"]:
                    reply.result = frame
                    if time.monotonic() - started >= 1.0:  # a long request (training): its account, for the guard
                        reply.cpu = _spent(child, before)
                    return reply
                else:
                    raise _Violation(f"unexpected {kind} message")
        except _Timeout:
            reply.cpu = _spent(child, before)
            starved = starved_by(reply.cpu, timeout, self.limits.threads)
            reply.frames = self._dump_stack(child)
            self._fail(reply, *(("starved", starved) if starved else ("timeout", f"timed out after {timeout:g} s")))
        except (EOFError, BrokenPipeError):
            self._fail(reply, *self._exit_reason(child))
            reply.frames = self._frames_after_crash(child)
        except _Violation as exc:
            self._fail(reply, "protocol", f"protocol error: {exc}")
        return reply

    def _fail(self, reply: _Reply, kind: str, message: str) -> None:
        child = self._child
        reply.failure = (kind, message)
        reply.culprit = child.stack[-1] if child is not None and child.stack else None
        self._stop_child()

    def _send(self, child: Child, payload: bytes, deadline: float) -> None:
        if len(payload) > self.limits.max_message_bytes:
            raise SandboxError(f"the request is {len(payload) / 1e6:.0f} MB, more than max_message_bytes")
        view = memoryview(HEADER.pack(len(payload)) + payload)
        while view:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Timeout()
            _, writable, _ = select.select([], [child.req_w], [], remaining)
            if writable:
                try:
                    view = view[os.write(child.req_w, view):]
                except BlockingIOError:
                    continue

    def _read_frame(self, child: Child, deadline: float) -> dict:
        buffer = child.buffer
        while True:
            if len(buffer) >= HEADER.size:
                (size,) = HEADER.unpack_from(buffer)
                if size > self.limits.max_message_bytes:
                    raise _Violation(f"a message of {size} bytes is larger than max_message_bytes")
                if len(buffer) >= HEADER.size + size:
                    payload = bytes(buffer[HEADER.size:HEADER.size + size])
                    del buffer[:HEADER.size + size]
                    return _decode(payload, self.limits.max_elements)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Timeout()
            watched = [child.resp_r] if child.out_r is None else [child.resp_r, child.out_r]
            readable, _, _ = select.select(watched, [], [], remaining)
            if child.out_r in readable:
                child.drain(self._tail)
            if child.resp_r in readable:
                data = os.read(child.resp_r, 1 << 20)
                if not data:
                    raise EOFError()
                buffer += data

    def _dump_stack(self, child: Child) -> list[list]:
        """Ask the hung child where it is (faulthandler on SIGUSR1) before killing it."""
        path = child.fault_path
        try:
            before = path.lstat().st_size
            os.kill(child.python_pid(), signal.SIGUSR1)
        except OSError:
            return []
        deadline = time.monotonic() + 0.5
        size = before
        while time.monotonic() < deadline:
            time.sleep(0.02)
            now = path.lstat().st_size
            if now > before and now == size:
                break  # it wrote something and stopped writing
            size = now
        return self.tracebacks.frames_from_dump(read_tail(path, before))

    def _frames_after_crash(self, child: Child) -> list[list]:
        return self.tracebacks.frames_from_dump(read_tail(child.fault_path, 0))

    def _exit_reason(self, child: Child) -> tuple[str, str]:
        code = child.wait(2.0)
        if code is None:  # alive but closed its channel
            return "protocol", "protocol error: the worker closed its channel"
        if code == -255:
            return "crash", "the process ended"
        if self.isolation.bwrap is not None and 128 < code < 128 + 65:
            code = 128 - code  # bwrap reports the worker's death by signal N as exit 128 + N
        if code < 0:
            name = signal_name(-code)
            if name == "SIGKILL" and child.group is not None and child.group.ran_out_of_memory():
                cap = self.limits.tree_memory_bytes or 0
                return "memory", (f"ran out of memory: the process and those it started used more than "
                                  f"{cap / 2**30:.1f} GiB together (the grader's cap)")
            if name == "SIGKILL":
                return "crash", "the process was killed (SIGKILL), e.g. by the system for using too much memory"
            if name == "SIGSEGV":
                return "crash", "the process crashed with a segmentation fault (SIGSEGV)"
            return "crash", f"the process was killed by {name}"
        return "crash", f"the process exited (code {code})"


def _spent(child: Child, before: tuple[float, float] | None) -> tuple[float, float] | None:
    """(CPU seconds the child's tree used, seconds its worker waited for a CPU) since ``before``, a
    reading of ``Child.cpu_demand``. The tree's other processes count whole: CPU they used at any
    time counts against a claim of starvation, never for it."""
    after = child.cpu_demand()
    if before is None or after is None:
        return None
    return max(0.0, after[0] - before[0]) + child.others_cpu(), max(0.0, after[1] - before[1])


def starved_by(cpu: tuple[float, float] | None, seconds: float, threads: int) -> str:
    """Why work that ran out of its ``seconds`` was starved by the machine's other work rather than
    slow or stuck ("" if it was not, or if the scheduler's account could not be read), from its
    ``cpu`` (``_spent``) and the ``threads`` it was allowed. A child cannot starve itself into
    this: its own threads and processes waiting for each other use the CPU they wait for."""
    if cpu is None:
        return ""
    running, waiting = cpu
    wanted = running + waiting  # a stuck child (a sleep, a deadlock) wanted little: it timed out
    if wanted < STARVED_SHARE * seconds or waiting <= running or running >= STARVED_SHARE * threads * seconds:
        return ""
    return (f"did not finish within {seconds:g} s, but it had a CPU for only {running:.1f} s of them and waited "
            f"{waiting:.1f} s for one: the grading machine was too busy to decide (undecided: grade it again)")


def _may_alias(stem: str) -> bool:
    """Whether ``import <stem>`` in the child may mean the submission's module of that name: always
    for the template's modules, otherwise only if it shadows nothing installed."""
    if stem in EXPECTED_MODULES or stem in HELPER_MODULES:
        return True
    if stem in sys.stdlib_module_names or stem in RESERVED_STEMS or stem == NOTEBOOK_MODULE:
        return False
    try:
        return importlib.util.find_spec(stem) is None  # top level: runs no package code
    except (ImportError, ValueError):
        return False


