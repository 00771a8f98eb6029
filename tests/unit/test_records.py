"""records.py mirrors the newest .avsc of every record: names, order, optionality, types."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

import pytest

from schemas import records
from schemas.codec import Codec

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
CODEC = Codec.load()

# Python annotation (without None) allowed for each Avro type.
PYTHON_TYPES = {
    "string": str,
    "enum": str,
    "int": int,
    "long": int,
    "boolean": bool,
    "double": float,
    "bytes": bytes,
    "array": list,
    "map": dict,
    "record": object,  # checked recursively
}


def newest_records() -> list[tuple[type, dict[str, Any]]]:
    """(class, record schema) for every top-level and nested record of the newest schemas."""
    found: list[tuple[type, dict[str, Any]]] = []

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for branch in node:
                visit(branch)
        elif isinstance(node, dict):
            if node.get("type") == "record":
                found.append((getattr(records, node["name"]), node))
                for field in node["fields"]:
                    visit(field["type"])
            elif node.get("type") == "array":
                visit(node["items"])
            elif node.get("type") == "map":
                visit(node["values"])

    for name in CODEC.record_names():
        visit(CODEC.schema_for(name))
    return found


NEWEST = newest_records()


def avro_kind(node: Any) -> tuple[str, bool]:
    """(type name without null, nullable) of a field type."""
    if isinstance(node, list):
        branches = [b for b in node if b != "null"]
        assert len(branches) == 1, "only [null, T] unions are used"
        return avro_kind(branches[0])[0], "null" in node
    if isinstance(node, dict):
        return (
            node["type"] if isinstance(node["type"], str) else avro_kind(node["type"])[0]
        ), False
    return node, False


@pytest.mark.parametrize(("cls", "schema"), NEWEST, ids=[c.__name__ for c, _ in NEWEST])
def test_dataclass_fields_match_newest_schema(cls: type, schema: dict[str, Any]) -> None:
    assert dataclasses.is_dataclass(cls)
    fields = dataclasses.fields(cls)
    assert [f.name for f in fields] == [f["name"] for f in schema["fields"]]
    hints = typing.get_type_hints(cls)
    for field, avro_field in zip(fields, schema["fields"], strict=True):
        kind, nullable = avro_kind(avro_field["type"])
        hint = hints[field.name]
        args = typing.get_args(hint)
        optional = isinstance(hint, types.UnionType) and type(None) in args
        assert optional == nullable, f"{cls.__name__}.{field.name}: optional iff nullable union"
        if nullable:
            assert field.default is None, f"{cls.__name__}.{field.name} defaults to None"
            assert avro_field.get("default", ...) is None
            (hint,) = [a for a in args if a is not type(None)]
        has_default = field.default is not dataclasses.MISSING or (
            field.default_factory is not dataclasses.MISSING
        )
        assert has_default == ("default" in avro_field), f"{cls.__name__}.{field.name} default"
        if field.default_factory is not dataclasses.MISSING:
            assert field.default_factory() == avro_field["default"]
        expected = PYTHON_TYPES[kind]
        origin = typing.get_origin(hint) or hint
        if kind == "record":
            continue
        assert origin is expected, f"{cls.__name__}.{field.name}: {hint} for Avro {kind}"


def test_every_class_has_a_schema() -> None:
    dataclass_names = {
        name
        for name, value in vars(records).items()
        if isinstance(value, type) and dataclasses.is_dataclass(value)
    }
    assert dataclass_names == {cls.__name__ for cls, _ in NEWEST}


def test_topics_carry_input_records() -> None:
    assert set(records.TOPIC_RECORDS.values()) == set(typing.get_args(records.InputEvent))
    for cls in records.TOPIC_RECORDS.values():
        names = [f.name for f in dataclasses.fields(cls)]
        assert names[:3] == ["event_id", "customer_id", "occurred_at"]


def test_schema_files_follow_the_conventions() -> None:
    files = sorted(SCHEMA_DIR.glob("*/v*.avsc"))
    assert {p.parent.name for p in files} == {
        "page_viewed",
        "cart_changed",
        "order_changed",
        "shipment_changed",
        "feedback_given",
        "message_engagement",
        "customer_changed",
        "trigger",
        "dead_letter",
        "decision",
        "journey_event",
        "customer_snapshot",
        "customer_prediction",
    }
    for path in files:
        schema = json.loads(path.read_text())
        assert schema["namespace"] == "journey", path
        assert schema.get("doc"), path

        def check(node: Any, where: str) -> None:
            if isinstance(node, list):
                for branch in node:
                    check(branch, where)
                return
            if not isinstance(node, dict):
                return
            if node.get("type") == "enum":
                assert "default" not in node, f"{where}: unknown symbols must be rejected"
            if node.get("type") == "record":
                assert node.get("doc"), where
                for field in node["fields"]:
                    assert field.get("doc"), f"{where}.{field['name']} has a doc"
                    check(field["type"], f"{where}.{field['name']}")
            for key in ("items", "values"):
                if key in node:
                    check(node[key], where)

        check(schema, path.parent.name)


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ("PageViewed", "occurred_at"),
        ("Trigger", "due_at"),
        ("Trigger", "emitted_at"),
        ("DeadLetter", "failed_at"),
    ],
)
def test_times_are_timestamp_millis(record: str, field: str) -> None:
    schema = CODEC.schema_for(record)
    (spec,) = [f for f in schema["fields"] if f["name"] == field]
    assert spec["type"] == {"type": "long", "logicalType": "timestamp-millis"}


def test_records_are_frozen_to_the_type_checker_and_compare_by_value() -> None:
    """``records.record``: mypy treats every record (and the model's decisions) as a frozen
    dataclass, so an assignment to a field fails ``make lint``; at run time they compare and hash
    by value as frozen dataclasses do."""
    from streams.journey.decisions import Drop, Emit, Erase

    transform = records.record.__dataclass_transform__  # type: ignore[attr-defined]
    # (Python 3.11 keeps the parameters it does not know yet in "kwargs".)
    assert {**transform.get("kwargs", {}), **transform}["frozen_default"] is True
    decorated = [
        cls
        for cls in vars(records).values()
        if isinstance(cls, type) and cls.__module__ == records.__name__
    ]
    assert len(decorated) >= 12
    for cls in [*decorated, Emit, Drop, Erase]:
        assert dataclasses.is_dataclass(cls) and cls.__slots__, cls
        assert cls.__hash__ is not None, cls  # as a frozen dataclass's
    a = records.PageViewed("e", "c", 1, "s", "HOME", "/")
    b = records.PageViewed("e", "c", 1, "s", "HOME", "/")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != dataclasses.replace(a, url="/x")
    assert Erase("c") == Erase("c") and hash(Erase("c")) == hash(Erase("c"))
