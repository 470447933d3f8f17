"""The wire between the grader and a child (``grader.wire``): plain data crosses whole, and a
frame a hostile child writes by hand is refused before the parent allocates more than it was
sent, runs any code, or takes a message it did not declare."""
from __future__ import annotations

import io
import json
import math
import struct

import pytest
import torch

from grader.sandbox import _decode, _Violation
from grader.wire import FROM_CHILD, FROM_PARENT, WireError, check, decode, encode


def frame(tensors: list[dict], body: object, blobs: bytes = b"") -> bytes:
    """A payload written by hand, as a child that does not use ``encode`` would."""
    text = json.dumps({"tensors": tensors}).encode() + b"\n" + json.dumps(body).encode()
    return struct.pack(">I", len(text)) + text + blobs


def result(value: object) -> dict:
    return {"type": "result", "id": 1, "ok": True, "value": value, "error": None}


def test_plain_data_crosses_whole() -> None:
    value = {"w": torch.randn(3, 4), "half": torch.ones(2, dtype=torch.bfloat16), "mask": torch.tensor([True, False]),
             "scalar": torch.tensor(7), "empty": torch.zeros(0, 5), 3: (1, 2.5, "x"), "set": {1, 2}, "raw": b"\x00\xff",
             "z": 1 + 2j, "nan": float("nan"), "inf": -math.inf, "dtype": torch.float16, "device": torch.device("cpu"),
             "size": torch.Size([2, 3]), "none": None, "list": [[1], [True, False]]}
    back = decode(encode(value))
    for key in ("w", "half", "mask", "scalar", "empty"):
        assert back[key].dtype == value[key].dtype and torch.equal(back[key], value[key])
    assert math.isnan(back.pop("nan")) and back[3] == (1, 2.5, "x") and back["set"] == {1, 2}
    assert {k: v for k, v in back.items() if not isinstance(v, torch.Tensor)} == \
        {k: v for k, v in value.items() if not isinstance(v, torch.Tensor) and k != "nan"}


def test_a_pickle_is_never_read() -> None:
    """The former format (torch.save), as a child could still send it: refused, not unpickled."""
    buffer = io.BytesIO()
    torch.save(result(torch.ones(2)), buffer)
    with pytest.raises(_Violation):
        _decode(buffer.getvalue())


@pytest.mark.parametrize("tensors, body, blobs, says", [
    ([{"dtype": "float32", "shape": [10**9], "nbytes": 4 * 10**9}], {"t": "tensor", "v": 0}, b"", "too many elements"),
    ([{"dtype": "float32", "shape": [4], "nbytes": 16}], {"t": "tensor", "v": 0}, b"\x00" * 8, "do not match"),
    ([{"dtype": "float32", "shape": [2], "nbytes": 4}], {"t": "tensor", "v": 0}, b"\x00" * 4, "do not match"),
    ([{"dtype": "float32", "shape": [1], "nbytes": 4}], {"t": "tensor", "v": 0}, b"\x00" * 12, "no tensor accounts for"),
    ([{"dtype": "object", "shape": [1], "nbytes": 8}], {"t": "tensor", "v": 0}, b"\x00" * 8, "malformed tensor"),
    ([], {"t": "tensor", "v": 3}, b"", "malformed"),
    ([], {"__reduce__": "os.system"}, b"", "not a tagged value"),
    ([], {"t": "device", "v": "no-such-device:7"}, b"", "malformed device"),
])
def test_a_hand_written_frame_that_breaks_the_format_is_refused(tensors: list, body: object, blobs: bytes,
                                                                 says: str) -> None:
    with pytest.raises(WireError, match=says):
        decode(frame(tensors, body, blobs), max_elements=1 << 20)


def test_a_message_too_deep_is_refused() -> None:
    body: object = 1
    for _ in range(40):
        body = [body]
    with pytest.raises(WireError, match="too deeply"):
        decode(frame([], body))


@pytest.mark.parametrize("message, says", [
    ({"type": "result", "id": 1, "ok": True, "value": 1, "error": None, "extra": 1}, "other fields"),
    ({"type": "result", "id": True, "ok": True, "value": 1, "error": None}, "'id' is malformed"),
    ({"type": "progress", "module": "vit", "state": "halfway"}, "'state' is malformed"),
    ({"type": "call", "id": 1, "seed": 0, "probe": "p", "args": [], "kwargs": {}}, "unexpected message"),
    ({"id": 1}, "unexpected message"),
])
def test_only_declared_messages_with_their_fields_are_taken(message: dict, says: str) -> None:
    with pytest.raises(WireError, match=says):
        check(message, FROM_CHILD)


def test_each_side_takes_its_own_messages() -> None:
    assert check(result(None), FROM_CHILD)["ok"] is True
    assert check({"type": "exit"}, FROM_PARENT) == {"type": "exit"}
    with pytest.raises(WireError):
        check(result(None), FROM_PARENT)


def test_the_parent_checks_an_error_record_too() -> None:
    bad = {"type": "result", "id": 1, "ok": False, "value": None, "error": {"type_name": "X"}}
    with pytest.raises(_Violation, match="error field"):
        _decode(encode(bad))
