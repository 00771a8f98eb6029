"""Can data written with one Avro schema be read with another? (Avro schema resolution.)

Used for writer schemas fetched from a Schema Registry: before the first value of a new schema
id is decoded, its schema is checked against our reader schema, so an incompatible producer gets
one clear dead-letter reason (``incompatible_schema``, with the field) instead of a decoding error
per value. The rules are the Avro specification's "Schema Resolution", with the strictness of a
registry's BACKWARD check: an enum symbol the reader lacks is incompatible unless the reader enum
has a default, and every branch of a writer union must resolve. Named types match on the
unqualified name (or an alias), as the Java implementation does, so a producer may use its own
namespace.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["resolution_problem"]

_PROMOTIONS: dict[str, frozenset[str]] = {
    "int": frozenset({"int", "long", "float", "double"}),
    "long": frozenset({"long", "float", "double"}),
    "float": frozenset({"float", "double"}),
    "double": frozenset({"double"}),
    "string": frozenset({"string", "bytes"}),
    "bytes": frozenset({"bytes", "string"}),
    "boolean": frozenset({"boolean"}),
    "null": frozenset({"null"}),
}
_NAMED = frozenset({"record", "error", "enum", "fixed"})


def resolution_problem(writer: Any, reader: Any) -> str | None:
    """``None`` when every value of ``writer`` can be read as ``reader``, else why not.

    Both are schemas as JSON (``dict``/``list``/``str``), as in an ``.avsc`` file or a registry.
    """
    return _Resolver().problem(writer, reader, "")


def _short(name: str) -> str:
    return name.rpartition(".")[2]


class _Resolver:
    def __init__(self) -> None:
        self.writer_named: dict[str, Any] = {}
        self.reader_named: dict[str, Any] = {}
        self.seen: set[tuple[str, str]] = set()  # recursive records: a pair checked once

    def problem(self, writer: Any, reader: Any, path: str) -> str | None:
        writer = self._deref(writer, self.writer_named)
        reader = self._deref(reader, self.reader_named)
        w_type, r_type = _kind(writer), _kind(reader)
        where = f"field '{path}'" if path else "the record"
        if w_type == "union":
            for branch in writer:
                found = self.problem(branch, reader, path)
                if found is not None:
                    return found
            return None
        if r_type == "union":
            for branch in reader:
                if self._matches(writer, self._deref(branch, self.reader_named)):
                    return self.problem(writer, branch, path)
            return f"{where}: the writer's {_describe(writer)} is in none of the reader's branches"
        if w_type in _PROMOTIONS:
            if r_type not in _PROMOTIONS[w_type]:
                return f"{where}: the writer's {w_type} cannot be read as {_describe(reader)}"
            return None
        if w_type != r_type and not (w_type in ("record", "error") and r_type in ("record",)):
            return (
                f"{where}: the writer's {_describe(writer)} cannot be read as {_describe(reader)}"
            )
        if w_type in _NAMED and not _names_match(writer, reader):
            return (
                f"{where}: the writer's {w_type} {writer.get('name')} is not the reader's "
                f"{reader.get('name')} (nor one of its aliases)"
            )
        if w_type == "array":
            return self.problem(writer["items"], reader["items"], f"{path}[]")
        if w_type == "map":
            return self.problem(writer["values"], reader["values"], f"{path}{{}}")
        if w_type == "fixed":
            if writer.get("size") != reader.get("size"):
                return f"{where}: fixed size {writer.get('size')} is not {reader.get('size')}"
            return None
        if w_type == "enum":
            missing = [s for s in writer.get("symbols", []) if s not in reader.get("symbols", [])]
            if missing and "default" not in reader:
                return (
                    f"{where}: the writer's enum {writer.get('name')} has symbols the reader "
                    f"does not know and no default covers: {', '.join(missing)}"
                )
            return None
        return self._record(writer, reader, path)

    def _record(
        self, writer: Mapping[str, Any], reader: Mapping[str, Any], path: str
    ) -> str | None:
        pair = (str(writer.get("name")), str(reader.get("name")))
        if pair in self.seen:
            return None
        self.seen.add(pair)
        written: dict[str, Any] = {}
        for field in writer.get("fields", []):
            written[field["name"]] = field
        for field in reader.get("fields", []):
            names = [field["name"], *field.get("aliases", [])]
            source = next((written[n] for n in names if n in written), None)
            child = f"{path}.{field['name']}" if path else field["name"]
            if source is None:
                if "default" not in field:
                    return (
                        f"field '{child}': the reader needs it, the writer does not have it and "
                        "the reader has no default"
                    )
                continue
            found = self.problem(source["type"], field["type"], child)
            if found is not None:
                return found
        return None

    def _matches(self, writer: Any, reader: Any) -> bool:
        """The first reader union branch a writer type resolves to (the spec's rule)."""
        w_type, r_type = _kind(writer), _kind(reader)
        if w_type in _NAMED:
            return w_type == r_type and _names_match(writer, reader)
        if w_type in _PROMOTIONS:
            return r_type in _PROMOTIONS[w_type]
        return w_type == r_type

    def _deref(self, node: Any, named: dict[str, Any]) -> Any:
        """A primitive as its name, a named reference as its definition (registering new ones)."""
        if isinstance(node, str):
            if node in _PROMOTIONS:
                return node
            return named.get(node) or named.get(_short(node)) or {"type": node, "name": node}
        if isinstance(node, dict):
            kind = node.get("type")
            if kind in _PROMOTIONS:  # e.g. {"type": "long", "logicalType": "timestamp-millis"}
                return kind
            if kind in _NAMED and "name" in node:
                named.setdefault(node["name"], node)
                named.setdefault(_short(node["name"]), node)
        return node


def _kind(node: Any) -> str:
    if isinstance(node, list):
        return "union"
    if isinstance(node, str):
        return node
    return str(node.get("type"))


def _names_match(writer: Mapping[str, Any], reader: Mapping[str, Any]) -> bool:
    reader_names = {_short(reader.get("name", "")), *map(_short, reader.get("aliases", []))}
    return _short(writer.get("name", "")) in reader_names


def _describe(node: Any) -> str:
    kind = _kind(node)
    if kind in _NAMED and isinstance(node, dict):
        return f"{kind} {node.get('name')}"
    return kind
