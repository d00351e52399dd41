"""Read an ONNX file without its weight bytes.

Latency prediction needs the graph, the shapes and the small constants, never the weight
values, which are most of a file's size. This reads the protobuf wire format through ``mmap``
and keeps every field except the data of large initializers (their name, type and dims stay),
so the weight pages are never read from disk and never parsed.
"""
from __future__ import annotations

import mmap
from pathlib import Path

from ..errors import ModelFormatError

_GRAPH = 7            # ModelProto.graph
_INITIALIZER = 5      # GraphProto.initializer
# TensorProto fields holding data: float/int32/string/int64 data, raw_data, double/uint64 data
_TENSOR_DATA = frozenset({4, 5, 6, 7, 9, 10, 11})
_KEEP_DATA_BYTES = 1 << 15  # initializers smaller than this keep their data (axes, shapes)


class _Truncated(Exception):
    pass


def _varint(buf, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise _Truncated
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise ValueError("malformed varint")


def _fields(buf, start: int, end: int):
    """Yield ``(field_number, key_start, value_start, value_end)`` of a message."""
    pos = start
    n = len(buf)
    while pos < end:
        key_start = pos
        key = buf[pos] if pos < n else None  # one-byte varints (the usual keys) inline
        if key is not None and key < 0x80:
            pos += 1
        else:
            key, pos = _varint(buf, pos)
        fn, wt = key >> 3, key & 7
        if wt == 2:
            ln = buf[pos] if pos < n else None
            if ln is not None and ln < 0x80:
                p = pos + 1
            else:
                ln, p = _varint(buf, pos)
            yield fn, key_start, p, p + ln
            pos = p + ln
        elif wt == 0:
            _, p2 = _varint(buf, pos)
            yield fn, key_start, pos, p2
            pos = p2
        elif wt == 1:
            yield fn, key_start, pos, pos + 8
            pos += 8
        elif wt == 5:
            yield fn, key_start, pos, pos + 4
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wt}")
        if pos > end:
            raise _Truncated


def _encode_len(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _strip_tensor(buf, start: int, end: int) -> bytes:
    if end - start <= _KEEP_DATA_BYTES:
        return bytes(buf[start:end])
    out = bytearray()
    for fn, ks, _, ve in _fields(buf, start, end):
        if fn not in _TENSOR_DATA:
            out += buf[ks:ve]
    return bytes(out)


def _strip_graph(buf, start: int, end: int) -> bytes:
    out = bytearray()
    run = start  # the fields kept as they are since the last stripped one, copied at once
    for fn, ks, vs, ve in _fields(buf, start, end):
        if fn == _INITIALIZER and ve - vs > _KEEP_DATA_BYTES:
            out += buf[run:ks]
            t = _strip_tensor(buf, vs, ve)
            out += bytes([(_INITIALIZER << 3) | 2]) + _encode_len(len(t)) + t
            run = ve
    out += buf[run:end]
    return bytes(out)


def skim_onnx_file(path: str | Path):
    """``onnx.ModelProto`` of ``path`` with the data of large initializers left out."""
    import onnx

    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            if size == 0:
                raise ModelFormatError(f"{path}: empty file, not an ONNX model")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                buf = memoryview(mm)
                try:
                    out = bytearray()
                    for fn, ks, vs, ve in _fields(buf, 0, len(buf)):
                        if fn == _GRAPH:
                            g = _strip_graph(buf, vs, ve)
                            out += bytes([(_GRAPH << 3) | 2]) + _encode_len(len(g)) + g
                        else:
                            out += buf[ks:ve]
                finally:
                    buf.release()
    except _Truncated:
        raise ModelFormatError(f"{path}: not a valid ONNX model (the file is truncated)") \
            from None
    except ModelFormatError:
        raise  # already names the file (an empty one)
    except (ValueError, IndexError) as exc:
        raise ModelFormatError(f"{path}: not a valid ONNX model (corrupt file?): {exc}") \
            from None
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(bytes(out))
    except Exception as exc:
        raise ModelFormatError(f"{path}: not a valid ONNX model (corrupt or truncated file?): "
                               f"{exc}") from exc
    return proto
