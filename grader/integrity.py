"""Detect, at run time, the student's use of library attention (and convolutions, and timm).

Runs in the sandbox child: ``install_traps`` wraps the library entry points *before* the
submission is imported, so ``from torch.nn.functional import scaled_dot_product_attention``
done by the student binds the wrapper too. A trapped call still goes through to the original;
it is only recorded, with the location of the innermost stack frame that lies in one of the
student's files. Calls with no student frame on the stack (the grader's probes, the reference
solution, torch calling itself) are not recorded, and calls made *inside* a recorded call (e.g.
``nn.MultiheadAttention.forward`` calling ``F.multi_head_attention_forward``) are not recorded
again.

Below the wrappers, ``observer`` (a ``TorchFunctionMode`` pushed for every request) sees the
attention kernels however they are reached: ``torch.ops.aten``, the math kernel, the native
multi-head attention and the fused encoder layer, through any alias. A torch function mode holds
for one thread only, so every Python thread started after the traps runs under one too, and a
call in a thread with no student frame of its own (a pool's worker) is the student's who started
that thread. All of this lives in the student's process, so it is a second layer: the grader's
static scan (``grader.scan``) reads the source, where undoing these traps would show.
"""
from __future__ import annotations

import builtins
import functools
import importlib
import os
import sys
import threading
from dataclasses import asdict, dataclass, field
from types import FrameType
from typing import Callable, Mapping, Sequence

ATTENTION = "attention"
CONVOLUTION = "convolution"  # a patch embedding written as a convolution (kernel = stride): recorded, allowed
CNN = "cnn"  # any other convolution: a CNN workaround, charged like library attention
LIBRARY = "library"
REFERENCE = "reference"
DYNAMIC = "dynamic"  # code the grader cannot see through (exec, frames, torch internals); found by grader.scan

# (module, attribute, category): functions replaced by a recording wrapper.
FUNCTION_TRAPS: tuple[tuple[str, str, str], ...] = (
    ("torch.nn.functional", "scaled_dot_product_attention", ATTENTION),
    ("torch.nn.functional", "multi_head_attention_forward", ATTENTION),
    ("torch._C._nn", "scaled_dot_product_attention", ATTENTION),
    ("torch.nn.functional", "conv2d", CONVOLUTION),  # the category is decided per call (convolution_category)
    ("torch", "conv2d", CONVOLUTION),
)
# (module, class, category): construction and forward are recorded (subclasses included).
CLASS_TRAPS: tuple[tuple[str, str, str], ...] = (
    ("torch.nn", "MultiheadAttention", ATTENTION),
    ("torch.nn", "TransformerEncoderLayer", ATTENTION),
    ("torch.nn", "TransformerEncoder", ATTENTION),
    ("torch.nn", "TransformerDecoderLayer", ATTENTION),
    ("torch.nn", "TransformerDecoder", ATTENTION),
    ("torch.nn", "Transformer", ATTENTION),
    ("torch.nn", "Conv2d", CONVOLUTION),
)
# torch functions and aten ops that are library attention, as the observer sees them by name
ATTENTION_OPS = frozenset({"scaled_dot_product_attention", "multi_head_attention_forward",
                           "_native_multi_head_attention", "_transformer_encoder_layer_fwd"})
# ... and convolutions, all called (input, weight, bias, stride, ...): a CNN unless kernel = stride
CONVOLUTION_OPS = frozenset({"conv1d", "conv2d", "conv3d", "convolution", "_convolution"})
ATTENTION_OP_PREFIXES = ("_scaled_dot_product", "_fused_sdp", "_flash_attention", "_efficient_attention")
# top-level packages whose import by the student is recorded
FORBIDDEN_IMPORTS: Mapping[str, str] = {"timm": LIBRARY, "reference": REFERENCE}


@dataclass(frozen=True)
class ForbiddenCall:
    """One use of a trapped API, located in the student's code."""

    api: str  # e.g. "torch.nn.functional.scaled_dot_product_attention", "torch.nn.Conv2d", "import timm"
    student_file: str  # relative to the submission, e.g. "attention.py"
    line: int
    function: str  # qualified name of the student's function, "<module>" at import time
    component_hint: str  # the interface class/function it happened in, if any, else the enclosing name
    category: str = ATTENTION  # ATTENTION | CONVOLUTION | CNN | LIBRARY | REFERENCE | DYNAMIC

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> ForbiddenCall:
        """Rebuild from plain data, checking every field's type (the data came from the child)."""
        if not isinstance(data, dict):
            raise ValueError("a forbidden-call record must be a dict")
        values = {}
        for name, kind in (("api", str), ("student_file", str), ("line", int), ("function", str),
                           ("component_hint", str), ("category", str)):
            value = data.get(name)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"forbidden-call field {name!r} must be {kind.__name__}")
            values[name] = value[:500] if isinstance(value, str) else value
        return cls(**values)


class StudentFiles:
    """Tells whether a code object's file is one of the student's, and its display name."""

    def __init__(self, files: Mapping[str, str]) -> None:
        # absolute path -> display name; keyed by real path so that symlinked temp dirs match
        self._names = {os.path.realpath(path): name for path, name in files.items()}
        self._cache: dict[str, str | None] = {}

    def __call__(self, filename: str) -> str | None:
        try:
            return self._cache[filename]
        except KeyError:
            pass
        name = None if filename.startswith("<") else self._names.get(os.path.realpath(filename))
        self._cache[filename] = name
        return name


def student_location(
    frame: FrameType | None, student_file: Callable[[str], str | None], components: Sequence[str] = ()
) -> tuple[str, int, str, str] | None:
    """(file, line, function, component hint) of the innermost student frame from ``frame`` out."""
    innermost = None
    while frame is not None:
        name = student_file(frame.f_code.co_filename)
        if name is not None:
            qualname = getattr(frame.f_code, "co_qualname", frame.f_code.co_name)
            head = qualname.split(".")[0]
            if innermost is None:
                innermost = (name, frame.f_lineno, qualname, head)
            if head in components:
                return innermost[:3] + (head,)
        frame = frame.f_back
    return innermost


@dataclass
class Traps:
    """The installed traps; ``reset`` starts a fresh de-duplication window (one per request)."""

    student_file: Callable[[str], str | None]
    record: Callable[[ForbiddenCall], None]
    components: Sequence[str] = ()
    _patches: list[tuple[object, str, object]] = field(default_factory=list)
    _seen: set[tuple[str, str, int]] = field(default_factory=set)
    _local: threading.local = field(default_factory=threading.local)

    def reset(self) -> None:
        self._seen.clear()

    def uninstall(self) -> None:
        for owner, attr, original in reversed(self._patches):
            setattr(owner, attr, original)
        self._patches.clear()
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _ImportTrap)]

    # -- used by the wrappers -------------------------------------------------------------------

    def enter(self, api: str, category: str, frame: FrameType | None) -> bool:
        """Record the call if it is the student's; True if it was (the caller must ``leave``)."""
        if getattr(self._local, "depth", 0):
            return False  # inside a recorded call: this is the library calling itself
        if not self.note(api, category, frame):
            return False
        self._local.depth = 1
        return True

    def leave(self) -> None:
        self._local.depth = 0

    def note(self, api: str, category: str, frame: FrameType | None) -> bool:
        where = student_location(frame, self.student_file, self.components)
        # a thread the student started (a pool's worker) runs on behalf of the code that started it
        origin = getattr(threading.current_thread(), ORIGIN, None)
        if origin is not None and (where is None or (where[3] not in self.components and origin[3] in self.components)):
            where = origin
        if where is None:
            return False
        key = (api, where[0], where[1])
        if key not in self._seen:
            self._seen.add(key)
            try:
                self.record(ForbiddenCall(api, *where, category=category))
            except Exception:  # recording must never break the student's call
                pass
        return True

    def patch(self, owner: object, attr: str, replacement: object) -> None:
        self._patches.append((owner, attr, getattr(owner, attr)))
        setattr(owner, attr, replacement)


def install_traps(
    student_file: Callable[[str], str | None],
    record: Callable[[ForbiddenCall], None],
    components: Sequence[str] = (),
) -> Traps:
    """Install every trap; ``record`` receives each new (api, file, line) found in student code."""
    traps = Traps(student_file, record, tuple(components))
    for module_name, attr, category in FUNCTION_TRAPS:
        module = importlib.import_module(module_name)
        original = getattr(module, attr, None)
        kind = convolution_category if category == CONVOLUTION else category
        if original is not None:
            traps.patch(module, attr, _function_trap(traps, original, f"{module_name}.{attr}", kind))
    for module_name, class_name, category in CLASS_TRAPS:
        cls = getattr(importlib.import_module(module_name), class_name, None)
        if cls is None:
            continue
        api = f"{module_name}.{class_name}"
        kind = conv_module_category if category == CONVOLUTION else category
        for method, label in (("__init__", api), ("forward", f"{api}.forward")):
            if method in vars(cls):
                traps.patch(cls, method, _function_trap(traps, vars(cls)[method], label, kind))
    traps.patch(builtins, "__import__", _import_trap(traps, builtins.__import__))
    sys.meta_path.insert(0, _ImportTrap(traps))
    _trap_threads(traps)
    return traps


ORIGIN = "_vitkit_origin"  # on a thread: the student's location that started it, if any


def _trap_threads(traps: Traps) -> None:
    """Every Python thread started from now on remembers the student code that started it and runs
    under the attention observer (a torch function mode covers one thread only)."""
    start, bootstrap = threading.Thread.start, getattr(threading.Thread, "_bootstrap_inner", None)

    def started(self: threading.Thread) -> None:
        setattr(self, ORIGIN, student_location(sys._getframe(1), traps.student_file, traps.components))
        return start(self)

    def observed(self: threading.Thread) -> None:
        try:
            mode = observer(traps)
        except Exception:  # no torch here: the function traps still hold
            return bootstrap(self)
        with mode:
            return bootstrap(self)

    traps.patch(threading.Thread, "start", started)
    if bootstrap is not None:  # CPython's entry point of every new thread
        traps.patch(threading.Thread, "_bootstrap_inner", observed)


def observer(traps: Traps) -> object:
    """A torch function mode that records library attention reached by any route; push it
    (``with observer(traps):``) around the student's code."""
    from torch.overrides import TorchFunctionMode

    class AttentionObserver(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            name = getattr(func, "__name__", "")
            category = (ATTENTION if name in ATTENTION_OPS or name.startswith(ATTENTION_OP_PREFIXES)
                        else convolution_category(args, kwargs or {}) if name in CONVOLUTION_OPS else None)
            if category is not None and not getattr(traps._local, "depth", 0):
                if traps.enter(f"torch op {name}", category, sys._getframe(1)):
                    try:
                        return func(*args, **(kwargs or {}))
                    finally:
                        traps.leave()
            return func(*args, **(kwargs or {}))

    return AttentionObserver()


def convolution_category(args: Sequence[object], kwargs: Mapping[str, object]) -> str:
    """CONVOLUTION for a convolution whose stride equals its kernel (a patch embedding: each patch
    seen once), CNN for any other; called as (input, weight, bias, stride, ...)."""
    weight = args[1] if len(args) > 1 else kwargs.get("weight")
    stride = args[3] if len(args) > 3 else kwargs.get("stride", 1)
    return CONVOLUTION if _same_size(getattr(weight, "shape", ())[2:], stride) else CNN


def conv_module_category(args: Sequence[object], kwargs: Mapping[str, object]) -> str:
    """``convolution_category`` for ``nn.Conv2d(in, out, kernel_size, stride=1, ...)`` and its forward."""
    module = args[0] if args else None
    if hasattr(module, "kernel_size") and hasattr(module, "stride"):  # forward(self, x): built already
        return CONVOLUTION if _same_size(module.kernel_size, module.stride) else CNN
    kernel = args[3] if len(args) > 3 else kwargs.get("kernel_size")
    stride = args[4] if len(args) > 4 else kwargs.get("stride", 1)
    return CONVOLUTION if _same_size(kernel, stride) else CNN


def _same_size(kernel: object, stride: object) -> bool:
    """Whether a kernel size and a stride (ints, or sequences of them) are the same in every dimension."""
    try:
        k = [int(x) for x in kernel] if hasattr(kernel, "__len__") else [int(kernel)]
        s = [int(x) for x in stride] if hasattr(stride, "__len__") else [int(stride)]
    except (TypeError, ValueError):
        return False
    if len(k) == 1 and len(s) > 1:
        k = k * len(s)
    if len(s) == 1 and len(k) > 1:
        s = s * len(k)
    return len(k) > 0 and k == s


def _function_trap(traps: Traps, original: Callable, api: str, category: str | Callable[..., str]) -> Callable:
    @functools.wraps(original)
    def trap(*args: object, **kwargs: object) -> object:
        kind = category(args, kwargs) if callable(category) else category
        entered = traps.enter(api, kind, sys._getframe(1))
        try:
            return original(*args, **kwargs)
        finally:
            if entered:
                traps.leave()

    return trap


def _import_trap(traps: Traps, original: Callable) -> Callable:
    @functools.wraps(original)
    def trap(name: str, globals: object = None, locals: object = None, fromlist: object = (), level: int = 0) -> object:
        if level == 0 and name:
            top = name.partition(".")[0]
            if top in FORBIDDEN_IMPORTS:
                traps.note(f"import {top}", FORBIDDEN_IMPORTS[top], sys._getframe(1))
        return original(name, globals, locals, fromlist, level)

    return trap


class _ImportTrap:
    """Meta path finder that sees ``importlib.import_module`` of a forbidden package; finds nothing."""

    def __init__(self, traps: Traps) -> None:
        self._traps = traps

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name in FORBIDDEN_IMPORTS:
            self._traps.note(f"import {name}", FORBIDDEN_IMPORTS[name], sys._getframe(1))
        return None
