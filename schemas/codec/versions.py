"""Released schema versions: loading, parsing and preparing the ``.avsc`` files."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from schemas import records
from schemas.codec.base import _BAD_ENUM, _ENUM_PADDING, SOE_MAGIC, SchemaLoadError

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
        records.CustomerPrediction,
    )
    return {f"journey.{cls.__name__}": cls for cls in classes}
