"""Wire codec of the contract: Avro single-object encoding (and JSON input) <-> ``records.py``.

Reading a value (:meth:`Codec.decode`), in this order:

1. size: more than ``max_value_bytes`` -> ``too_large``; zero bytes (or ``None``) -> ``empty``;
2. first bytes: ``C3 01`` -> Avro single-object encoding; ``00`` -> Confluent Schema Registry
   framing (below); ``{`` (after optional whitespace) -> JSON; anything else -> ``bad_header``;
3. Avro: the 8-byte little-endian CRC-64-AVRO fingerprint after the marker selects the writer
   schema among *every* released version in ``schemas/<record>/v<N>.avsc``
   (``unknown_fingerprint`` if none; ``wrong_record`` if it is another record than the topic
   carries); the body is read with fastavro and resolved to the newest version (the reader
   schema). Truncated or corrupt bodies, trailing bytes and out-of-range enum indexes are
   ``bad_avro``, with the field that was being read in the reason;
4. JSON: the same field names, validated field by field against the newest schema
   (``bad_json`` if it does not parse, ``validation`` if it does not fit). Times are epoch
   milliseconds or ISO-8601 strings (``Z``/offset; without one, UTC), ``date`` fields
   ``YYYY-MM-DD`` or days since 1970-01-01, ``bytes`` fields base64 (standard alphabet, padded).
   Unknown fields are ignored; optional fields may be absent or null.
5. Schema Registry framing (``00``, 4-byte schema id, Avro body; ``schemas/registry.py``): the
   writer schema of the id must have been handed over with :meth:`Codec.add_registry_schema`
   (the ingest's ``SchemaResolver`` fetches it before decoding). It is checked once against our
   reader schema (``incompatible_schema`` if it cannot be resolved, ``wrong_record`` if it is
   another record); a schema identical to a released version uses that version's reader. Without
   a configured registry such a value is ``no_registry``; an id the registry does not have is
   ``unknown_schema_id``.

Every rejection is a :class:`DecodeError` with a machine-readable ``reason_code`` and a
readable ``reason`` (``str(exc)``), meant for the dead-letter topic.

Speed: the schemas are parsed once. The copies handed to fastavro have ``logicalType`` removed,
so times come out as ``int`` epoch milliseconds (and ``date`` as ``int`` days) without
datetime round trips; the Parsing Canonical Form ignores ``logicalType``, so fingerprints are
those of the ``.avsc`` files. fastavro maps a negative enum index onto the end of the symbol
list (Python indexing); the reading copies therefore append sentinel symbols to every enum, and a
decoded sentinel is reported as a corrupt index. (Negative *union* indexes are not caught that
way; they misalign the rest of the body, which then nearly always fails or leaves trailing
bytes.) :meth:`Codec.encode` trusts the types of the dataclass (mypy checks them) and leaves the
remaining checks to fastavro; :meth:`Codec.encode_dict` validates every field first.
"""

from __future__ import annotations

import base64
import binascii
import copy
import io
import json
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields, is_dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal, get_args

import fastavro
import orjson
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from schemas import records
from schemas.registry import CONFLUENT_HEADER_LEN, confluent_frame, confluent_schema_id
from schemas.resolution import resolution_problem

__all__ = [
    "REASON_CODES",
    "SOE_MAGIC",
    "Codec",
    "DecodeError",
    "EncodeError",
    "ReasonCode",
    "SchemaLoadError",
    "SchemaVersion",
]

SOE_MAGIC: Final = b"\xc3\x01"
_HEADER_LEN: Final = 10
DEFAULT_SCHEMA_DIR: Final = Path(__file__).resolve().parent

ReasonCode = Literal[
    "bad_key",
    "too_large",
    "empty",
    "bad_header",
    "unknown_fingerprint",
    "wrong_record",
    "bad_avro",
    "bad_json",
    "validation",
    "no_registry",
    "unknown_schema_id",
    "incompatible_schema",
]
REASON_CODES: Final[frozenset[str]] = frozenset(get_args(ReasonCode))

_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_ONE_MS: Final = timedelta(milliseconds=1)
_WHITESPACE: Final = b" \t\r\n"
_COMPLEX: Final = frozenset({"record", "error", "enum", "fixed", "array", "map"})
_VERSION_FILE = re.compile(r"^v([1-9][0-9]*)\.avsc$")

# Appended to the enum symbols of the reading copies: every negative or out-of-range index that
# fits a one- or two-byte varint decodes to this string instead of a wrong symbol.
_BAD_ENUM: Final = "\x00corrupt enum index\x00"
_ENUM_PADDING: Final = 8192

Conv = Callable[[Any, str], Any]
Build = Callable[[Any], Any]
Check = Callable[[Any], bool]


class DecodeError(ValueError):
    """A value or key the pipeline rejects; ``str(exc)`` is the readable reason."""

    reason_code: str
    reason: str

    def __init__(self, reason_code: ReasonCode, reason: str) -> None:
        super().__init__(reason)
        self.reason_code = reason_code
        self.reason = reason

    def __str__(self) -> str:
        return self.reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason_code, self.reason))


class EncodeError(ValueError):
    """A record that does not fit its schema (a bug on our side, or bad data in encode_dict)."""


class SchemaLoadError(ValueError):
    """The ``.avsc`` files are inconsistent, or do not match the Python records."""


class _Invalid(Exception):
    """Internal: a JSON/dict value does not fit the schema; ``args[0]`` is the full reason."""


class _Truncated(Exception):
    pass


class _Corrupt(Exception):
    pass


# --------------------------------------------------------------------------------------------
# Schema versions
# --------------------------------------------------------------------------------------------


class SchemaVersion:
    """One released version of one record schema, with its prepared fastavro copies."""

    __slots__ = (
        "canonical_form",
        "fingerprint",
        "full_name",
        "header",
        "label",
        "name",
        "path",
        "read_schema",
        "schema",
        "typed_schema",
        "version",
        "write_schema",
    )

    def __init__(self, path: Path, version: int, schema: dict[str, Any]) -> None:
        self.path = path
        self.version = version
        self.schema = schema  # as in the file
        self.typed_schema = _parse(copy.deepcopy(schema))
        self.full_name: str = self.typed_schema["name"]
        self.name = self.full_name.rpartition(".")[2]
        self.label = f"{self.name} v{version}"
        self.canonical_form: str = to_parsing_canonical_form(schema)
        self.fingerprint = bytes.fromhex(_fastavro_fingerprint(self.canonical_form, "CRC-64-AVRO"))
        self.header = SOE_MAGIC + self.fingerprint
        # fastavro copies: no logical types (ints in and out); the reading one with padded enums.
        self.write_schema = _parse(_strip_logical_types(schema))
        self.read_schema = _parse(_strip_logical_types(schema))
        _pad_enums(self.read_schema)

    def __repr__(self) -> str:
        return f"<SchemaVersion {self.name} v{self.version} {self.fingerprint.hex()}>"


def _parse(schema: Any) -> dict[str, Any]:
    parsed = fastavro.parse_schema(schema)
    if not isinstance(parsed, dict):
        raise SchemaLoadError("the top-level schema must be a record")
    return parsed


def _strip_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical_types(v) for v in node]
    return node


def _pad_enums(parsed: dict[str, Any]) -> None:
    seen: set[int] = set()

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item)
        elif isinstance(node, dict) and id(node) not in seen:
            seen.add(id(node))
            if node.get("type") == "enum":
                node["symbols"] = [*node["symbols"], *([_BAD_ENUM] * _ENUM_PADDING)]
            for key, value in node.items():
                if key != "symbols":
                    visit(value)

    visit(parsed)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _default_record_classes() -> dict[str, type]:
    classes = (
        records.PageViewed,
        records.CartChanged,
        records.OrderItem,
        records.OrderChanged,
        records.ShipmentChanged,
        records.FeedbackGiven,
        records.MessageEngagement,
        records.CustomerChanged,
        records.Trigger,
        records.DeadLetter,
        records.Decision,
        records.JourneyEvent,
        records.CustomerSnapshot,
    )
    return {f"journey.{cls.__name__}": cls for cls in classes}


# --------------------------------------------------------------------------------------------
# Per-record machinery compiled once from a schema
# --------------------------------------------------------------------------------------------


def _named(parsed: dict[str, Any]) -> dict[str, Any]:
    named: dict[str, Any] = parsed.get("__named_schemas", {})
    return named


def _deref(node: Any, named: Mapping[str, Any]) -> Any:
    """Resolve named references and unwrap ``{"type": "long", ...}`` to the bare type."""
    while True:
        if isinstance(node, str) and node in named:
            node = named[node]
        elif isinstance(node, dict) and node.get("type") not in _COMPLEX:
            node = node["type"]
        else:
            return node


def _type_name(node: Any) -> str:
    if isinstance(node, str):
        return node.rpartition(".")[2]
    if isinstance(node, list):
        return " or ".join(_type_name(b) for b in node)
    kind = node.get("type")
    if kind in ("record", "error", "enum", "fixed"):
        return str(node["name"]).rpartition(".")[2]
    if kind == "array":
        return "array"
    if kind == "map":
        return "map"
    return _type_name(kind)


def _class_field_names(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


def _check_class(cls: type, record: dict[str, Any]) -> None:
    schema_fields = [f["name"] for f in record["fields"]]
    if not is_dataclass(cls):
        raise SchemaLoadError(f"{cls.__qualname__} is not a dataclass")
    class_fields = _class_field_names(cls)
    if class_fields != schema_fields:
        raise SchemaLoadError(
            f"{cls.__qualname__} has fields {class_fields}, but the newest schema of "
            f"{record['name']} has {schema_fields}"
        )


def _constructor(cls: type) -> Build:
    """dict with every field -> instance, bypassing the dataclass ``__init__``.

    Setting the slots through their descriptors takes half the time of the generated frozen
    ``__init__`` (which goes through ``object.__setattr__``). Falls back to ``cls(**d)`` for
    classes with ``__post_init__`` or without slots.
    """
    names = _class_field_names(cls)
    descriptors: list[Any] = [cls.__dict__.get(name) for name in names]
    if hasattr(cls, "__post_init__") or not all(
        type(d).__name__ == "member_descriptor" for d in descriptors
    ):
        return lambda d: cls(**d)
    setters = [(d.__set__, name) for d, name in zip(descriptors, names, strict=True)]
    new = object.__new__

    def construct(d: dict[str, Any]) -> Any:
        obj: Any = new(cls)
        for setter, name in setters:
            setter(obj, d[name])
        return obj

    return construct


def _compile_build(
    node: Any, named: Mapping[str, Any], classes: Mapping[str, type]
) -> Build | None:
    """fastavro/JSON output (dicts) -> dataclass instances; ``None`` means "keep as is"."""
    node = _deref(node, named)
    if isinstance(node, list):
        branches = [(b, _compile_build(b, named, classes)) for b in node if b != "null"]
        built = [b for _, b in branches if b is not None]
        if not built:
            return None
        if len(branches) > 1:
            raise SchemaLoadError("unions of several records, arrays or maps are not supported")
        inner = built[0]
        return lambda v: None if v is None else inner(v)
    if not isinstance(node, dict):
        return None
    kind = node.get("type")
    if kind in ("record", "error"):
        name = node["name"]
        cls = classes.get(name)
        if cls is None:
            raise SchemaLoadError(f"no Python class for the record {name}")
        _check_class(cls, node)
        subs = [
            (f["name"], sub)
            for f in node["fields"]
            if (sub := _compile_build(f["type"], named, classes)) is not None
        ]
        make = _constructor(cls)
        if not subs:
            return make

        def build_record(d: dict[str, Any]) -> Any:
            for fname, sub in subs:
                d[fname] = sub(d[fname])
            return make(d)

        return build_record
    if kind == "array":
        item = _compile_build(node["items"], named, classes)
        if item is None:
            return None
        return lambda v: [item(x) for x in v]
    if kind == "map":
        value = _compile_build(node["values"], named, classes)
        if value is None:
            return None
        return lambda v: {k: value(x) for k, x in v.items()}
    return None


def _compile_unbuild(node: Any, named: Mapping[str, Any]) -> Build | None:
    """Dataclass instances -> dicts for fastavro; ``None`` means "keep as is"."""
    node = _deref(node, named)
    if isinstance(node, list):
        subs = [s for b in node if b != "null" and (s := _compile_unbuild(b, named)) is not None]
        if not subs:
            return None
        inner = subs[0]
        return lambda v: None if v is None else inner(v)
    if not isinstance(node, dict):
        return None
    kind = node.get("type")
    if kind in ("record", "error"):
        names = tuple(f["name"] for f in node["fields"])
        getter = operator.attrgetter(*names)
        subs2 = [
            (f["name"], sub)
            for f in node["fields"]
            if (sub := _compile_unbuild(f["type"], named)) is not None
        ]
        if len(names) == 1:
            only = names[0]

            def one(obj: Any) -> dict[str, Any]:
                return {only: getattr(obj, only)}

            base: Build = one
        else:

            def many(obj: Any) -> dict[str, Any]:
                return dict(zip(names, getter(obj), strict=True))

            base = many
        if not subs2:
            return base

        def unbuild_record(obj: Any) -> dict[str, Any]:
            d: dict[str, Any] = base(obj)
            for fname, sub in subs2:
                d[fname] = sub(d[fname])
            return d

        return unbuild_record
    if kind == "array":
        item = _compile_unbuild(node["items"], named)
        if item is None:
            return None
        return lambda v: [item(x) for x in v]
    if kind == "map":
        value = _compile_unbuild(node["values"], named)
        if value is None:
            return None
        return lambda v: {k: value(x) for k, x in v.items()}
    return None


def _has_sentinel(value: Any) -> bool:
    if isinstance(value, str):
        return value == _BAD_ENUM
    if isinstance(value, dict):
        return any(_has_sentinel(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_sentinel(v) for v in value)
    return False


def _compile_enum_check(node: Any, named: Mapping[str, Any]) -> Check | None:
    """True if a decoded value holds no sentinel enum symbol; ``None``: no enums inside."""
    node = _deref(node, named)
    if isinstance(node, list):
        branches = [b for b in node if b != "null"]
        subs = [s for b in branches if (s := _compile_enum_check(b, named)) is not None]
        if not subs:
            return None
        if len(branches) == 1:
            inner = subs[0]
            return lambda v: v is None or inner(v)
        return lambda v: not _has_sentinel(v)  # which branch was read is not known here
    if not isinstance(node, dict):
        return None
    kind = node.get("type")
    if kind == "enum":
        return lambda v: v != _BAD_ENUM
    if kind in ("record", "error"):
        subs2 = [
            (f["name"], sub)
            for f in node["fields"]
            if (sub := _compile_enum_check(f["type"], named)) is not None
        ]
        if not subs2:
            return None

        if len(subs2) == 1:
            ((only_name, only_sub),) = subs2
            return lambda d: only_sub(d[only_name])

        def check_record(d: dict[str, Any]) -> bool:
            for fname, sub in subs2:  # noqa: SIM110 - a loop is faster than all(generator)
                if not sub(d[fname]):
                    return False
            return True

        return check_record
    if kind == "array":
        item = _compile_enum_check(node["items"], named)
        if item is None:
            return None
        return lambda v: all(item(x) for x in v)
    if kind == "map":
        value = _compile_enum_check(node["values"], named)
        if value is None:
            return None
        return lambda v: all(value(x) for x in v.values())
    return None


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


# --------------------------------------------------------------------------------------------
# Diagnosis of Avro bodies fastavro could not read (slow path, errors only)
# --------------------------------------------------------------------------------------------


class _Walker:
    """Reads an Avro body by hand to say where and why it is broken."""

    def __init__(self, data: bytes, named: Mapping[str, Any]) -> None:
        self.data = data
        self.pos = 0
        self.named = named

    def take(self, n: int, path: str) -> bytes:
        if n > len(self.data) - self.pos:
            raise _Truncated(path)
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def varint(self, path: str) -> int:
        result = shift = 0
        while True:
            if self.pos >= len(self.data):
                raise _Truncated(path)
            byte = self.data[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift >= 70:
                raise _Corrupt(path, "variable-length integer longer than 10 bytes")
        if result >> 64:
            raise _Corrupt(path, "variable-length integer overflows 64 bits")
        return (result >> 1) ^ -(result & 1)

    def length(self, path: str) -> int:
        n = self.varint(path)
        if n < 0:
            raise _Corrupt(path, f"negative length {n}")
        return n

    def walk(self, node: Any, path: str) -> None:
        if isinstance(node, str):
            if node in self.named:
                self.walk(self.named[node], path)
            else:
                self.primitive(node, path)
            return
        if isinstance(node, list):
            index = self.varint(path)
            if not 0 <= index < len(node):
                raise _Corrupt(
                    path, f"union branch index {index} is out of range (0..{len(node) - 1})"
                )
            self.walk(node[index], path)
            return
        kind = node["type"]
        if kind in ("record", "error"):
            for f in node["fields"]:
                self.walk(f["type"], _join(path, f["name"]))
        elif kind == "enum":
            symbols = node["symbols"]
            index = self.varint(path)
            if not 0 <= index < len(symbols):
                raise _Corrupt(
                    path,
                    f"enum index {index} is not a symbol of {_type_name(node)} "
                    f"({', '.join(symbols)})",
                )
        elif kind in ("array", "map"):
            count = 0
            while True:
                block = self.varint(path)
                if block == 0:
                    break
                if block < 0:
                    block = -block
                    self.length(path)  # byte size of the block
                for _ in range(block):
                    if kind == "array":
                        self.walk(node["items"], f"{path}[{count}]")
                    else:
                        key = self.string(f"{path}[{count}] (key)")
                        self.walk(node["values"], f"{path}[{key!r}]")
                    count += 1
        elif kind == "fixed":
            self.take(node["size"], path)
        else:
            self.walk(kind, path)

    def string(self, path: str) -> str:
        raw = self.take(self.length(path), path)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Corrupt(
                path, f"string is not valid UTF-8 ({exc.reason} at {exc.start})"
            ) from None

    def primitive(self, kind: str, path: str) -> None:
        if kind == "null":
            return
        if kind == "boolean":
            flag = self.take(1, path)[0]
            if flag > 1:
                raise _Corrupt(path, f"boolean byte 0x{flag:02x} is neither 0 nor 1")
        elif kind == "int":
            value = self.varint(path)
            if not _INT_MIN <= value <= _INT_MAX:
                raise _Corrupt(path, f"{value} is out of range for int")
        elif kind == "long":
            self.varint(path)
        elif kind == "float":
            self.take(4, path)
        elif kind == "double":
            self.take(8, path)
        elif kind == "bytes":
            self.take(self.length(path), path)
        elif kind == "string":
            self.string(path)
        else:
            raise _Corrupt(path, f"unknown type {kind!r}")


# --------------------------------------------------------------------------------------------
# The codec
# --------------------------------------------------------------------------------------------


class _Record:
    """Everything needed for one record (its newest schema version)."""

    __slots__ = (
        "build",
        "cls",
        "full_name",
        "json_conv",
        "name",
        "native_convs",
        "newest",
        "to_dict",
        "versions",
    )

    def __init__(self, versions: list[SchemaVersion], classes: Mapping[str, type]) -> None:
        self.versions = {v.version: v for v in versions}
        self.newest: SchemaVersion = max(versions, key=lambda v: v.version)
        self.full_name: str = self.newest.full_name
        self.name: str = self.newest.name
        cls = classes.get(self.full_name)
        if cls is None:
            raise SchemaLoadError(f"no Python class for the record {self.full_name}")
        self.cls = cls
        schema = self.newest.write_schema
        named = _named(schema)
        build = _compile_build(schema, named, classes)
        unbuild = _compile_unbuild(schema, named)
        assert build is not None and unbuild is not None  # records always build
        self.build: Build = build
        self.to_dict: Build = unbuild
        typed = self.newest.typed_schema
        self.json_conv: Conv = _compile_conv(typed, _named(typed), json_input=True)
        self.native_convs: dict[int, Conv] = {}

    def native_conv(self, version: SchemaVersion) -> Conv:
        conv = self.native_convs.get(version.version)
        if conv is None:
            typed = version.typed_schema
            conv = _compile_conv(typed, _named(typed), json_input=False)
            self.native_convs[version.version] = conv
        return conv


class _Reader:
    """Decoding plan for one writer fingerprint."""

    __slots__ = ("check", "reader_schema", "record", "version", "writer_schema")

    def __init__(self, record: _Record, version: SchemaVersion) -> None:
        self.record = record
        self.version = version
        self.writer_schema = version.read_schema
        newest = record.newest
        # Same version: no resolution, and sentinel enum symbols must be looked for. Older
        # version: resolve to the newest; a sentinel then fails resolution inside fastavro.
        self.reader_schema = None if version is newest else newest.write_schema
        self.check = (
            _compile_enum_check(version.write_schema, _named(version.write_schema))
            if version is newest
            else None
        )


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


class Codec:
    """The contract's codec; build it once with :meth:`Codec.load` and share it."""

    def __init__(
        self,
        versions: Iterable[SchemaVersion],
        *,
        max_value_bytes: int = 1_048_576,
        record_classes: Mapping[str, type] | None = None,
    ) -> None:
        classes = _default_record_classes()
        for name, cls in (record_classes or {}).items():
            classes[name if "." in name else f"journey.{name}"] = cls
        by_name: dict[str, list[SchemaVersion]] = {}
        for version in versions:
            by_name.setdefault(version.full_name, []).append(version)
        self.max_value_bytes = max_value_bytes
        self._records: dict[str, _Record] = {}
        self._by_class: dict[type, _Record] = {}
        self._by_fingerprint: dict[bytes, _Reader] = {}
        self._aliases: dict[str, _Record] = {}
        # Schema Registry: readers by schema id, our records' output ids (registry framing out).
        self.registry_url: str | None = None
        self._by_schema_id: dict[int, _Reader | DecodeError] = {}
        self._output_ids: dict[str, int] = {}
        for full_name, group in sorted(by_name.items()):
            record = _Record(group, classes)
            self._records[full_name] = record
            if record.cls in self._by_class:
                raise SchemaLoadError(f"{record.cls.__qualname__} is used for two records")
            self._by_class[record.cls] = record
            for alias in (full_name, record.name, _snake(record.name)):
                self._aliases[alias] = record
            for version in group:
                other = self._by_fingerprint.get(version.fingerprint)
                if other is not None:
                    raise SchemaLoadError(
                        f"{version.path} has the same fingerprint as {other.version.path} "
                        "(identical Parsing Canonical Form: not a new version)"
                    )
                self._by_fingerprint[version.fingerprint] = _Reader(record, version)

    @classmethod
    def load(
        cls,
        schema_dir: Path | None = None,
        max_value_bytes: int = 1_048_576,
        record_classes: Mapping[str, type] | None = None,
    ) -> Codec:
        """Load every ``<schema_dir>/<record>/v<N>.avsc``; the highest N is the reader schema.

        ``record_classes`` (full or short record name -> dataclass) overrides the classes of
        ``records.py``, e.g. for a test of a schema version the records do not have yet.
        """
        directory = Path(schema_dir) if schema_dir is not None else DEFAULT_SCHEMA_DIR
        versions: list[SchemaVersion] = []
        for path in sorted(directory.glob("*/v*.avsc")):
            match = _VERSION_FILE.match(path.name)
            if match is None:
                continue
            try:
                schema = json.loads(path.read_text(encoding="utf-8"))
                version = SchemaVersion(path, int(match.group(1)), schema)
            except (ValueError, KeyError, TypeError) as exc:
                raise SchemaLoadError(f"{path}: {exc}") from exc
            if version.typed_schema.get("type") != "record":
                raise SchemaLoadError(f"{path}: the top-level type must be a record")
            if _snake(version.name) != path.parent.name:
                raise SchemaLoadError(
                    f"{path}: holds {version.name}, expected directory {_snake(version.name)}/"
                )
            versions.append(version)
        if not versions:
            raise SchemaLoadError(f"no schemas found under {directory}/*/v*.avsc")
        return cls(versions, max_value_bytes=max_value_bytes, record_classes=record_classes)

    # ---------------------------------------------------------------------------- lookups

    def _record(self, record: type | str) -> _Record:
        found = self._aliases.get(record) if isinstance(record, str) else self._by_class.get(record)
        if found is None:
            shown = record if isinstance(record, str) else record.__qualname__
            raise KeyError(f"{shown} is not a record of the journey schemas")
        return found

    def record_names(self) -> list[str]:
        """Short names of all top-level records (``OrderChanged``, ...)."""
        return [r.name for r in self._records.values()]

    def record_class(self, record: type | str) -> type:
        return self._record(record).cls

    def record_name(self, record: type | str) -> str:
        return self._record(record).name

    def versions(self, record: type | str) -> dict[int, SchemaVersion]:
        return dict(self._record(record).versions)

    def schema_for(self, record: type | str, version: int | None = None) -> dict[str, Any]:
        """The schema as written in its ``.avsc`` file (a copy); newest version by default."""
        return copy.deepcopy(self._version(record, version).schema)

    def fingerprint(self, record: type | str, version: int | None = None) -> bytes:
        """The 8-byte CRC-64-AVRO fingerprint as it appears on the wire (little-endian)."""
        return self._version(record, version).fingerprint

    def _version(self, record: type | str, version: int | None) -> SchemaVersion:
        rec = self._record(record)
        if version is None:
            return rec.newest
        try:
            return rec.versions[version]
        except KeyError:
            raise KeyError(f"{rec.name} has no version {version}") from None

    # ---------------------------------------------------------------------------- encoding

    def encode(self, record: Any) -> bytes:
        """A ``records.py`` instance -> single-object encoding with the newest schema."""
        rec = self._by_class.get(type(record))
        if rec is None:
            raise TypeError(f"{type(record).__qualname__} is not a record of the journey schemas")
        datum = rec.to_dict(record)
        version = rec.newest
        schema_id = self._output_ids.get(rec.full_name)
        header = version.header if schema_id is None else confluent_frame(schema_id, b"")
        out = io.BytesIO(header)
        out.seek(len(header))
        try:
            fastavro.schemaless_writer(out, version.write_schema, datum)
        except Exception as exc:
            raise self._encode_failure(rec, version, datum, exc) from None
        return out.getvalue()

    def encode_dict(
        self, record_name: str, data: Mapping[str, Any], version: int | None = None
    ) -> bytes:
        """A dict of Python values -> single-object encoding, validated field by field.

        Times may be epoch ms or ISO-8601 strings, ``bytes`` fields ``bytes``; unknown fields
        are an error. ``version`` writes with an older released version (for tests and replays).
        """
        rec = self._record(record_name)
        schema_version = self._version(record_name, version)
        try:
            datum = rec.native_conv(schema_version)(dict(data), "")
        except _Invalid as exc:
            raise EncodeError(f"{rec.name} v{schema_version.version}: {exc.args[0]}") from None
        out = io.BytesIO(schema_version.header)
        out.seek(_HEADER_LEN)
        try:
            fastavro.schemaless_writer(out, schema_version.write_schema, datum)
        except Exception as exc:
            raise self._encode_failure(rec, schema_version, datum, exc) from None
        return out.getvalue()

    def _encode_failure(
        self, rec: _Record, version: SchemaVersion, datum: Any, exc: Exception
    ) -> EncodeError:
        try:
            rec.native_conv(version)(datum, "")
        except _Invalid as invalid:
            return EncodeError(f"{rec.name} v{version.version}: {invalid.args[0]}")
        return EncodeError(f"{rec.name} v{version.version}: {type(exc).__name__}: {exc}")

    def to_json(self, record: Any) -> bytes:
        """The record as JSON in the accepted input form (times as epoch ms, bytes base64)."""
        if type(record) not in self._by_class:
            raise TypeError(f"{type(record).__qualname__} is not a record of the journey schemas")
        return orjson.dumps(record, default=_json_default)

    # ---------------------------------------------------------------------------- decoding

    @staticmethod
    def decode_key(key: bytes | None) -> str:
        """The message key (customer id): non-empty UTF-8, else ``DecodeError('bad_key')``."""
        if key is None:
            raise DecodeError("bad_key", "key is missing (null)")
        if not key:
            raise DecodeError("bad_key", "key is empty")
        try:
            return key.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(
                "bad_key",
                f"key is not valid UTF-8: byte 0x{key[exc.start]:02x} at position {exc.start}",
            ) from None

    def decode(self, value: bytes | None, expected: type | None = None) -> Any:
        """Avro single-object encoding or JSON -> record instance, or raise DecodeError.

        ``expected`` is the record class the topic carries; with ``None``, Avro is decoded as
        the record of its fingerprint and JSON is rejected (no record to validate it against).
        """
        if value is None:
            raise DecodeError("empty", "value is missing (null)")
        size = len(value)
        if size > self.max_value_bytes:
            raise DecodeError(
                "too_large",
                f"value is {size} bytes, the limit is {self.max_value_bytes} "
                "(JOURNEY_MAX_VALUE_BYTES)",
            )
        if size == 0:
            raise DecodeError("empty", "value is empty (0 bytes)")
        if value.startswith(SOE_MAGIC):
            return self._decode_avro(value, expected)
        first = value[0]
        if first == 0x00:
            return self._decode_registry(value, expected)
        if first == 0x7B or (first in _WHITESPACE and value.lstrip(_WHITESPACE)[:1] == b"{"):
            return self._decode_json(value, expected)
        shown = f"0x{first:02x}" + (f" 0x{value[1]:02x}" if first == 0xC3 and size > 1 else "")
        raise DecodeError(
            "bad_header",
            f"value starts with {shown}: neither Avro single-object encoding (C3 01) nor JSON",
        )

    def _decode_avro(self, value: bytes, expected: type | None) -> Any:
        size = len(value)
        if size < _HEADER_LEN:
            raise DecodeError(
                "bad_header",
                f"value is only {size} bytes: the single-object encoding header needs "
                f"{_HEADER_LEN} (C3 01 and an 8-byte schema fingerprint)",
            )
        reader = self._by_fingerprint.get(value[2:_HEADER_LEN])
        if reader is None:
            topic = f" ({self._expected_record(expected).name} expected)" if expected else ""
            raise DecodeError(
                "unknown_fingerprint",
                f"unknown schema fingerprint {value[2:_HEADER_LEN].hex()}{topic}: not a released "
                "version of any journey schema",
            )
        record = reader.record
        if expected is not None and record.cls is not expected:
            raise DecodeError(
                "wrong_record",
                f"value is a {record.name} (v{reader.version.version}), but this topic carries "
                f"{self._expected_record(expected).name}",
            )
        return self._read_body(reader, value, _HEADER_LEN)

    def _read_body(self, reader: _Reader, value: bytes, start: int) -> Any:
        stream = io.BytesIO(value)
        stream.seek(start)
        try:
            datum = fastavro.schemaless_reader(stream, reader.writer_schema, reader.reader_schema)
        except Exception as exc:  # corrupt input makes fastavro raise almost anything
            raise self._avro_failure(reader, value, exc, start) from None
        if stream.tell() != len(value) or (reader.check is not None and not reader.check(datum)):
            raise self._avro_failure(reader, value, None, start)
        return reader.record.build(datum)

    # ---------------------------------------------------------------------- schema registry

    def knows_schema_id(self, schema_id: int) -> bool:
        return schema_id in self._by_schema_id

    def add_registry_schema(
        self, schema_id: int, schema_text: str, schema_type: str = "AVRO"
    ) -> None:
        """The registry's schema of ``schema_id``: prepare its reader (or the reason it has none).

        A schema whose Parsing Canonical Form is one of our released versions reads exactly like
        it. Any other one must be a version of one of our records that resolves to the newest
        (checked here once, with the field that breaks it in the reason).
        """
        try:
            reader = self._registry_reader(schema_id, schema_text, schema_type)
        except Exception as exc:  # what a registry serves is input: it must never crash ingest
            reader = DecodeError(
                "incompatible_schema",
                f"schema id {schema_id} of the registry is not a usable Avro record schema: "
                f"{type(exc).__name__}: {exc}",
            )
        self._by_schema_id[schema_id] = reader

    def _registry_reader(
        self, schema_id: int, text: str, schema_type: str
    ) -> _Reader | DecodeError:
        where = f"schema id {schema_id} of the registry"
        if schema_type != "AVRO":
            return DecodeError("incompatible_schema", f"{where} is {schema_type}, not Avro")
        schema = json.loads(text)
        version = SchemaVersion(Path(f"registry-id-{schema_id}"), 0, schema)
        fingerprint = _fastavro_fingerprint(version.canonical_form, "CRC-64-AVRO")
        ours = self._by_fingerprint.get(bytes.fromhex(fingerprint))
        if ours is not None:
            return ours
        record = self._aliases.get(version.name)
        if record is None:
            return DecodeError(
                "wrong_record", f"{where} is a record {version.full_name}, not a journey record"
            )
        problem = resolution_problem(schema, record.newest.schema)
        if problem is not None:
            return DecodeError(
                "incompatible_schema",
                f"{where} ({version.full_name}) cannot be read as {record.name} "
                f"v{record.newest.version}: {problem}",
            )
        if version.full_name != record.full_name:
            # Another namespace (the resolution check matched the short name): read it under
            # ours, so that fastavro's name check during resolution passes.
            schema = {
                **schema,
                "name": record.name,
                "namespace": record.full_name.rpartition(".")[0],
            }
            version = SchemaVersion(Path(f"registry-id-{schema_id}"), 0, schema)
        version.label = f"{record.name} (registry schema id {schema_id})"
        return _Reader(record, version)

    def _decode_registry(self, value: bytes, expected: type | None) -> Any:
        schema_id = confluent_schema_id(value)
        if schema_id is None:
            raise DecodeError(
                "bad_header",
                f"value is only {len(value)} bytes and starts with 0x00: the Schema Registry "
                "framing needs 5 (0x00 and a 4-byte schema id)",
            )
        reader = self._by_schema_id.get(schema_id)
        if reader is None:
            if self.registry_url is None:
                raise DecodeError(
                    "no_registry",
                    f"value starts with 0x00: Confluent Schema Registry framing (schema id "
                    f"{schema_id}), but no schema registry is configured; set "
                    "JOURNEY_SCHEMA_REGISTRY_URL, or produce the Avro single-object encoding "
                    "or JSON (docs/producing.md)",
                )
            raise DecodeError(
                "unknown_schema_id",
                f"schema id {schema_id} is not in the schema registry at {self.registry_url}",
            )
        if isinstance(reader, DecodeError):
            raise reader
        if expected is not None and reader.record.cls is not expected:
            raise DecodeError(
                "wrong_record",
                f"value is a {reader.record.name} (registry schema id {schema_id}), but this "
                f"topic carries {self._expected_record(expected).name}",
            )
        return self._read_body(reader, value, CONFLUENT_HEADER_LEN)

    def use_output_ids(self, ids: Mapping[str, int]) -> None:
        """Write these records (short or full name -> registry id of their newest schema) in the
        registry framing from now on; the codec also reads those ids without asking."""
        for name, schema_id in ids.items():
            record = self._record(name)
            self._output_ids[record.full_name] = schema_id
            self._by_schema_id[schema_id] = self._by_fingerprint[record.newest.fingerprint]

    def _expected_record(self, expected: type) -> _Record:
        record = self._by_class.get(expected)
        if record is None:
            raise TypeError(f"{expected.__qualname__} is not a record of the journey schemas")
        return record

    def _avro_failure(
        self, reader: _Reader, value: bytes, exc: Exception | None, start: int = _HEADER_LEN
    ) -> DecodeError:
        version = reader.version
        label = version.label
        body = value[start:]
        walker = _Walker(body, _named(version.write_schema))
        try:
            walker.walk(version.write_schema, "")
        except _Truncated as truncated:
            return DecodeError(
                "bad_avro",
                f"truncated Avro body for {label}: the data ends inside field "
                f"'{truncated.args[0]}' ({len(body)} bytes of body)",
            )
        except _Corrupt as corrupt:
            path, message = corrupt.args
            return DecodeError(
                "bad_avro", f"corrupt Avro body for {label}: field '{path}': {message}"
            )
        if walker.pos != len(body):
            return DecodeError(
                "bad_avro",
                f"{_plural(len(body) - walker.pos, 'trailing byte')} after the {label} record "
                f"(the record ends after {walker.pos} of {len(body)} body bytes)",
            )
        newest = reader.record.newest.version
        if exc is not None and version.version != newest:
            return DecodeError(
                "bad_avro", f"cannot resolve {label} to v{newest}: {type(exc).__name__}: {exc}"
            )
        detail = f"{type(exc).__name__}: {exc}" if exc is not None else "unreadable"
        return DecodeError("bad_avro", f"corrupt Avro body for {label}: {detail}")

    def _decode_json(self, value: bytes, expected: type | None) -> Any:
        if expected is None:
            raise DecodeError(
                "bad_json",
                "JSON value where only Avro is accepted (no expected record to validate against)",
            )
        record = self._expected_record(expected)
        try:
            data = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise DecodeError("bad_json", f"not valid JSON: {exc}") from None
        if type(data) is not dict:
            raise DecodeError("bad_json", f"JSON value must be an object, got {_describe(data)}")
        try:
            datum = record.json_conv(data, "")
        except _Invalid as exc:
            raise DecodeError("validation", str(exc.args[0])) from None
        return record.build(datum)
