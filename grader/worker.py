"""The sandbox child: imports the staged submission and runs grader probes against it.

Everything here runs in a separate process started by ``grader.sandbox``, inside the jail
(``grader.jail``); the parent never imports the student's code. This file is copied, with
``wire.py``, ``integrity.py``, ``probes.py`` and the kit's ``training.py`` and ``data.py``, into
the runner package ``vitkit_child`` that the child imports: it may import nothing else of the grader.

``spawn_main`` applies the resource limits, installs the integrity traps, takes a private copy
of the probe table (so that a submission that patches ``vitkit_child.probes`` changes nothing),
and serves requests read from a dedicated pipe: ``import`` (the submission) and ``call`` (a
probe ``"module:function"``, called as ``function(ns, *args, **kwargs)``). A probe may ``ask``
the parent a question mid-request and wait for its ``answer``. Every message is a frame of the
wire format (``wire.py``: JSON and raw tensor bytes, nothing pickled), one of the message types
declared there. The student's stdout/stderr go to another pipe.
"""
from __future__ import annotations

import faulthandler
import importlib
import importlib.machinery
import importlib.util
import inspect
import json
import os
import random
import re
import signal
import sys
import threading
import traceback
from types import ModuleType
from typing import Any, Callable

from .wire import FROM_PARENT, HEADER, WireError, check, decode, encode

EXIT_INTERNAL_ERROR = 70


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_exactly(fd: int, n: int) -> bytes:
    chunks, remaining = [], n
    while remaining:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise EOFError("the channel was closed")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------------------------------------
# what probes see

_ACTIVE: Worker | None = None  # the worker serving this process, for report()


def report(value: object) -> None:
    """Send ``value`` (plain data) to the parent now, as an update of the request in progress.

    For long probes (training): the parent keeps the last update, so what a probe reported
    survives a crash or a kill later in the same request. Outside a request it does nothing.
    """
    worker = _ACTIVE
    if worker is not None and worker.request_id is not None:
        worker.emit({"type": "update", "id": worker.request_id, "value": to_plain(value, "update")})


def ask(value: object) -> object:
    """Send ``value`` (plain data) to the parent and wait for its answer (plain data).

    For probes that need the grader mid-request: the training probe asks the grader to measure
    the weights it has so far, and continues or stops on the answer.
    """
    worker = _ACTIVE
    if worker is None or worker.request_id is None:
        raise RuntimeError("ask() outside a request")
    worker.emit({"type": "ask", "id": worker.request_id, "value": to_plain(value, "question")})
    return worker.read_answer()


class MissingNameError(AttributeError):
    """The probe asked for a name the submission does not define."""


class SubmissionNamespace:
    """Attribute access to every public name found in the submission's modules.

    ``ns.VisionTransformer`` is the student's class; ``ns.modules`` maps a module name (e.g.
    ``"attention"``) to the module object; ``"patchify" in ns`` tests for a name.
    """

    def __init__(self, names: dict[str, object], modules: dict[str, ModuleType]) -> None:
        object.__setattr__(self, "_names", dict(names))
        object.__setattr__(self, "modules", dict(modules))

    def __getattr__(self, name: str) -> object:
        try:
            return self._names[name]
        except KeyError:
            raise MissingNameError(f"the submission does not define {name!r}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._names

    def get(self, name: str, default: object = None) -> object:
        return self._names.get(name, default)

    def names(self) -> list[str]:
        return sorted(self._names)


def to_plain(value: object, where: str = "result", depth: int = 0) -> object:
    """A copy of ``value`` made only of types ``torch.load(weights_only=True)`` accepts."""
    import torch

    if depth > 32:
        raise TypeError(f"{where} is nested too deeply")
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return value
    if isinstance(value, torch.Tensor):
        # detach + contiguous clone: no autograd graph, no subclass, no oversized or shared storage
        return value.detach().to("cpu").as_subclass(torch.Tensor).clone(memory_format=torch.contiguous_format)
    if isinstance(value, (torch.dtype, torch.device, torch.Size)):
        return value
    if isinstance(value, (list, tuple)):
        items = [to_plain(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, (set, frozenset)):
        return {to_plain(v, f"{where} item", depth + 1) for v in value}
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where} has a key of type {type(k).__name__}; use str or int keys")
            out[k] = to_plain(v, f"{where}[{k!r}]", depth + 1)
        return out
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        if isinstance(value, numpy.ndarray) and value.dtype.kind in "biufc":
            return torch.from_numpy(numpy.ascontiguousarray(value)).clone()
        if isinstance(value, numpy.generic):
            return value.item()
    raise TypeError(f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which is not plain data")


# ---------------------------------------------------------------------------------------------
# importing the submission


class _TrackedLoader(importlib.machinery.SourceFileLoader):
    """Reports when a student module starts and finishes executing, so that the parent knows
    which module hung or crashed at import."""

    def __init__(self, fullname: str, path: str, emit: Callable[[dict], None]) -> None:
        super().__init__(fullname, path)
        self._emit = emit

    def exec_module(self, module: ModuleType) -> None:
        stem = self.name.rpartition(".")[2]
        self._emit({"type": "progress", "module": stem, "state": "begin"})
        try:
            super().exec_module(module)
        finally:
            self._emit({"type": "progress", "module": stem, "state": "end"})


class _AliasLoader:
    """Makes ``import attention`` return the module ``student_submission.attention`` itself, so
    absolute and relative imports of a sibling give the same module (and the same classes)."""

    def __init__(self, target: str) -> None:
        self._target = target
        self._real_spec = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self._target)
        self._real_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._real_spec  # the import system replaced it with the alias's spec


class SubmissionFinder:
    """Meta path finder for the staged package: tracked loading, aliases, and skipped modules."""

    def __init__(self, package: str, package_dir: str, stems: list[str], aliases: list[str],
                 emit: Callable[[dict], None]) -> None:
        self.package = package
        self.package_dir = package_dir
        self.stems = set(stems)
        self.aliases = set(aliases)
        self.blocked: set[str] = set()
        self._emit = emit

    def find_spec(self, name: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        prefix = self.package + "."
        if name.startswith(prefix):
            stem = name[len(prefix):]
            if stem not in self.stems:
                return None
            if stem in self.blocked:
                raise ImportError(f"{stem}.py was not imported: it did not finish importing in an earlier attempt",
                                  name=name)
            location = os.path.join(self.package_dir, f"{stem}.py")
            return importlib.util.spec_from_file_location(name, location,
                                                          loader=_TrackedLoader(name, location, self._emit))
        top, _, rest = name.partition(".")
        if top == "student_template":  # the template's package name, used by some students
            return importlib.machinery.ModuleSpec(name, _AliasLoader(self.package + ("." + rest if rest else "")),
                                                  is_package=not rest)
        if not rest and top in self.aliases:
            return importlib.machinery.ModuleSpec(name, _AliasLoader(prefix + top))
        return None


def build_namespace(modules: dict[str, ModuleType]) -> SubmissionNamespace:
    """Public names of the modules; where two modules have a name, the one defining it wins."""
    names: dict[str, object] = {}
    defined: dict[str, bool] = {}
    for module in modules.values():
        for key, obj in vars(module).items():
            if key.startswith("_"):
                continue
            try:
                here = getattr(obj, "__module__", None) == module.__name__
            except Exception:  # a student object whose attribute lookup raises: still a name
                here = False
            if key not in names or (here and not defined[key]):
                names[key] = obj
                defined[key] = here
    return SubmissionNamespace(names, modules)


def describe_names(ns: SubmissionNamespace, interface: list[str], student_modules: set[str]) -> tuple[dict, dict]:
    """Kinds and signatures of the interface names and of the student's own classes/functions."""
    kinds, signatures = {}, {}
    for name in ns.names():
        obj = ns.get(name)
        try:
            own = getattr(obj, "__module__", None) in student_modules
            if name not in interface and not (own and (inspect.isclass(obj) or inspect.isroutine(obj))):
                continue
            kinds[name] = ("class" if inspect.isclass(obj) else "function" if inspect.isroutine(obj)
                           else f"other:{type(obj).__name__}")
            signatures[name] = str(inspect.signature(obj))
        except Exception:  # no signature (builtins, odd objects): the kind alone will do
            continue
    return kinds, signatures


# ---------------------------------------------------------------------------------------------
# errors, as plain data


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return "<the exception could not be printed>"


_OUT_OF_MEMORY = re.compile(r"can't allocate memory|out of memory|not enough memory|bad_alloc|failed to allocate",
                            re.IGNORECASE)


def classify(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "memory"
    if isinstance(exc, RuntimeError) and _OUT_OF_MEMORY.search(_safe_str(exc)):
        return "memory"
    if isinstance(exc, SystemExit):
        return "crash"
    return "exception"


def error_record(exc: BaseException, student_file: Callable[[str], str | None], kind: str | None = None) -> dict:
    """The exception as plain data, keeping only the frames in the student's files."""
    frames = []
    for fs in traceback.extract_tb(exc.__traceback__):
        name = student_file(fs.filename)
        if name is not None:
            frames.append([name, int(fs.lineno or 0), fs.name, (fs.line or "").strip()])
    syntax = None
    if isinstance(exc, SyntaxError):
        message = _safe_str(exc.msg)
        name = student_file(exc.filename or "") or os.path.basename(exc.filename or "?")
        syntax = [name, int(exc.lineno or 0), (exc.text or "").rstrip("\n")]
    elif isinstance(exc, SystemExit):
        message = f"sys.exit({exc.code!r}) was called"
    else:
        message = _safe_str(exc)
    return {"type_name": type(exc).__name__, "message": message[:2000], "frames": frames[-50:],
            "syntax": syntax, "kind": kind or classify(exc)}


def protocol_record(message: str) -> dict:
    return {"type_name": "ProtocolError", "message": message, "frames": [], "syntax": None, "kind": "protocol"}


# ---------------------------------------------------------------------------------------------
# the worker loop


class Worker:
    """Serves the parent's requests over ``req_fd``/``resp_fd``; see the module docstring."""

    def __init__(self, config: dict, req_fd: int, resp_fd: int) -> None:
        from .integrity import StudentFiles, observer

        self.config = config
        self.req_fd, self.resp_fd = req_fd, resp_fd
        self.student_file = StudentFiles(config["student_files"])
        self._observer = observer  # bound now: the student's code may rebind module attributes later
        self.ns = SubmissionNamespace({}, {})
        self._lock = threading.Lock()
        self._encode = encode  # bound before student code runs, which may monkeypatch things
        self._finder = SubmissionFinder(config["package"], config["package_dir"], config["module_stems"],
                                        config["aliases"], self.emit)
        self.traps = None
        self.request_id: int | None = None  # the request being served, for report()
        self._probes: dict[str, dict[str, Any]] = {}  # module -> its functions, taken before student code runs

    def emit(self, message: dict) -> None:
        payload = self._encode(message)
        with self._lock:
            _write_all(self.resp_fd, HEADER.pack(len(payload)) + payload)

    def install(self) -> None:
        from .integrity import install_traps

        sys.meta_path.insert(0, self._finder)
        for module in self.config["probe_modules"]:
            self._probes[module] = dict(vars(importlib.import_module(module)))
        self.traps = install_traps(self.student_file, self._report_forbidden, self.config["components"])

    def read_answer(self) -> object:
        """The parent's answer to an ``ask``: the next frame on the request pipe."""
        (size,) = HEADER.unpack(_read_exactly(self.req_fd, HEADER.size))
        if size > self.config["max_message_bytes"]:
            raise RuntimeError("the parent's answer is too large")
        message = _decode_request(_read_exactly(self.req_fd, size))
        if message["type"] != "answer":
            raise RuntimeError("the parent did not answer")
        return message["value"]

    def _report_forbidden(self, call: object) -> None:
        self.emit({"type": "forbidden", "call": call.to_dict()})

    def serve(self) -> int:
        self.emit({"type": "hello", "pid": os.getpid()})
        while True:
            try:
                (size,) = HEADER.unpack(_read_exactly(self.req_fd, HEADER.size))
                if size > self.config["max_message_bytes"]:
                    return EXIT_INTERNAL_ERROR
                request = _decode_request(_read_exactly(self.req_fd, size))
            except EOFError:
                return 0  # the parent went away
            except WireError:
                return EXIT_INTERNAL_ERROR
            if request["type"] == "exit":
                return 0
            self._handle(request)

    def _handle(self, request: dict) -> None:
        req_id = request["id"]
        self.request_id = req_id
        self.traps.reset()
        try:
            if request["type"] not in ("import", "call"):
                raise RuntimeError(f"a {request['type']} message outside a request")
            reset_state(request["seed"], self.config["threads"])
            with self._observer(self.traps):
                if request["type"] == "import":
                    body = {"ok": True, "value": self._import(list(request["blocked"])), "error": None}
                else:
                    body = self._call(request)
        except BaseException as exc:  # noqa: BLE001 -- the student's code can raise anything
            body = {"ok": False, "value": None, "error": error_record(exc, self.student_file)}
        self.request_id = None
        self._finish(req_id, body)

    def _import(self, blocked: list[str]) -> dict:
        package = self.config["package"]
        self._finder.blocked = set(blocked)
        importlib.import_module(package)  # the grader's own empty __init__.py
        modules, statuses = {}, {}
        for stem in self.config["entry_modules"]:
            if stem in blocked:
                statuses[stem] = "blocked"
                continue
            try:
                modules[stem] = importlib.import_module(f"{package}.{stem}")
                statuses[stem] = None
            except BaseException as exc:  # noqa: BLE001
                statuses[stem] = error_record(exc, self.student_file)
        self.ns = build_namespace(modules)
        own = {f"{package}.{stem}" for stem in self.config["student_stems"]}
        kinds, signatures = describe_names(self.ns, self.config["components"], own)
        return {"names": kinds, "signatures": signatures, "modules": statuses}

    def _call(self, request: dict) -> dict:
        try:
            probe = _load_probe(str(request["probe"]), self._probes)
        except Exception as exc:  # noqa: BLE001
            why = f"cannot load probe {request.get('probe')!r}: {type(exc).__name__}: {exc}"
            return {"ok": False, "value": None, "error": protocol_record(why)}
        value = probe(self.ns, *request.get("args", ()), **request.get("kwargs", {}))
        try:
            return {"ok": True, "value": to_plain(value), "error": None}
        except TypeError as exc:
            return {"ok": False, "value": None, "error": protocol_record(_safe_str(exc))}

    def _finish(self, req_id: int, body: dict) -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        try:
            payload = self._encode({"type": "result", "id": req_id, **body})
        except Exception as exc:  # noqa: BLE001
            payload = self._encode({"type": "result", "id": req_id, "ok": False, "value": None,
                                    "error": protocol_record(f"the result could not be serialised: {exc}")})
        if len(payload) > self.config["max_message_bytes"]:
            why = (f"the result is {len(payload) / 1e6:.0f} MB, more than the "
                   f"{self.config['max_message_bytes'] / 1e6:.0f} MB allowed")
            payload = self._encode({"type": "result", "id": req_id, "ok": False, "value": None,
                                    "error": protocol_record(why)})
        with self._lock:
            _write_all(self.resp_fd, HEADER.pack(len(payload)) + payload)


def _decode_request(payload: bytes) -> dict:
    """A message from the parent, checked against the wire's table (WireError otherwise)."""
    return check(decode(payload), FROM_PARENT)


def _load_probe(spec: str, table: dict[str, dict[str, Any]]) -> Callable[..., Any]:
    """The probe ``module:function``: from the table taken at start when the module is in it."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr or "." in attr:
        raise ValueError("a probe is written 'package.module:function'")
    if module_name in table:
        target = table[module_name][attr]
    else:
        target = getattr(importlib.import_module(module_name), attr)
    if not callable(target):
        raise TypeError(f"{spec} is not callable")
    return target


def reset_state(seed: int, threads: int) -> None:
    """Same seed and same global torch state before every request: same inputs, same outputs."""
    import torch

    random.seed(seed)
    torch.manual_seed(seed)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(seed % (1 << 32))
    torch.set_grad_enabled(True)
    torch.set_default_dtype(torch.float32)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# process setup


def _address_space_in_use() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def apply_limits(config: dict) -> None:
    """Resource limits for this process; hard limits too, so student code cannot raise them.

    The address-space limit is ``memory_bytes`` on top of what the worker already maps (torch
    alone maps 0.6 GB for a CPU build and over 3 GB for a CUDA build), so that the student's
    budget does not depend on the torch build.
    """
    try:
        import resource
    except ImportError:  # not on this platform: the wall-clock timeout still applies
        return
    limits = [(resource.RLIMIT_CORE, 0)]
    if config.get("memory_bytes"):
        limits.append((resource.RLIMIT_AS, _address_space_in_use() + int(config["memory_bytes"])))
    if config.get("file_bytes"):
        limits.append((resource.RLIMIT_FSIZE, int(config["file_bytes"])))
    if config.get("nproc"):  # only with a uid of its own: the limit counts every process of the uid
        limits.append((resource.RLIMIT_NPROC, int(config["nproc"])))
    for which, value in limits:
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            pass


def run_worker(config: dict, req_fd: int, resp_fd: int) -> int:
    """Set the process up for student code, then serve requests until the parent says stop."""
    os.chdir(config["cwd"])
    os.environ.update(config["env"])
    sys.path[:] = [p for p in sys.path if p not in ("", ".", os.getcwd())]
    for entry in reversed([config["package_root"], *config["extra_paths"]]):
        sys.path.insert(0, entry)

    import torch  # before the memory limit: importing torch is the grader's cost, not the student's

    torch.set_num_threads(config["threads"])
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set: torch allows it once per process
        pass
    share_gpu(torch, config.get("gpu_memory_fraction"))
    fault_file = open(config["fault_path"], "w")
    faulthandler.enable(fault_file, all_threads=True)
    faulthandler.register(signal.SIGUSR1, file=fault_file, all_threads=True, chain=False)

    global _ACTIVE
    worker = _ACTIVE = Worker(config, req_fd, resp_fd)
    worker.install()
    apply_limits(config)
    return worker.serve()


def share_gpu(torch: Any, fraction: float | None) -> None:
    """Cap this process's CUDA allocations at ``fraction`` of every GPU's memory, so that workers
    sharing a GPU do not run each other out of memory. (It guards honest neighbours: the
    student's code could raise its own cap.)"""
    if fraction and torch.cuda.is_available():
        for device in range(torch.cuda.device_count()):
            torch.cuda.set_per_process_memory_fraction(float(fraction), device)


def spawn_main(config_path: str, req_fd: int, resp_fd: int) -> None:
    """Entry point of the child, started by the sandbox (inside the jail where there is one)."""
    _die_with_parent()
    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    sys.exit(run_worker(config, req_fd, resp_fd))


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except Exception:
            pass
