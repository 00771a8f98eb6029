"""JSON (and dict) input: validated field by field against the newest schema."""

from __future__ import annotations

import base64
import binascii
import copy
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

from schemas.codec.base import (
    _COMPLEX,
    _EPOCH,
    _EPOCH_ORDINAL,
    _INT_MAX,
    _INT_MIN,
    _LONG_MAX,
    _LONG_MIN,
    _ONE_MS,
    Conv,
    SchemaLoadError,
    _Invalid,
)
from schemas.codec.compiled import _type_name

# --------------------------------------------------------------------------------------------
# JSON / dict validation
# --------------------------------------------------------------------------------------------


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"string {shown!r}"
    if isinstance(value, bytes | bytearray):
        return f"bytes of length {len(value)}"
    if isinstance(value, list):
        return f"array of {len(value)} items"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _bad(path: str, message: str) -> _Invalid:
    return _Invalid(f"field '{path}': {message}" if path else message)


def _compile_conv(
    node: Any,
    named: Mapping[str, Any],
    *,
    json_input: bool,
    cache: dict[str, Conv] | None = None,
) -> Conv:
    """A function (value, path) -> value for fastavro and the dataclasses, or raise _Invalid.

    ``json_input``: bytes are base64 strings and unknown record fields are ignored; otherwise
    (encode_dict) bytes are ``bytes`` and unknown fields are an error.
    """
    if cache is None:
        cache = {}
    if isinstance(node, str) and node in named:
        if node in cache:
            return cache[node]
        node = named[node]
    logical = None
    if isinstance(node, dict) and node.get("type") not in _COMPLEX:
        logical = node.get("logicalType")
        node = node["type"]
        if isinstance(node, str) and node in named:
            return _compile_conv(node, named, json_input=json_input, cache=cache)

    if isinstance(node, list):
        return _conv_union(node, named, json_input=json_input, cache=cache)
    if isinstance(node, str):
        return _conv_primitive(node, logical, json_input=json_input)

    kind = node["type"]
    if kind == "enum":
        symbols = tuple(node["symbols"])
        symbol_set = frozenset(symbols)
        listed = ", ".join(symbols)

        def conv_enum(v: Any, path: str) -> Any:
            if type(v) is str and v in symbol_set:
                return v
            if isinstance(v, str):
                raise _bad(path, f"{v!r} is not one of {listed}")
            raise _bad(path, f"expected one of {listed}, got {_describe(v)}")

        return conv_enum
    if kind == "fixed":
        size = node["size"]
        as_bytes = _conv_primitive("bytes", None, json_input=json_input)

        def conv_fixed(v: Any, path: str) -> Any:
            raw = as_bytes(v, path)
            if len(raw) != size:
                raise _bad(path, f"expected {size} bytes, got {len(raw)}")
            return raw

        return conv_fixed
    if kind == "array":
        item = _compile_conv(node["items"], named, json_input=json_input, cache=cache)

        def conv_array(v: Any, path: str) -> Any:
            if type(v) is not list:
                raise _bad(path, f"expected array, got {_describe(v)}")
            return [item(x, f"{path}[{i}]") for i, x in enumerate(v)]

        return conv_array
    if kind == "map":
        value = _compile_conv(node["values"], named, json_input=json_input, cache=cache)

        def conv_map(v: Any, path: str) -> Any:
            if type(v) is not dict:
                raise _bad(path, f"expected map (object), got {_describe(v)}")
            out = {}
            for k, x in v.items():
                if type(k) is not str:
                    raise _bad(path, f"map keys must be strings, got {_describe(k)}")
                out[k] = value(x, f"{path}[{k!r}]")
            return out

        return conv_map
    if kind in ("record", "error"):
        return _conv_record(node, named, json_input=json_input, cache=cache)
    raise SchemaLoadError(f"unsupported schema node {node!r}")


def _conv_record(
    node: dict[str, Any], named: Mapping[str, Any], *, json_input: bool, cache: dict[str, Conv]
) -> Conv:
    name = node["name"]
    short = name.rpartition(".")[2]
    slots: list[Conv] = []

    def forward(v: Any, path: str) -> Any:  # for recursive records
        return slots[0](v, path)

    cache[name] = forward
    specs: list[tuple[str, Conv, Callable[[], Any] | None]] = []
    for f in node["fields"]:
        conv = _compile_conv(f["type"], named, json_input=json_input, cache=cache)
        default: Callable[[], Any] | None = None
        if "default" in f:
            value = f["default"]
            if isinstance(value, list | dict):
                default = lambda value=value: copy.deepcopy(value)  # noqa: E731
            else:
                default = lambda value=value: value  # noqa: E731
        specs.append((f["name"], conv, default))
    known = frozenset(n for n, _, _ in specs)

    def conv_record(v: Any, path: str) -> Any:
        if type(v) is not dict:
            raise _bad(path, f"expected {short} (object), got {_describe(v)}")
        out = {}
        for fname, conv, default in specs:
            if fname in v:
                out[fname] = conv(v[fname], _join(path, fname))
            elif default is not None:
                out[fname] = default()
            else:
                raise _Invalid(f"missing required field '{_join(path, fname)}'")
        if not json_input and len(v) > len(out) - sum(1 for k in out if k not in v):
            # More keys than fields read from it (defaults fill the rest): an unknown one.
            extra = sorted(str(k) for k in v if k not in known)
            raise _Invalid(f"unknown field '{_join(path, extra[0])}' for {short}")
        return out

    slots.append(conv_record)
    cache[name] = conv_record
    return conv_record


def _conv_union(
    node: list[Any], named: Mapping[str, Any], *, json_input: bool, cache: dict[str, Conv]
) -> Conv:
    nullable = "null" in node
    branches = [b for b in node if b != "null"]
    convs = [_compile_conv(b, named, json_input=json_input, cache=cache) for b in branches]
    expected = " or ".join((["null"] if nullable else []) + [_type_name(b) for b in branches])
    if len(convs) == 1:
        only = convs[0]

        def conv_optional(v: Any, path: str) -> Any:
            if v is None:
                if nullable:
                    return None
                raise _bad(path, f"expected {_type_name(branches[0])}, got null")
            return only(v, path)

        return conv_optional

    def conv_union(v: Any, path: str) -> Any:
        if v is None and nullable:
            return None
        for conv in convs:
            try:
                return conv(v, path)
            except _Invalid:
                continue
        raise _bad(path, f"expected {expected}, got {_describe(v)}")

    return conv_union


def _conv_primitive(kind: str, logical: str | None, *, json_input: bool) -> Conv:
    if kind == "string":

        def conv_string(v: Any, path: str) -> Any:
            if type(v) is str:
                return v
            raise _bad(path, f"expected string, got {_describe(v)}")

        return conv_string
    if kind == "long" and logical == "timestamp-millis":

        def conv_timestamp(v: Any, path: str) -> Any:
            if type(v) is int:
                if _LONG_MIN <= v <= _LONG_MAX:
                    return v
                raise _bad(path, f"{v} is out of range for timestamp-millis")
            if type(v) is str:
                try:
                    moment = datetime.fromisoformat(v)
                except ValueError:
                    raise _bad(
                        path, f"{v!r} is not an ISO-8601 timestamp (e.g. 2024-05-01T12:00:00Z)"
                    ) from None
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=UTC)
                return (moment - _EPOCH) // _ONE_MS
            raise _bad(
                path,
                f"expected epoch milliseconds or an ISO-8601 timestamp, got {_describe(v)}",
            )

        return conv_timestamp
    if kind == "int" and logical == "date":

        def conv_date(v: Any, path: str) -> Any:
            if type(v) is int:
                if _INT_MIN <= v <= _INT_MAX:
                    return v
                raise _bad(path, f"{v} is out of range for date (days since 1970-01-01)")
            if type(v) is str:
                try:
                    return date.fromisoformat(v).toordinal() - _EPOCH_ORDINAL
                except ValueError:
                    raise _bad(path, f"{v!r} is not a date (YYYY-MM-DD)") from None
            raise _bad(path, f"expected a date (YYYY-MM-DD) or days, got {_describe(v)}")

        return conv_date
    if kind in ("int", "long"):
        low, high = (_INT_MIN, _INT_MAX) if kind == "int" else (_LONG_MIN, _LONG_MAX)

        def conv_integer(v: Any, path: str) -> Any:
            if type(v) is int:
                if low <= v <= high:
                    return v
                raise _bad(path, f"{v} is out of range for {kind}")
            raise _bad(path, f"expected {kind}, got {_describe(v)}")

        return conv_integer
    if kind == "boolean":

        def conv_boolean(v: Any, path: str) -> Any:
            if v is True or v is False:
                return v
            raise _bad(path, f"expected boolean, got {_describe(v)}")

        return conv_boolean
    if kind in ("float", "double"):

        def conv_float(v: Any, path: str) -> Any:
            if type(v) is float or type(v) is int:
                return float(v)
            raise _bad(path, f"expected {kind}, got {_describe(v)}")

        return conv_float
    if kind == "bytes":
        if json_input:

            def conv_base64(v: Any, path: str) -> Any:
                if type(v) is not str:
                    raise _bad(path, f"expected base64 string, got {_describe(v)}")
                try:
                    return base64.b64decode(v, validate=True)
                except (binascii.Error, ValueError):
                    raise _bad(path, f"{_describe(v)} is not valid base64") from None

            return conv_base64

        def conv_bytes(v: Any, path: str) -> Any:
            if type(v) is bytes:
                return v
            if isinstance(v, bytearray | memoryview):
                return bytes(v)
            raise _bad(path, f"expected bytes, got {_describe(v)}")

        return conv_bytes
    if kind == "null":

        def conv_null(v: Any, path: str) -> Any:
            if v is None:
                return None
            raise _bad(path, f"expected null, got {_describe(v)}")

        return conv_null
    raise SchemaLoadError(f"unsupported Avro type {kind!r}")
