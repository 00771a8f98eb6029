"""The compiled writers (``schemas/codec/compiled.py``) write what fastavro writes, byte for byte,
and leave what they cannot write to fastavro's checks."""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import fastavro
import pytest

from schemas.codec import Codec, EncodeError
from schemas.codec.compiled import _deref, _named

CODEC = Codec.load()
WRITTEN = [name for name in CODEC.record_names() if CODEC._record(name).write is not None]


def value_for(node: Any, named: dict[str, Any], kind: str) -> Any:
    """A value of the schema type: ``small`` (nulls, empties, zeros), ``big`` (everything set,
    non-ASCII, extremes) or ``long`` (strings past the length table)."""
    node = _deref(node, named)
    if isinstance(node, list):
        if kind == "small":
            return None
        return value_for(next(b for b in node if b != "null"), named, kind)
    if isinstance(node, dict):
        if node["type"] == "enum":
            return node["symbols"][0 if kind == "small" else -1]
        if node["type"] == "map":
            if kind == "small":
                return {}
            return {f"k{i}-é": value_for(node["values"], named, kind) for i in range(3)}
        if node["type"] == "array":
            return [] if kind == "small" else [value_for(node["items"], named, kind)] * 2
        raise AssertionError(node)
    return {
        "string": {"small": "", "big": "Grüße, 世界 🙂", "long": "x" * 5_000},
        "long": {"small": 0, "big": -(2**63), "long": 2**63 - 1},
        "int": {"small": 0, "big": -(2**31), "long": 2**31 - 1},
        "boolean": {"small": False, "big": True, "long": True},
        "double": {"small": 0.0, "big": -1.5e300, "long": 0.1},
        "float": {"small": 0.0, "big": 1.5, "long": 0.25},
        "bytes": {"small": b"", "big": b"\x00\xff", "long": b"y" * 5_000},
        "null": {"small": None, "big": None, "long": None},
    }[node][kind]


def fastavro_encoding(name: str, record: Any) -> bytes:
    rec = CODEC._record(name)
    out = io.BytesIO()
    fastavro.schemaless_writer(out, rec.newest.write_schema, rec.to_dict(record))
    return rec.newest.header + out.getvalue()


@pytest.mark.parametrize("kind", ["small", "big", "long"])
@pytest.mark.parametrize("name", WRITTEN)
def test_a_compiled_writer_writes_what_fastavro_writes(name: str, kind: str) -> None:
    rec = CODEC._record(name)
    schema = rec.newest.write_schema
    named = _named(schema)
    datum = {f["name"]: value_for(f["type"], named, kind) for f in schema["fields"]}
    record = rec.build(datum)
    assert CODEC.encode(record) == fastavro_encoding(name, record)
    assert CODEC.decode(CODEC.encode(record)) == record


def test_what_the_writer_cannot_write_fastavro_refuses_with_its_reason() -> None:
    from schemas.records import Decision

    good = Decision("t", "ABANDONED_CART", "MARKETING", "c", "EMITTED", "", 1, 2, "s", "e")
    assert CODEC.decode(CODEC.encode(good)) == good
    for bad in (
        dataclasses.replace(good, due_at=2**63),  # beyond a long
        dataclasses.replace(good, trigger_id=None),  # type: ignore[arg-type]
        dataclasses.replace(good, attributes={"a": 1}),  # type: ignore[dict-item]
    ):
        with pytest.raises(EncodeError):
            CODEC.encode(bad)


def test_the_writers_cover_what_a_fired_timer_publishes() -> None:
    assert {"Decision", "Trigger", "CustomerSnapshot", "JourneyEvent"} <= set(WRITTEN)


@pytest.mark.parametrize("kind", ["small", "big", "long"])
@pytest.mark.parametrize("name", ["Decision", "Trigger"])
def test_a_row_encoder_writes_what_encode_writes_for_the_instance(name: str, kind: str) -> None:
    """The engine writes an outbox entry's decision and trigger from its rows: fields in another
    order than the schema's (reversed here), without building the record."""
    rec = CODEC._record(name)
    schema = rec.newest.write_schema
    named = _named(schema)
    fields = [f["name"] for f in reversed(schema["fields"])]
    datum = {f["name"]: value_for(f["type"], named, kind) for f in schema["fields"]}
    row = [datum[field] for field in fields]
    assert CODEC.row_encoder(rec.cls, fields)(row) == CODEC.encode(rec.build(datum))


def test_a_row_the_compiled_writer_refuses_goes_through_encode() -> None:
    from schemas.codec.base import SchemaLoadError
    from schemas.records import Decision
    from streams.runtime.facts import OUTBOX_FIELDS

    encode_row = CODEC.row_encoder(Decision, OUTBOX_FIELDS)
    good = ["t", "ABANDONED_CART", "MARKETING", "c", "EMITTED", "", 1, 2, None, None, None, "s",
            "e", {}]  # fmt: skip
    assert CODEC.decode(encode_row(good)) == Decision(**dict(zip(OUTBOX_FIELDS, good, strict=True)))
    for at, value in ((6, 2**63), (0, None), (13, {"a": 1}), (1, 5)):
        bad = [*good[:at], value, *good[at + 1 :]]
        with pytest.raises(EncodeError):
            encode_row(bad)
    with pytest.raises(SchemaLoadError):
        CODEC.row_encoder(Decision, OUTBOX_FIELDS[:-1])


def test_values_a_writer_cannot_write_are_refused_as_fastavro_refuses_them() -> None:
    """What a careless caller hands the writer (compiled: C conversions; as Python: ``bytes``)
    raises inside it, and the record goes to fastavro, which refuses it with its reason: never
    bytes that decode to something else."""
    from schemas.records import Decision
    from streams.runtime.facts import OUTBOX_FIELDS

    encode_row = CODEC.row_encoder(Decision, OUTBOX_FIELDS)
    good = ["t", "ABANDONED_CART", "MARKETING", "c", "EMITTED", "", 1, 2, None, None, None, "s",
            "e", {}]  # fmt: skip
    for at, value in (
        (0, "\ud800"),  # a lone surrogate: no UTF-8 for it
        (0, b"bytes"),  # bytes where a string belongs
        (6, "1"),  # a string where a long belongs
        (6, -(2**63) - 1),  # below a long
        (8, 7),  # an int in an optional string
        (13, {1: "a"}),  # a key that is not a string
        (13, ["a"]),  # not a map
    ):
        bad = [*good[:at], value, *good[at + 1 :]]
        with pytest.raises(EncodeError):
            encode_row(bad)
    # Booleans are integers to Python and to fastavro: True is the long 1.
    assert encode_row([*good[:6], True, *good[7:]]) == encode_row([*good[:6], 1, *good[7:]])
    from schemas.records import CartChanged

    cart = CartChanged("e", "c", 1, "cart", "PRODUCT_ADDED", "p", None, 1, 100, "EUR")
    assert CODEC.decode(CODEC.encode(cart)) == cart
    with pytest.raises(EncodeError):  # not a symbol of the enum
        CODEC.encode(dataclasses.replace(cart, action="product_added"))  # type: ignore[arg-type]


def test_a_record_larger_than_the_writers_first_buffer_is_written_whole() -> None:
    """The compiled writer starts on 1 KiB of stack and moves to the heap as the record grows
    (here: several times, through a map's entries)."""
    from schemas.records import Decision
    from streams.runtime.facts import OUTBOX_FIELDS

    encode_row = CODEC.row_encoder(Decision, OUTBOX_FIELDS)
    for entries in (0, 10, 100, 5_000):
        attributes = {f"key-{i}-é": "v" * (i % 50) for i in range(entries)}
        row = ["t", "ABANDONED_CART", "MARKETING", "c", "EMITTED", "", 1, 2, None, "cart",
               None, "s", "e", attributes]  # fmt: skip
        record = Decision(**dict(zip(OUTBOX_FIELDS, row, strict=True)))
        assert encode_row(row) == fastavro_encoding("Decision", record)
        assert CODEC.decode(encode_row(row)) == record


def test_varint_is_avros_zigzag_encoding_around_the_edges_of_its_tables() -> None:
    from schemas.codec.binary import _varint

    edges = [sign * (2**k + d) for k in range(5, 63) for d in (-1, 0, 1) for sign in (1, -1)]
    for n in [*range(-200, 200), *edges, 1_780_000_000_000, -(2**63), 2**63 - 1]:
        out = io.BytesIO()
        fastavro.schemaless_writer(out, "long", n)
        assert bytes(_varint(n)) == out.getvalue(), n
    with pytest.raises(OverflowError):
        _varint(2**63)


def _canonical_by_name(record: Any, ingested_at: int, where: tuple[str, int, int]) -> Any:
    """The canonical event field by field, by name: what ``canonical_event_row`` must hold."""
    from schemas.records import (
        CartChanged,
        FeedbackGiven,
        JourneyEvent,
        MessageEngagement,
        OrderChanged,
        PageViewed,
        ShipmentChanged,
    )
    from streams.runtime.facts import event_type, saturate

    names = {
        PageViewed: ("session_id", "product_id", "category", "page_type"),
        CartChanged: ("cart_id", "product_id", "category", "currency"),
        OrderChanged: ("cart_id", "order_id", "currency"),
        ShipmentChanged: ("order_id", "shipment_id", "carrier"),
        FeedbackGiven: ("order_id", "product_id", "score"),
        MessageEngagement: ("trigger_id",),
    }.get(type(record), ())
    fields = {name: getattr(record, name) for name in names}
    if isinstance(record, OrderChanged):
        fields["amount_minor"] = record.total_minor
    if isinstance(record, CartChanged) and record.unit_price_minor is not None:
        fields["amount_minor"] = saturate(record.unit_price_minor * (record.quantity or 1))
    topic, partition, offset = where
    return JourneyEvent(
        record.event_id, event_type(record), record.customer_id, record.occurred_at,
        ingested_at, topic, partition, offset, **fields,
    )  # fmt: skip


def test_a_canonical_event_row_holds_each_field_of_the_input_in_its_place() -> None:
    """Every kind of simulated input: the row has each value in the field of its name, and its
    encoding (the worker's and the bench contestants') is that of the record."""
    from schemas.records import JourneyEvent
    from streams.ops.simulator import SimulationConfig, generate
    from streams.runtime.facts import JOURNEY_EVENT_FIELDS, canonical_event_row

    codec = Codec.load()
    encode_row = codec.row_encoder(JourneyEvent, JOURNEY_EVENT_FIELDS)
    config = SimulationConfig(seed=5, customers=300, start_ms=1_780_000_000_000)
    records = [e.record for e in generate(config) if e.record is not None]
    kinds = set()
    for i, record in enumerate(records[:3000]):
        where = ("journey.orders", i % 12, i)
        row = canonical_event_row(record, 1_790_000_000_000, *where)
        expected = _canonical_by_name(record, 1_790_000_000_000, where)
        assert JourneyEvent(*row) == expected
        assert encode_row(row) == codec.encode(expected)
        kinds.add(type(record).__name__)
    assert len(kinds) >= 6, kinds


def test_a_snapshot_row_holds_each_field_in_its_place() -> None:
    """Customers through the model (with and without a prediction): the snapshot row has each
    value in the field of its name, and encodes as the record does."""
    from schemas.records import CustomerPrediction, CustomerSnapshot
    from streams.journey.config import JourneyConfig
    from streams.journey.model import new_state, predicted, step
    from streams.ops.simulator import SimulationConfig, generate
    from streams.runtime.engine import snapshot_shows
    from streams.runtime.facts import SNAPSHOT_FIELDS, SnapshotShows, snapshot_row

    codec = Codec.load()
    encode_row = codec.row_encoder(CustomerSnapshot, SNAPSHOT_FIELDS)
    config = JourneyConfig()
    states: dict[str, Any] = {}
    simulated = SimulationConfig(seed=7, customers=100, start_ms=1_780_000_000_000)
    checked = 0
    for i, event in enumerate(generate(simulated)):
        record = event.record
        if record is None or isinstance(record, CustomerPrediction):
            continue
        state = states.get(record.customer_id) or new_state(record.customer_id)
        state, _ = step(state, record, record.occurred_at, config)
        if i % 3 == 0:
            prediction = CustomerPrediction(
                f"p{i}", record.customer_id, record.occurred_at, 0.5, 1.5, 12_000,
                record.occurred_at + 86_400_000,
            )  # fmt: skip
            state = predicted(state, prediction)
        states[record.customer_id] = state
        shows = snapshot_shows(state, record.occurred_at, config)
        # Built without SnapshotShows' __new__ (facts.snapshot_shows): one value per field.
        assert type(shows) is SnapshotShows and SnapshotShows(*shows) == shows
        row = snapshot_row(shows, record.occurred_at + 5)
        alive, clv, next_at, orders_90d = shows.prediction or (None, None, None, None)
        expected = CustomerSnapshot(
            customer_id=shows.customer_id, stage=shows.stage, segment=shows.segment,
            first_seen_at=shows.first_seen_at, orders_count=shows.orders_count,
            revenue_minor=shows.revenue_minor, marketing_consent=shows.marketing_consent,
            updated_at=record.occurred_at + 5, first_order_at=shows.first_order_at,
            last_order_at=shows.last_order_at, last_nps=shows.last_nps,
            time_zone=shows.time_zone, probability_alive=alive, predicted_clv_minor=clv,
            expected_next_order_at=next_at, expected_orders_90d=orders_90d,
        )  # fmt: skip
        assert CustomerSnapshot(*row) == expected
        assert encode_row(row) == codec.encode(expected)
        checked += 1
    assert checked > 500


def test_the_compiled_writer_takes_its_header_as_bytes_only() -> None:
    """It copies the header's bytes in place: anything else is refused before."""
    from schemas.codec import binary

    program = (binary.op("string", 0),)
    write = binary.writer_for(program)
    assert write(["é"], b"H") == b"H\x04\xc3\xa9"
    if not binary.COMPILED:
        pytest.skip("as Python the generated writer joins whatever it is given")
    for header in (None, bytearray(b"H"), "H", memoryview(b"H")):
        with pytest.raises(TypeError):
            write(["é"], header)
