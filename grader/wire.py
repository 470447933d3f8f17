"""The wire between the grader and a sandbox child: one format, and one table of its messages.

A frame is an 8-byte big-endian length, then that many bytes: a 4-byte length and that much
UTF-8 JSON, then the raw bytes of the tensors the JSON refers to. JSON holds plain data; JSON
objects are always tagged values for what JSON lacks (``{"t": "tuple", "v": [...]}``, a dict
as its pairs, a tensor as its dtype, shape and place in the bytes). Nothing is unpickled: the
reader builds every tensor itself from bytes, after checking its dtype, shape and size against
what arrived, within an element budget; so a child can make the parent allocate no more than it
sent, and run no code there.

Every message type and its fields are declared once, in ``FROM_CHILD`` and ``FROM_PARENT``;
``check`` validates a decoded message against its table, on either side. This file is copied
into the child's runner package with the worker (``grader.jail.RUNNER_FILES``): it imports only
the standard library and torch.
"""
from __future__ import annotations

import base64
import json
import math
import struct
from typing import Any

HEADER = struct.Struct(">Q")  # the length of a frame
_JSON = struct.Struct(">I")  # the length of its JSON part
MAX_DEPTH = 32  # nesting of plain data in one message
# tensor dtypes that may cross, by name; anything else is refused
DTYPES = ("float16", "bfloat16", "float32", "float64", "uint8", "int8", "int16", "int32", "int64", "bool",
          "complex64", "complex128")
ANY = "any"  # a field that holds any plain data

# Each message: its "type" and exactly these fields. A field's spec is a type, a tuple of types
# (any of them; bool never counts as int), a tuple of allowed string values, or ANY.
FROM_CHILD: dict[str, dict[str, Any]] = {
    "hello": {"pid": int},
    "progress": {"module": str, "state": ("begin", "end")},  # a student module starts or ends importing
    "forbidden": {"call": dict},  # a recorded library call (integrity.ForbiddenCall.to_dict())
    "update": {"id": int, "value": ANY},  # worker.report(): the probe's latest account
    "ask": {"id": int, "value": ANY},  # worker.ask(): the probe waits for an "answer"
    "result": {"id": int, "ok": bool, "value": ANY, "error": (dict, type(None))},
}
FROM_PARENT: dict[str, dict[str, Any]] = {
    "import": {"id": int, "seed": int, "blocked": list},
    "call": {"id": int, "seed": int, "probe": str, "args": list, "kwargs": dict},
    "answer": {"id": int, "value": ANY},
    "exit": {},
}


class WireError(ValueError):
    """A frame that is not what the other side may send: malformed, too large, or undeclared."""


# ---------------------------------------------------------------------------------------------
# plain data <-> bytes


def encode(message: object) -> bytes:
    """The payload of a frame (without HEADER) for plain data: None, bool, int, float, str,
    bytes, complex, list, tuple, set, dict (str or int keys), tensors, dtypes, devices, sizes."""
    blobs: list[bytes] = []
    tensors: list[dict] = []
    body = json.dumps(_to_json(message, blobs, tensors, 0), separators=(",", ":")).encode()
    head = json.dumps({"tensors": tensors}, separators=(",", ":")).encode()
    text = head + b"\n" + body
    return _JSON.pack(len(text)) + text + b"".join(blobs)


def _to_json(value: object, blobs: list[bytes], tensors: list[dict], depth: int) -> object:
    import torch

    if depth > MAX_DEPTH:
        raise TypeError("the message is nested too deeply")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"t": "float", "v": repr(value)}
    if isinstance(value, complex):
        return {"t": "complex", "v": [_to_json(value.real, blobs, tensors, depth + 1),
                                      _to_json(value.imag, blobs, tensors, depth + 1)]}
    if isinstance(value, bytes):
        return {"t": "bytes", "v": base64.b64encode(value).decode()}
    if isinstance(value, torch.Tensor):
        tensor = value.detach().to("cpu").contiguous()
        dtype = str(tensor.dtype).removeprefix("torch.")
        if dtype not in DTYPES:
            raise TypeError(f"a tensor of dtype {dtype} cannot be sent")
        data = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        tensors.append({"dtype": dtype, "shape": list(tensor.shape), "nbytes": len(data)})
        blobs.append(data)
        return {"t": "tensor", "v": len(tensors) - 1}
    if isinstance(value, torch.dtype):
        return {"t": "dtype", "v": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"t": "device", "v": str(value)}
    if isinstance(value, torch.Size):
        return {"t": "size", "v": list(value)}
    if isinstance(value, list):
        return [_to_json(v, blobs, tensors, depth + 1) for v in value]
    if isinstance(value, (tuple, set, frozenset)):
        kind = "tuple" if isinstance(value, tuple) else "set"
        return {"t": kind, "v": [_to_json(v, blobs, tensors, depth + 1) for v in value]}
    if isinstance(value, dict):
        pairs = []
        for k, v in value.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"a dict key of type {type(k).__name__} cannot be sent; use str or int keys")
            pairs.append([k, _to_json(v, blobs, tensors, depth + 1)])
        return {"t": "dict", "v": pairs}
    raise TypeError(f"a {type(value).__module__}.{type(value).__qualname__} cannot be sent: plain data only")


def decode(payload: bytes, max_elements: int = 64 << 20) -> object:
    """The plain data in a frame's payload; WireError for anything but what ``encode`` writes, and
    for tensors of more than ``max_elements`` elements in all."""
    if len(payload) < _JSON.size:
        raise WireError("a frame too short to hold a message")
    (size,) = _JSON.unpack_from(payload)
    if _JSON.size + size > len(payload):
        raise WireError("a frame shorter than its message says")
    text, blobs = payload[_JSON.size:_JSON.size + size], memoryview(payload)[_JSON.size + size:]
    head, _, body = text.partition(b"\n")
    try:
        tensors = json.loads(head)["tensors"]
        value = json.loads(body)
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise WireError(f"a frame whose message is not JSON of the wire's form ({type(exc).__name__})") from None
    built = _tensors(tensors, blobs, max_elements)
    return _from_json(value, built, 0)


def _tensors(table: object, blobs: memoryview, budget: int) -> list[object]:
    """The tensors of a frame, each built here from its bytes after its dtype, shape and size are checked."""
    import torch

    if not isinstance(table, list):
        raise WireError("a frame without its table of tensors")
    out, offset = [], 0
    for entry in table:
        if not (isinstance(entry, dict) and set(entry) == {"dtype", "shape", "nbytes"} and entry["dtype"] in DTYPES
                and isinstance(entry["shape"], list) and len(entry["shape"]) <= 32
                and all(type(n) is int and n >= 0 for n in entry["shape"]) and type(entry["nbytes"]) is int):
            raise WireError("a malformed tensor in a frame")
        dtype = getattr(torch, entry["dtype"])
        elements = math.prod(entry["shape"])
        budget -= elements
        if budget < 0:
            raise WireError("tensors with too many elements in one message")
        nbytes = elements * torch.empty((), dtype=dtype).element_size()
        if entry["nbytes"] != nbytes or offset + nbytes > len(blobs):
            raise WireError("a tensor whose bytes do not match its dtype and shape")
        if nbytes:
            flat = torch.frombuffer(bytearray(blobs[offset:offset + nbytes]), dtype=torch.uint8)
            out.append(flat.view(dtype).reshape(entry["shape"]))
        else:
            out.append(torch.empty(entry["shape"], dtype=dtype))
        offset += nbytes
    if offset != len(blobs):
        raise WireError("a frame with bytes no tensor accounts for")
    return out


def _from_json(value: object, tensors: list[object], depth: int) -> object:
    import torch

    if depth > MAX_DEPTH:
        raise WireError("a message nested too deeply")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [_from_json(v, tensors, depth + 1) for v in value]
    if not (isinstance(value, dict) and set(value) == {"t", "v"}):
        raise WireError("a JSON object that is not a tagged value")
    tag, inner = value["t"], value["v"]
    try:
        if tag == "float" and inner in ("nan", "inf", "-inf"):
            return float(inner)
        if tag == "complex" and isinstance(inner, list) and len(inner) == 2:
            return complex(*(_number(_from_json(x, tensors, depth + 1)) for x in inner))
        if tag == "bytes" and isinstance(inner, str):
            return base64.b64decode(inner, validate=True)
        if tag == "tensor" and type(inner) is int and 0 <= inner < len(tensors):
            return tensors[inner]
        if tag == "dtype" and inner in DTYPES:
            return getattr(torch, inner)
        if tag == "device" and isinstance(inner, str) and len(inner) < 32:
            return torch.device(inner)
        if tag == "size" and isinstance(inner, list) and all(type(n) is int and n >= 0 for n in inner):
            return torch.Size(inner)
        if tag in ("tuple", "set") and isinstance(inner, list):
            items = [_from_json(v, tensors, depth + 1) for v in inner]
            return tuple(items) if tag == "tuple" else set(items)
        if tag == "dict" and isinstance(inner, list):
            out = {}
            for pair in inner:
                if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], (str, int))
                        and not isinstance(pair[0], bool)):
                    raise WireError("a malformed dict entry")
                out[pair[0]] = _from_json(pair[1], tensors, depth + 1)
            return out
    except (ValueError, TypeError, RuntimeError) as exc:  # a bad device name, an unhashable set item, ...
        raise WireError(f"a malformed {tag} value ({type(exc).__name__})") from None
    raise WireError(f"an unknown or malformed tagged value {str(tag)[:20]!r}")


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WireError("a complex number with a part that is not a number")
    return float(value)


# ---------------------------------------------------------------------------------------------
# the messages


def check(message: object, table: dict[str, dict[str, Any]]) -> dict:
    """``message`` if it is one of ``table``'s types with exactly its fields, each of its kind;
    else WireError saying what is wrong."""
    if not isinstance(message, dict) or message.get("type") not in table:
        raise WireError(f"an unexpected message ({str(message.get('type') if isinstance(message, dict) else type(message).__name__)[:30]})")
    kind = message["type"]
    fields = table[kind]
    if set(message) != {"type", *fields}:
        raise WireError(f"a {kind} message with other fields than {sorted(fields)}")
    for name, spec in fields.items():
        if not _fits(message[name], spec):
            raise WireError(f"a {kind} message whose {name!r} is malformed")
    return message


def _fits(value: object, spec: Any) -> bool:
    if spec is ANY:
        return True
    if isinstance(spec, tuple) and spec and all(isinstance(s, str) for s in spec):
        return value in spec
    kinds = spec if isinstance(spec, tuple) else (spec,)
    if isinstance(value, bool) and bool not in kinds:
        return False
    return isinstance(value, kinds)
