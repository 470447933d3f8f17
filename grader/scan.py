"""Find, without running it, the student's use of library attention, timm, the reference solution,
and code the grader cannot see through.

The run-time traps of ``grader.integrity`` live in the student's own process, where a determined
student can step around them (``torch.ops.aten``, ``getattr`` with a computed name, ``exec``,
undoing the patches). This scan runs in the grader process on the source text, with ``ast`` only:
nothing of the submission is imported or executed, so nothing in it can undo the scan.

Names are resolved statically to dotted paths: imports (aliases included), simple re-binding
(``G = F``, ``H = getattr(torch.nn, "functional")``), ``getattr`` with a constant name,
``importlib.import_module`` / ``__import__`` of a constant module, and strings folded from
constants (``"scaled_" + "dot_product_attention"``). One table of bindings serves the whole file:
a name bound to torch anywhere is taken as torch everywhere. What cannot be resolved this way
(a computed ``getattr`` on torch, ``exec``, frames, ``sys.modules``) is reported as DYNAMIC:
no homework needs it.

The student's own function is called ``scaled_dot_product_attention`` too: that name is only
reported when it resolves to torch, or when it is passed as a string to a call.
"""
from __future__ import annotations

import ast
import builtins
import warnings
from typing import Callable, Iterable, Mapping

from grader.integrity import ATTENTION, DYNAMIC, LIBRARY, REFERENCE, ForbiddenCall
from grader.syntax import parse

SDPA = "scaled_dot_product_attention"
TRANSFORMERS = ("Transformer", "TransformerEncoderLayer", "TransformerEncoder", "TransformerDecoderLayer",
                "TransformerDecoder")
ATTENTION_CLASSES = ("MultiheadAttention", *TRANSFORMERS)  # calling an instance runs library attention
# dotted paths of library attention; the longest match names the finding
ATTENTION_PATHS: tuple[str, ...] = (
    f"torch.nn.functional.{SDPA}",
    "torch.nn.functional.multi_head_attention_forward",
    f"torch._C._nn.{SDPA}",
    "torch.nn.modules.activation.MultiheadAttention",
    "torch.nn.modules.transformer",
    "torch.nn.attention",  # flex_attention and the SDPA back-end switches
    *(f"torch.nn.{name}" for name in ATTENTION_CLASSES),
    *(f"torch.nn.modules.transformer.{name}" for name in TRANSFORMERS),
)
# names that are library attention whatever they are looked up on
ATTENTION_NAMES = frozenset({
    "MultiheadAttention", "TransformerEncoderLayer", "TransformerEncoder", "TransformerDecoderLayer",
    "TransformerDecoder", "multi_head_attention_forward", "_native_multi_head_attention",
    "_transformer_encoder_layer_fwd", "_triton_multi_head_attention", "_triton_scaled_dot_attention",
})
ATTENTION_PREFIXES = ("_scaled_dot_product", "_fused_sdp", "_flash_attention", "_efficient_attention")
# top-level packages the student may not import
FORBIDDEN_PACKAGES: Mapping[str, str] = {
    "timm": LIBRARY, "flash_attn": LIBRARY, "xformers": LIBRARY, "reference": REFERENCE, "grader": REFERENCE,
    "course": REFERENCE, "theory": REFERENCE,  # the kit's build step and worked answers
    "vitkit_child": REFERENCE,  # the grader's code in the jail (grader.jail.RUNNER_PACKAGE)
}
LIBRARY_PATHS = ("torch.hub", "torchvision.models")  # ready-made models
# dotted path -> the name a DYNAMIC finding is reported under
DYNAMIC_PATHS: Mapping[str, str] = {
    **{f"builtins.{name}": name for name in ("exec", "eval", "compile", "__import__", "breakpoint")},
    **{path: path for path in (
        "torch.ops", "torch._C", "torch.library", "torch.utils.cpp_extension",
        "torch.overrides", "torch.utils._python_dispatch",  # could pop the grader's observer mode
        "sys.modules", "sys.meta_path", "sys.path_hooks", "sys.path_importer_cache", "sys._getframe",
        "sys.settrace", "sys.setprofile", "sys.monitoring",
        "inspect.currentframe", "inspect.stack", "inspect.trace", "inspect.getouterframes",
        "inspect.getinnerframes", "threading.settrace", "threading.setprofile",
        "importlib.__import__", "importlib.reload", "importlib.machinery",
        "importlib.util.spec_from_file_location", "importlib.util.spec_from_loader",
        "importlib.util.module_from_spec", "runpy",
    )},
}
# attributes (and string keys) that reach behind a function or into the call stack
DYNAMIC_ATTRIBUTES = frozenset({
    "__wrapped__", "__code__", "__globals__", "__builtins__", "__closure__", "__subclasses__",
    "f_back", "f_globals", "f_locals", "f_code", "f_builtins", "tb_frame",
})
IMPORT_FUNCTIONS = frozenset({"importlib.import_module", "builtins.__import__", "importlib.__import__", "pydoc.locate"})
REFLECTIONS = frozenset({"builtins.getattr", "builtins.setattr", "builtins.delattr", "builtins.vars",
                         "inspect.getmembers", "inspect.getmembers_static"})
DUNDER_REFLECTIONS = ("__setattr__", "__delattr__", "__getattribute__")
# namespaces where a computed attribute name can reach library attention
SENSITIVE = ("torch", "torch.nn", "torch.nn.functional", "builtins", "importlib", "sys")
SENSITIVE_TREES = ("torch._C", "torch.ops", "torch.library", "torch.nn.modules", "torch.nn.attention")
# torch settings that honest training code assigns (cudnn.benchmark, allow_tf32)
SETTINGS = ("torch.backends", "torch._dynamo.config", "torch._inductor.config")
NESTED_TOO_DEEPLY = "source nested too deeply to scan"
# top-level modules of every path above: a name bound elsewhere is the student's own business
ROOTS = frozenset(path.split(".")[0] for path in (
    *ATTENTION_PATHS, *LIBRARY_PATHS, *DYNAMIC_PATHS, *IMPORT_FUNCTIONS, *REFLECTIONS, *SENSITIVE, *FORBIDDEN_PACKAGES))
CANONICAL = frozenset((*ATTENTION_PATHS, *LIBRARY_PATHS, *DYNAMIC_PATHS.values()))
_BUILTINS = frozenset(dir(builtins))
_MAX_REBINDING_ROUNDS = 10
_MAX_PATHS_PER_NAME = 64  # `device = device.index; device = device.type` would otherwise grow without end


def scan_source(source: str, file: str) -> list[ForbiddenCall]:
    """The forbidden uses in one source file, in line order; [] if it does not parse."""
    try:
        with warnings.catch_warnings():  # under -W error, an invalid escape such as "\d" would read as a syntax error
            warnings.simplefilter("ignore")
            tree = parse(source, file)
    except (SyntaxError, ValueError):
        return []  # the import step reports it
    except RecursionError:
        return [ForbiddenCall(NESTED_TOO_DEEPLY, file, 1, "<module>", "<module>", DYNAMIC)]
    try:
        return _Scanner(file, _Bindings(tree)).scan(tree)
    except RecursionError:  # compiles in the child, but too deep for this scan: hides what it holds
        return [ForbiddenCall(NESTED_TOO_DEEPLY, file, 1, "<module>", "<module>", DYNAMIC)]


def scan_files(files: Mapping[str, str]) -> list[ForbiddenCall]:
    """``scan_source`` over display name -> source text, in file and line order."""
    return [call for name in sorted(files) for call in scan_source(files[name], name)]


# --- names and paths --------------------------------------------------------------------------

def attention_name(name: str) -> bool:
    """Whether ``name`` is library attention whatever it is looked up on."""
    return name in ATTENTION_NAMES or name.startswith(ATTENTION_PREFIXES)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".")


def _longest(path: str, prefixes: Iterable[str]) -> str | None:
    return max((p for p in prefixes if _under(path, p)), key=len, default=None)


def _torch(path: str) -> bool:
    return _under(path, "torch")


def _sensitive(path: str) -> bool:
    return path in SENSITIVE or any(_under(path, tree) for tree in SENSITIVE_TREES)


def _patchable(path: str) -> bool:
    """Whether assigning an attribute of ``path`` patches torch (its settings excepted)."""
    return _torch(path) and not any(_under(path, s) for s in SETTINGS)


def _rank(api: str) -> tuple[bool, int, str]:
    return api not in CANONICAL, len(api), api


def classify(path: str) -> list[tuple[str, str]]:
    """(api, category) of each forbidden thing the dotted ``path`` is, or lies under."""
    found = []
    parts = path.split(".")
    api = _longest(path, ATTENTION_PATHS)
    if api is None:
        for i, part in enumerate(parts):
            # the student's own scaled_dot_product_attention is fine; torch's is not
            if attention_name(part) or (part == SDPA and parts[0] == "torch"):
                api = ".".join(parts[: i + 1])
                break
    if api is not None:
        found.append((api, ATTENTION))
    library = _longest(path, LIBRARY_PATHS)
    if library is not None:
        found.append((library, LIBRARY))
    dynamic = _longest(path, DYNAMIC_PATHS)
    if dynamic is not None:
        found.append((DYNAMIC_PATHS[dynamic], DYNAMIC))
    found += [(part, DYNAMIC) for part in parts[1:] if part in DYNAMIC_ATTRIBUTES][:1]
    return found


def fold(node: ast.AST) -> str | None:
    """The value of a string expression built only from constants, else None."""
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = fold(node.left), fold(node.right)
        return None if left is None or right is None else left + right
    if isinstance(node, ast.JoinedStr):
        pieces = [fold(v.value if isinstance(v, ast.FormattedValue) else v) for v in node.values]
        return None if None in pieces else "".join(pieces)  # type: ignore[arg-type]
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "join"
            and len(node.args) == 1):
        sep, pieces = fold(node.func.value), _folded_items(node.args[0])
        return None if sep is None or pieces is None else sep.join(pieces)
    if isinstance(node, ast.Subscript):  # "noitnetta"[::-1], "xattention"[1:]
        text, index = fold(node.value), _constant_index(node.slice)
        if text is None or index is None:
            return None
        try:
            return text[index]
        except IndexError:
            return None
    return None


def _folded_items(node: ast.AST) -> list[str] | None:
    """The strings a constant sequence yields: a list or tuple of them, ``reversed(...)`` of one,
    or a string itself (its characters)."""
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [fold(e) for e in node.elts]
        return None if None in items else items  # type: ignore[return-value]
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "reversed"
            and len(node.args) == 1):
        items = _folded_items(node.args[0])
        return None if items is None else items[::-1]
    text = fold(node)
    return None if text is None else list(text)


def _constant_index(node: ast.AST) -> int | slice | None:
    """A subscript built from integer constants (an index or a slice), else None."""
    def number(part: ast.AST | None) -> int | None | bool:
        if part is None:
            return None
        if isinstance(part, ast.UnaryOp) and isinstance(part.op, ast.USub):
            inner = number(part.operand)
            return -inner if isinstance(inner, int) and inner is not False else False
        if isinstance(part, ast.Constant) and type(part.value) is int:
            return part.value
        return False  # not a constant: cannot be folded
    if isinstance(node, ast.Slice):
        parts = [number(p) for p in (node.lower, node.upper, node.step)]
        return None if any(p is False for p in parts) or parts[2] == 0 else slice(*parts)
    value = number(node)
    return value if isinstance(value, int) and value is not False else None


def bound_names(scope: ast.AST) -> frozenset[str]:
    """Names bound in ``scope`` (module, class or function body, its parameters), not in nested scopes."""
    names: set[str] = set()
    if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        a = scope.args
        names.update(arg.arg for arg in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg) if arg)
        todo: list[ast.AST] = [scope.body] if isinstance(scope, ast.Lambda) else list(scope.body)
    else:
        todo = list(getattr(scope, "body", []))
    while todo:  # iterative: a deep expression must not overflow the stack here
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            continue
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            names.add(node.id)
        elif isinstance(node, ast.alias) and node.name != "*":
            names.add(node.asname or node.name.split(".")[0])
        elif isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and node.name:
            names.add(node.name)
        todo.extend(ast.iter_child_nodes(node))
    return frozenset(names)


class _Bindings:
    """Name -> the dotted paths it may stand for, from the imports and re-bindings of one file."""

    def __init__(self, tree: ast.Module) -> None:
        self.paths: dict[str, set[str]] = {}
        self.stars: list[str] = []  # modules imported with `from m import *`
        self.module_names = bound_names(tree)
        assignments: list[tuple[ast.AST, ast.AST]] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        self._bind(alias.asname, {alias.name})
                    else:
                        top = alias.name.split(".")[0]
                        self._bind(top, {top})
            elif isinstance(node, ast.ImportFrom):
                module = "." * node.level + (node.module or "")
                for alias in node.names:
                    if alias.name == "*":
                        self.stars.append(module)
                    else:
                        dot = "" if module.endswith(".") else "."
                        self._bind(alias.asname or alias.name, {f"{module}{dot}{alias.name}"})
            elif isinstance(node, ast.Assign):
                assignments += [(target, node.value) for target in node.targets]
            elif isinstance(node, (ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
                assignments.append((node.target, node.value))
        module_bound = self.module_names.__contains__
        for _ in range(_MAX_REBINDING_ROUNDS):  # until nothing new: `H = G` may come before `G = F`
            changed = False
            for target, value in assignments:
                for name, expr in _pairs(target, value):
                    changed |= self._bind(name, self.resolve(expr, module_bound))
            if not changed:
                break

    def _bind(self, name: str, paths: set[str]) -> bool:
        known = self.paths.get(name, set())
        merged = known | {p for p in paths if p.split(".")[0] in ROOTS}  # other paths are never reported
        if len(merged) > _MAX_PATHS_PER_NAME:  # keep what is reported or leads to it, the shortest first
            merged = set(sorted(merged, key=lambda p: (not (classify(p) or _sensitive(p)), len(p), p))
                         [:_MAX_PATHS_PER_NAME])
        self.paths[name] = merged
        return merged != known

    def resolve(self, node: ast.AST, bound: Callable[[str], bool]) -> set[str]:
        """The dotted paths ``node`` may evaluate to; ``bound(name)``: the file binds ``name`` there."""
        if isinstance(node, ast.Name):
            if self.paths.get(node.id):
                return set(self.paths[node.id])
            if bound(node.id):
                return set()  # the student's own variable
            found = {f"{module}.{node.id}" for module in self.stars}
            if node.id in _BUILTINS:
                found.add(f"builtins.{node.id}")
            return found
        if isinstance(node, ast.Attribute):
            return {f"{p}.{node.attr}" for p in self.resolve(node.value, bound)}
        if isinstance(node, ast.Call):
            functions = self.resolve(node.func, bound)
            if "builtins.getattr" in functions and len(node.args) >= 2:
                name = fold(node.args[1])
                if name is not None:
                    return {f"{p}.{name}" for p in self.resolve(node.args[0], bound)}
            if functions & IMPORT_FUNCTIONS:
                module = _module_argument(node)
                if module and not module.startswith("."):
                    return {module, module.split(".")[0]}  # __import__ gives the top package
            return set()
        if isinstance(node, ast.Subscript) and "sys.modules" in self.resolve(node.value, bound):
            key = fold(node.slice)
            return {key} if key else set()
        if isinstance(node, ast.Subscript) and isinstance(node.value, (ast.List, ast.Tuple, ast.Set, ast.Dict)):
            # [torch][0], (F,)[-1], {"f": F}["f"]: whatever the literal holds may be what is taken
            elements = node.value.values if isinstance(node.value, ast.Dict) else node.value.elts
            return set().union(*(self.resolve(e, bound) for e in elements)) if elements else set()
        return set()


def _pairs(target: ast.AST, value: ast.AST) -> list[tuple[str, ast.AST]]:
    """(name, expression) for each plain name an assignment binds to an expression of its own."""
    if isinstance(target, ast.Name):
        return [(target.id, value)]
    if (isinstance(target, (ast.Tuple, ast.List)) and isinstance(value, (ast.Tuple, ast.List))
            and len(target.elts) == len(value.elts)):
        return [pair for t, v in zip(target.elts, value.elts) for pair in _pairs(t, v)]
    return []


def _module_argument(call: ast.Call) -> str | None:
    node = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg in ("name", "path")), None)
    return None if node is None else fold(node)


# --- the scan ---------------------------------------------------------------------------------

class _Scanner(ast.NodeVisitor):
    """Walks one file, keeping the enclosing definitions and scopes, and collects the findings."""

    def __init__(self, file: str, bindings: _Bindings) -> None:
        self.file = file
        self.bindings = bindings
        self.frames: list[tuple[str, str]] = []  # (name, "class" | "function") of the enclosing definitions
        self.scopes: list[tuple[str, frozenset[str]]] = [("module", bindings.module_names)]
        self.hits: list[tuple[int, int, str, str, str, str]] = []  # line, column, api, category, function, component
        self.arguments: set[int] = set()  # ids of the nodes passed directly to a call
        self.consumed: set[int] = set()  # ids of strings already reported through the call they name
        self.callees: set[int] = set()  # ids of the nodes called
        # instances of library attention, by (scope, "name" or "self.attr"), and calls of such names
        self.instances: dict[tuple[str, str], str] = {}
        self.calls: list[tuple[tuple[str, str], ast.AST, str, str]] = []

    def scan(self, tree: ast.Module) -> list[ForbiddenCall]:
        self.visit(tree)
        for key, node, function, component in self.calls:
            if key in self.instances:  # calling the module runs its forward
                self.hits.append((node.lineno, node.col_offset, f"{self.instances[key]}.forward", ATTENTION,
                                  function, component))
        seen: set[tuple[str, int]] = set()
        found = []
        for line, _, api, category, function, component in sorted(self.hits, key=lambda h: h[:2]):
            if (api, line) not in seen:
                seen.add((api, line))
                found.append(ForbiddenCall(api, self.file, line, function, component, category))
        return found

    # -- where we are ---------------------------------------------------------------------------

    def _qualname(self, frames: list[tuple[str, str]]) -> str:
        parts = []
        for i, (name, _) in enumerate(frames):
            if i and frames[i - 1][1] == "function":
                parts.append("<locals>")  # as in co_qualname, which the run-time records carry
            parts.append(name)
        return ".".join(parts) or "<module>"

    def _function(self) -> str:
        return self._qualname(self.frames)

    def _component(self) -> str:
        return self.frames[0][0] if self.frames else "<module>"

    def _class(self) -> str:
        last = max((i for i, (_, kind) in enumerate(self.frames) if kind == "class"), default=None)
        return "<module>" if last is None else self._qualname(self.frames[: last + 1])

    def _bound(self, name: str) -> bool:
        """Whether ``name`` is bound by the file where it is used (class bodies do not reach methods)."""
        innermost = len(self.scopes) - 1
        return any(name in names for i, (kind, names) in enumerate(self.scopes)
                   if kind != "class" or i == innermost)

    def _resolve(self, node: ast.AST) -> set[str]:
        return self.bindings.resolve(node, self._bound)

    def _hit(self, node: ast.AST, api: str, category: str) -> None:
        self.hits.append((node.lineno, node.col_offset, api, category, self._function(), self._component()))

    def _hit_paths(self, node: ast.AST, paths: Iterable[str]) -> bool:
        """Report what the paths ``node`` may stand for: one api per category; True if attention."""
        best: dict[str, str] = {}
        for path in paths:
            for api, category in classify(path):
                # a name bound several ways is reported once, under the library's own name if it has one
                if category not in best or _rank(api) < _rank(best[category]):
                    best[category] = api
        for category, api in best.items():
            self._hit(node, api, category)
        return ATTENTION in best

    # -- scopes ---------------------------------------------------------------------------------

    def _enter(self, node: ast.AST, name: str, kind: str) -> None:
        # decorators, defaults and bases count as the definition's own: that is the component they serve
        self.frames.append((name, kind))
        self.scopes.append((kind, bound_names(node)))
        self.generic_visit(node)
        self.scopes.pop()
        self.frames.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._enter(node, node.name, "function")

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._enter(node, node.name, "class")

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.scopes.append(("function", bound_names(node)))
        self.generic_visit(node)
        self.scopes.pop()

    # -- imports --------------------------------------------------------------------------------

    def _import(self, node: ast.AST, module: str) -> None:
        top = module.split(".")[0]
        if top in FORBIDDEN_PACKAGES:
            self._hit(node, f"import {top}", FORBIDDEN_PACKAGES[top])
        self._hit_paths(node, [module])

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._import(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        own = node.level > 0  # the student's own modules
        if not own:
            self._import(node, node.module or "")
        for alias in node.names:
            if alias.name == "*":
                continue
            attention = not own and self._hit_paths(node, [f"{node.module}.{alias.name}"])
            if not attention and attention_name(alias.name):
                self._hit(node, alias.name, ATTENTION)

    # -- names and attributes -------------------------------------------------------------------

    def visit_Name(self, node: ast.Name) -> None:
        if not isinstance(node.ctx, ast.Load):
            return
        if node.id == "__builtins__":
            self._hit(node, node.id, DYNAMIC)
        paths = self._resolve(node)
        self._hit_paths(node, paths)
        if id(node) not in self.callees:  # passed around, a reflection can be called out of sight
            for path in paths & REFLECTIONS:
                self._hit(node, path.split(".")[-1], DYNAMIC)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        paths = self._resolve(node)
        if not self._hit_paths(node, paths) and attention_name(node.attr):
            self._hit(node, node.attr, ATTENTION)
        if node.attr in DYNAMIC_ATTRIBUTES:
            self._hit(node, node.attr, DYNAMIC)
        bases = self._resolve(node.value)
        if node.attr == "__dict__":
            for base in filter(_torch, bases):
                self._hit(node, f"{base}.__dict__", DYNAMIC)
        if not isinstance(node.ctx, ast.Load):  # monkey-patching torch, e.g. to undo a trap
            verb = "del" if isinstance(node.ctx, ast.Del) else "assignment to"
            for base in filter(_patchable, bases):
                self._hit(node, f"{verb} {base}.{node.attr}", DYNAMIC)
        self.generic_visit(node)

    # -- calls ----------------------------------------------------------------------------------

    def visit_Call(self, node: ast.Call) -> None:
        self.callees.add(id(node.func))
        for arg in (*node.args, *(k.value for k in node.keywords)):
            self.arguments.add(id(arg.value if isinstance(arg, ast.Starred) else arg))
        functions = self._resolve(node.func)
        if self._hit_paths(node, self._resolve(node)) and len(node.args) >= 2:
            self.consumed.add(id(node.args[1]))  # getattr(F, "scaled_dot_product_attention"): said once
        self._reflection(node, functions)
        if functions & IMPORT_FUNCTIONS:
            module = _module_argument(node)
            if module is None:
                self._hit(node, sorted(functions & IMPORT_FUNCTIONS)[0].replace("builtins.", ""), DYNAMIC)
            elif not module.startswith("."):
                self._import(node, module)
        self._note_call(node)
        value = fold(node)
        if value is not None:  # "".join([...])
            self._string(node, value)
        self.generic_visit(node)

    def _reflection(self, node: ast.Call, functions: set[str]) -> None:
        """getattr with a computed name on a namespace holding attention; setattr, vars... on torch."""
        first = self._resolve(node.args[0]) if node.args and not isinstance(node.args[0], ast.Starred) else set()
        names = {path.split(".")[-1] for path in functions & REFLECTIONS}
        if isinstance(node.func, ast.Attribute) and node.func.attr in DUNDER_REFLECTIONS:
            first |= self._resolve(node.func.value)  # F.__setattr__(...) as well as object.__setattr__(F, ...)
            names.add(node.func.attr)
        for name in sorted(names):
            if name in ("getattr", "__getattribute__"):
                if len(node.args) >= 2 and fold(node.args[1]) is not None:
                    continue  # a constant name: resolved like an attribute
                targets = filter(_sensitive, first)
            elif name in ("setattr", "delattr", "__setattr__", "__delattr__"):
                targets = filter(_patchable, first)
            else:  # vars, inspect.getmembers: every attribute at once
                targets = filter(_torch, first)
            for target in targets:
                self._hit(node, f"{name}({target})", DYNAMIC)

    def _note_call(self, node: ast.Call) -> None:
        """Remember calls of names that may hold a library attention module (see ``visit_Assign``)."""
        func = node.func
        if isinstance(func, ast.Name):
            self.calls.append(((self._function(), func.id), node, self._function(), self._component()))
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "self":
            self.calls.append(((self._class(), f"self.{func.attr}"), node, self._function(), self._component()))

    def visit_Assign(self, node: ast.Assign) -> None:
        self._note_instance(node.targets, node.value)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self._note_instance([node.target], node.value)
        self.generic_visit(node)

    def _note_instance(self, targets: list[ast.expr], value: ast.AST) -> None:
        """`layer = nn.TransformerEncoderLayer(...)`, `self.mha = nn.MultiheadAttention(...)`."""
        if not isinstance(value, ast.Call):
            return
        apis = [api for path in self._resolve(value.func) for api, category in classify(path)
                if category == ATTENTION and api.split(".")[-1] in ATTENTION_CLASSES]
        if not apis:
            return
        for target in targets:
            if isinstance(target, ast.Name):
                self.instances[(self._function(), target.id)] = apis[0]
            elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
                self.instances[(self._class(), f"self.{target.attr}")] = apis[0]

    # -- strings --------------------------------------------------------------------------------

    def visit_Expr(self, node: ast.Expr) -> None:
        if fold(node.value) is None:  # docstrings and other bare strings say nothing
            self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            self._string(node, node.value)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        value = fold(node)
        if value is not None:
            self._string(node, value)
        else:  # the literal parts of an f-string are prose: only its expressions are code
            for part in node.values:
                if isinstance(part, ast.FormattedValue):
                    self.visit(part)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        value = fold(node)
        if value is not None:
            self._string(node, value)
        else:
            self.generic_visit(node)

    def _string(self, node: ast.AST, value: str) -> None:
        if id(node) in self.consumed:
            return
        parts = value.split(".")
        dotted = all(part.isidentifier() for part in parts)
        if value in DYNAMIC_ATTRIBUTES:
            self._hit(node, value, DYNAMIC)
        if not dotted:
            return
        if len(parts) > 1 and self._hit_paths(node, [value]):
            return  # "torch.nn.MultiheadAttention"
        if any(attention_name(part) for part in parts):
            self._hit(node, value, ATTENTION)
        elif SDPA in parts and id(node) in self.arguments:  # getattr(x, "scaled_dot_product_attention")
            self._hit(node, value, ATTENTION)
