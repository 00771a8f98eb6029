"""Confluent Schema Registry framing: the codec path, the resolution check, the client against a
replay of the registry's API, and an outage as backpressure (never a dead letter)."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import struct
from typing import Any

import fastavro
import pytest

from schemas.codec import Codec, DecodeError
from schemas.records import OrderChanged, Trigger
from schemas.registry import (
    RegistryClient,
    SchemaResolver,
    confluent_frame,
    confluent_schema_id,
)
from schemas.resolution import resolution_problem
from streams.schema_registry import prepare_output_framing, register_schemas, subjects
from streams.settings import Settings
from tests.registry_replay import RegistryReplay
from tests.unit.test_codec import SAMPLES

ORDER = next(s for s in SAMPLES if isinstance(s, OrderChanged))


@pytest.fixture
def codec() -> Codec:
    return Codec.load()


def body(schema: dict[str, Any], datum: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), datum)
    return out.getvalue()


def order_datum(codec: Codec) -> dict[str, Any]:
    """The OrderChanged sample as the dict a Confluent producer would serialise."""
    soe = codec.encode(ORDER)
    reader = fastavro.parse_schema(codec.schema_for("OrderChanged"))
    datum = fastavro.schemaless_reader(io.BytesIO(soe[10:]), reader, None, return_record_name=False)
    assert isinstance(datum, dict)
    return datum


def test_framing_roundtrip() -> None:
    framed = confluent_frame(258, b"body")
    assert framed[:5] == b"\x00\x00\x00\x01\x02"
    assert confluent_schema_id(framed) == 258
    assert confluent_schema_id(b"\x00\x00\x01") is None
    assert confluent_schema_id(b"\xc3\x01" + b"\x00" * 8) is None


def test_zero_byte_without_registry_says_so(codec: Codec) -> None:
    value = confluent_frame(7, b"\x02ab")
    with pytest.raises(DecodeError) as caught:
        codec.decode(value, OrderChanged)
    assert caught.value.reason_code == "no_registry"
    assert "Schema Registry framing (schema id 7)" in caught.value.reason
    assert "JOURNEY_SCHEMA_REGISTRY_URL" in caught.value.reason


def test_short_zero_value_is_bad_header(codec: Codec) -> None:
    with pytest.raises(DecodeError) as caught:
        codec.decode(b"\x00\x01\x02", OrderChanged)
    assert caught.value.reason_code == "bad_header"
    assert "needs 5" in caught.value.reason


def test_our_own_schema_from_the_registry_decodes(codec: Codec) -> None:
    schema = codec.schema_for("OrderChanged")
    codec.add_registry_schema(41, json.dumps(schema))
    value = confluent_frame(41, body(schema, order_datum(codec)))
    assert codec.decode(value, OrderChanged) == ORDER


def test_other_namespace_and_extra_field_resolve(codec: Codec) -> None:
    """A producer's own copy: another namespace, a field we do not know, fields reordered."""
    schema = codec.schema_for("OrderChanged")
    schema["namespace"] = "com.shop.events"
    schema["fields"] = [
        {"name": "warehouse", "type": "string"},
        *reversed(schema["fields"]),
    ]
    codec.add_registry_schema(42, json.dumps(schema))
    datum = {**order_datum(codec), "warehouse": "ams-1"}
    assert codec.decode(confluent_frame(42, body(schema, datum)), OrderChanged) == ORDER


def test_incompatible_schema_names_the_field(codec: Codec) -> None:
    schema = codec.schema_for("OrderChanged")
    schema["fields"] = [f for f in schema["fields"] if f["name"] != "order_id"]
    codec.add_registry_schema(43, json.dumps(schema))
    with pytest.raises(DecodeError) as caught:
        codec.decode(confluent_frame(43, b"\x00"), OrderChanged)
    assert caught.value.reason_code == "incompatible_schema"
    assert "field 'order_id'" in caught.value.reason
    assert "schema id 43" in caught.value.reason


def test_enum_symbol_the_reader_lacks_is_incompatible(codec: Codec) -> None:
    schema = codec.schema_for("OrderChanged")
    for field in schema["fields"]:
        if field["name"] == "status":
            field["type"]["symbols"] = [*field["type"]["symbols"], "LOST"]
    codec.add_registry_schema(44, json.dumps(schema))
    with pytest.raises(DecodeError) as caught:
        codec.decode(confluent_frame(44, b"\x00"), OrderChanged)
    assert caught.value.reason_code == "incompatible_schema"
    assert "LOST" in caught.value.reason


def test_registry_schema_of_another_record_is_wrong_record(codec: Codec) -> None:
    codec.add_registry_schema(45, json.dumps(codec.schema_for("PageViewed")))
    with pytest.raises(DecodeError) as caught:
        codec.decode(confluent_frame(45, b"\x00"), OrderChanged)
    assert caught.value.reason_code == "wrong_record"
    codec.add_registry_schema(46, json.dumps({"type": "record", "name": "Foo", "fields": []}))
    with pytest.raises(DecodeError) as caught:
        codec.decode(confluent_frame(46, b"\x00"), OrderChanged)
    assert caught.value.reason_code == "wrong_record"


def test_non_avro_and_garbage_schemas(codec: Codec) -> None:
    codec.add_registry_schema(47, '{"type": "object"}', "JSON")
    codec.add_registry_schema(48, "not json")
    codec.add_registry_schema(49, '"string"')
    bad_enum = {"type": "enum", "name": "E", "symbols": [1]}
    codec.add_registry_schema(
        50,
        json.dumps(
            {"type": "record", "name": "OrderChanged", "fields": [{"name": "a", "type": bad_enum}]}
        ),
    )
    codec.add_registry_schema(
        51, json.dumps({"type": "record", "name": "OrderChanged", "fields": [{"type": "int"}]})
    )
    for schema_id in (47, 48, 49, 50, 51):
        with pytest.raises(DecodeError) as caught:
            codec.decode(confluent_frame(schema_id, b"\x00"), OrderChanged)
        assert caught.value.reason_code == "incompatible_schema"


def test_corrupt_and_trailing_bodies_are_bad_avro(codec: Codec) -> None:
    schema = codec.schema_for("OrderChanged")
    schema["namespace"] = "com.shop"  # not byte-for-byte ours: read through resolution
    codec.add_registry_schema(41, json.dumps(schema))
    good = body(schema, order_datum(codec))
    for value in (confluent_frame(41, good[:7]), confluent_frame(41, good + b"\x00")):
        with pytest.raises(DecodeError) as caught:
            codec.decode(value, OrderChanged)
        assert caught.value.reason_code == "bad_avro"
        assert "registry schema id 41" in caught.value.reason


def test_output_framing_writes_and_reads_registry_ids(codec: Codec) -> None:
    trigger = next(s for s in SAMPLES if isinstance(s, Trigger))
    codec.use_output_ids({"Trigger": 9})
    value = codec.encode(trigger)
    assert value[:5] == b"\x00" + struct.pack(">I", 9)
    assert codec.decode(value, None) == trigger
    assert codec.encode(ORDER)[:2] == b"\xc3\x01"  # other records keep single-object encoding


def test_a_row_encoder_made_before_the_output_ids_writes_their_framing(codec: Codec) -> None:
    """The engine's row encoders may exist before ``use_output_ids``: the header is the one of
    the call, never the one of the encoder's making."""
    trigger = next(s for s in SAMPLES if isinstance(s, Trigger))
    names = [f.name for f in dataclasses.fields(Trigger)]
    encode_row = codec.row_encoder(Trigger, names)
    row = [getattr(trigger, name) for name in names]
    assert encode_row(row) == codec.encode(trigger) and encode_row(row)[:2] == b"\xc3\x01"
    codec.use_output_ids({"Trigger": 9})
    value = encode_row(row)
    assert value == codec.encode(trigger) and value[:5] == b"\x00" + struct.pack(">I", 9)
    assert codec.decode(value, None) == trigger


@pytest.mark.parametrize(
    ("writer", "reader", "problem"),
    [
        ("int", "long", None),
        ("long", "int", "long cannot be read as int"),
        (["null", "string"], ["null", "string", "long"], None),
        (["null", "string", "long"], ["null", "string"], "none of the reader's branches"),
        ("string", ["null", "string"], None),
        ({"type": "array", "items": "int"}, {"type": "array", "items": "double"}, None),
        ({"type": "map", "values": "string"}, {"type": "map", "values": "int"}, "cannot be read"),
        (
            {"type": "fixed", "name": "F", "size": 4},
            {"type": "fixed", "name": "F", "size": 8},
            "size",
        ),
        (
            {"type": "enum", "name": "E", "symbols": ["A", "B"]},
            {"type": "enum", "name": "E", "symbols": ["A"], "default": "A"},
            None,
        ),
        (
            {"type": "record", "name": "R", "fields": []},
            {"type": "record", "name": "R", "fields": [{"name": "x", "type": "int", "default": 1}]},
            None,
        ),
        (
            {"type": "record", "name": "R", "fields": [{"name": "old", "type": "int"}]},
            {
                "type": "record",
                "name": "R",
                "fields": [{"name": "new", "type": "long", "aliases": ["old"]}],
            },
            None,
        ),
        (
            {"type": "record", "name": "R", "fields": []},
            {"type": "record", "name": "S", "fields": []},
            "is not the reader's S",
        ),
    ],
)
def test_resolution_rules(writer: Any, reader: Any, problem: str | None) -> None:
    found = resolution_problem(writer, reader)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_recursive_record_resolves() -> None:
    node = {
        "type": "record",
        "name": "Node",
        "fields": [{"name": "next", "type": ["null", "Node"], "default": None}],
    }
    assert resolution_problem(node, node) is None


def settings(url: str, **extra: Any) -> Settings:
    return Settings(_env_file=None, schema_registry_url=url, **extra)  # type: ignore[call-arg]


async def test_resolver_fetches_once_and_caches(codec: Codec) -> None:
    with RegistryReplay() as registry:
        schema_text = json.dumps(codec.schema_for("OrderChanged"))
        schema_id = registry.state.add("shop.orders-value", schema_text)
        resolver = SchemaResolver(RegistryClient(registry.url), codec)
        value = confluent_frame(schema_id, body(json.loads(schema_text), order_datum(codec)))
        for _ in range(3):
            await resolver.ensure(value)
            assert codec.decode(value, OrderChanged) == ORDER
        await resolver.close()
        fetches = [r for r in registry.state.requests if r[1] == f"/schemas/ids/{schema_id}"]
        assert len(fetches) == 1


async def test_unknown_id_is_a_dead_letter_reason(codec: Codec) -> None:
    with RegistryReplay() as registry:
        resolver = SchemaResolver(RegistryClient(registry.url), codec)
        await resolver.ensure(confluent_frame(999, b"\x00"))
        await resolver.close()
    with pytest.raises(DecodeError) as caught:
        codec.decode(confluent_frame(999, b"\x00"), OrderChanged)
    assert caught.value.reason_code == "unknown_schema_id"
    assert "schema id 999 is not in the schema registry" in caught.value.reason


async def test_outage_is_backpressure_not_a_dead_letter(codec: Codec) -> None:
    """While the registry answers 503 (or is gone), ensure() waits; once it is back, the value
    decodes. Nothing is decided while it is down."""
    with RegistryReplay() as registry:
        schema_text = json.dumps(codec.schema_for("OrderChanged"))
        schema_id = registry.state.add("shop.orders-value", schema_text)
        registry.state.down = True
        resolver = SchemaResolver(
            RegistryClient(registry.url), codec, backoff_s=0.02, backoff_max_s=0.05
        )
        value = confluent_frame(schema_id, body(json.loads(schema_text), order_datum(codec)))
        waiting = asyncio.ensure_future(resolver.ensure(value))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        assert resolver.outages >= 3
        assert not codec.knows_schema_id(schema_id)
        registry.state.down = False
        await asyncio.wait_for(waiting, 5)
        await resolver.close()
    assert codec.decode(value, OrderChanged) == ORDER


async def test_unreachable_registry_and_bad_credentials_wait_too(codec: Codec) -> None:
    with RegistryReplay() as registry:
        registry.state.username, registry.state.password = "journey", "s3cret"
        wrong = SchemaResolver(
            RegistryClient(registry.url, username="journey", password="nope"),
            codec,
            backoff_s=0.02,
            backoff_max_s=0.05,
        )
        waiting = asyncio.ensure_future(wrong.ensure(confluent_frame(1, b"")))
        await asyncio.sleep(0.2)
        assert not waiting.done() and wrong.outages >= 2
        waiting.cancel()
        await wrong.close()
        right = SchemaResolver(
            RegistryClient(registry.url, username="journey", password="s3cret"), codec
        )
        await right.ensure(confluent_frame(1, b""))  # 404 (no such id), answered
        await right.close()
    gone = SchemaResolver(RegistryClient(registry.url), codec, backoff_s=0.02, backoff_max_s=0.05)
    waiting = asyncio.ensure_future(gone.ensure(confluent_frame(2, b"")))
    await asyncio.sleep(0.2)
    assert not waiting.done() and gone.outages >= 2
    waiting.cancel()
    await gone.close()


async def test_register_then_output_framing(codec: Codec) -> None:
    with RegistryReplay() as registry:
        config = settings(registry.url, output_framing="confluent")
        done = await register_schemas(config, codec)
        assert {r.subject for r in done} == set(subjects(config))
        assert "shop.orders-value" in registry.state.subjects
        assert "journey.triggers-value" in registry.state.subjects
        again = await register_schemas(config, codec)
        assert [r.schema_id for r in again] == [r.schema_id for r in done]  # idempotent
        assert all(r.compatible for r in again)
        ids = await prepare_output_framing(config, codec)
        # Triggers are written with the newest Trigger version (v2 added BIRTHDAY).
        trigger_id = max(
            (r for r in done if r.record == "Trigger"), key=lambda r: r.version
        ).schema_id
        assert ids["Trigger"] == trigger_id
    trigger = next(s for s in SAMPLES if isinstance(s, Trigger))
    assert confluent_schema_id(codec.encode(trigger)) == trigger_id


async def test_output_framing_needs_registered_schema_or_auto_register(codec: Codec) -> None:
    with RegistryReplay() as registry:
        with pytest.raises(ValueError, match="journey schemas register"):
            await prepare_output_framing(settings(registry.url, output_framing="confluent"), codec)
        ids = await prepare_output_framing(
            settings(registry.url, output_framing="confluent", schema_registry_auto_register=True),
            codec,
        )
        # Everything the pipeline publishes: consumers (and ClickHouse's own Kafka tools) read
        # every topic in one framing.
        assert set(ids) == {
            "Trigger", "DeadLetter", "Decision", "JourneyEvent", "CustomerSnapshot",
            "CustomerPrediction",
        }  # fmt: skip


def test_cli_schemas_register() -> None:
    from click.testing import CliRunner

    from streams.ops.cli import main

    with RegistryReplay() as registry:
        out = CliRunner().invoke(
            main, ["schemas", "register"], env={"JOURNEY_SCHEMA_REGISTRY_URL": registry.url}
        )
        assert out.exit_code == 0, out.output
        assert "shop.orders-value" in out.output and "(new subject)" in out.output
        again = CliRunner().invoke(
            main, ["schemas", "register"], env={"JOURNEY_SCHEMA_REGISTRY_URL": registry.url}
        )
        assert "(compatible)" in again.output and "NOT" not in again.output
        registry.state.down = True
        down = CliRunner().invoke(
            main, ["schemas", "register"], env={"JOURNEY_SCHEMA_REGISTRY_URL": registry.url}
        )
        assert down.exit_code == 2 and "answered HTTP 503" in down.output
    missing = CliRunner().invoke(
        main, ["schemas", "register"], env={"JOURNEY_SCHEMA_REGISTRY_URL": ""}
    )
    assert missing.exit_code != 0 and "JOURNEY_SCHEMA_REGISTRY_URL" in missing.output
