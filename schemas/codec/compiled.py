"""Per-record machinery compiled once from a schema: building records from data and back."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields, is_dataclass
from typing import Any

from schemas.codec import binary
from schemas.codec.base import _BAD_ENUM, _COMPLEX, Build, Check, SchemaLoadError

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

        # The dataclass's own __init__: records are not frozen at run time (``records.record``).
        def make(d: dict[str, Any]) -> Any:
            return cls(**d)

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
# Avro's binary encoding of flat records: programs compiled once per schema (``binary.py`` runs
# them) that write a record (an instance, or a row of its field values) and read one
# --------------------------------------------------------------------------------------------

Write = Callable[[Any, bytes], bytes]
_PRIMITIVES = ("string", "bytes", "long", "int", "boolean", "double", "float", "null")


def _op(node: Any, named: Mapping[str, Any], where: int | str) -> binary.Op | None:
    """The op of a value of this type at ``where`` (its index in the row, or its field's name);
    ``None``: a type left to fastavro (arrays, records inside records, unions of more than null
    and one other type)."""
    node = _deref(node, named)
    if isinstance(node, list):
        if len(node) != 2 or "null" not in node:
            return None
        null_index = node.index("null")
        other = _op(node[1 - null_index], named, where)
        return None if other is None else binary.op("optional", where, (null_index, other))
    if isinstance(node, dict):
        kind = node.get("type")
        if kind == "enum":
            symbols = tuple(node["symbols"])
            return binary.op("enum", where, (symbols, {s: i for i, s in enumerate(symbols)}))
        if kind == "map":
            values = _op(node["values"], named, where)
            return None if values is None else binary.op("map", where, values)
        return None
    return binary.op(node, where) if node in _PRIMITIVES else None


def _compile_writer(schema: Any, named: Mapping[str, Any]) -> Write | None:
    """``write(record, header) -> header + Avro body`` for a flat record (primitives, enums,
    maps, optional fields), straight from the dataclass's attributes: a fraction of the time of
    fastavro's ``schemaless_writer`` and the dict built for it. ``None`` when the record has a
    type this writer leaves to fastavro. It trusts the dataclass's types as ``Codec.encode``
    does; whatever it raises on, the caller encodes again with fastavro, which says what is
    wrong."""
    node = _deref(schema, named)
    if not isinstance(node, dict) or node.get("type") != "record":
        return None
    names = [f["name"] for f in node["fields"]]
    program = _program(node, named, list(range(len(names))))
    if program is None:
        return None
    write = binary.writer_for(program)
    if len(names) == 1:
        only = names[0]
        return lambda record, header: write((getattr(record, only),), header)
    values = operator.attrgetter(*names)
    return lambda record, header: write(values(record), header)


def _row_program(
    schema: Any, named: Mapping[str, Any], row: Sequence[str]
) -> binary.Program | None:
    """The writer's program for a record that comes as a sequence of its field values in the
    order ``row`` names them (every field of the schema, once) instead of as an instance: the
    same bytes, without building it (a fired timer writes two or three). ``None`` as for
    ``_compile_writer``."""
    node = _deref(schema, named)
    if not isinstance(node, dict) or node.get("type") != "record":
        return None
    names = [f["name"] for f in node["fields"]]
    if sorted(row) != sorted(names):
        raise SchemaLoadError(f"a row of {node['name']} must have each of its fields once: {row}")
    return _program(node, named, [row.index(name) for name in names])


def _compile_reader(
    schema: Any, named: Mapping[str, Any], cls: type | None = None
) -> binary.Read | None:
    """``read(value, start) -> dict`` for a flat record's body, or ``None`` (fastavro reads it).
    ``schema``: the version's writing schema (its enums without the reading schema's padding).
    ``cls``: ``read`` gives its instance instead, built from the values in the schema's order
    (a flat record has no nested record to build; ``_check_class`` holds the class to the
    newest schema's fields, names and order)."""
    node = _deref(schema, named)
    if not isinstance(node, dict) or node.get("type") != "record":
        return None
    if cls is not None:
        _check_class(cls, node)
    program = _program(node, named, [f["name"] for f in node["fields"]])
    return None if program is None else binary.reader_for(program, cls)


def _program(
    record: dict[str, Any], named: Mapping[str, Any], where: Sequence[int | str]
) -> binary.Program | None:
    """The ops of the record's fields in the schema's order, each at its ``where``; ``None`` if
    a field has a type left to fastavro."""
    ops = []
    for f, at in zip(record["fields"], where, strict=True):
        op = _op(f["type"], named, at)
        if op is None:
            return None
        ops.append(op)
    return tuple(ops)
