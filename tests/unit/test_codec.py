"""schemas.codec: Avro single-object encoding and JSON in, records out; every rejection readable."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
import fastavro
import orjson
import pytest
from avro.schemanormalization import ToParsingCanonicalForm
from fastavro.schema import to_parsing_canonical_form

from schemas.codec import (
    REASON_CODES,
    SOE_MAGIC,
    Codec,
    DecodeError,
    EncodeError,
    SchemaLoadError,
)
from schemas.records import (
    CartChanged,
    CustomerChanged,
    CustomerPrediction,
    CustomerSnapshot,
    DeadLetter,
    Decision,
    FeedbackGiven,
    JourneyEvent,
    MessageEngagement,
    OrderChanged,
    OrderItem,
    PageViewed,
    ShipmentChanged,
    Trigger,
)

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
T0 = 1_732_300_000_000  # 2024-11-22T18:26:40Z

# Every record twice: with every optional field set, and with none set.
SAMPLES: list[Any] = [
    PageViewed(
        event_id="ev-pv-1",
        customer_id="cust-42",
        occurred_at=T0,
        session_id="sess-9f1c",
        page_type="PRODUCT",
        url="https://shop.example.com/p/sku-123?colour=blue",
        product_id="sku-123",
        category="shoes",
        referrer="https://www.google.com/",
        utm_source="newsletter",
        utm_medium="email",
        utm_campaign="black-friday-2024",
    ),
    PageViewed("ev-pv-2", "cust-42", T0, "sess-9f1c", "HOME", "https://shop.example.com/"),
    CartChanged(
        event_id="ev-cart-1",
        customer_id="cust-42",
        occurred_at=T0 + 1_000,
        cart_id="cart-7",
        action="PRODUCT_ADDED",
        product_id="sku-123",
        category="shoes",
        quantity=2,
        unit_price_minor=4_999,
        currency="EUR",
    ),
    CartChanged("ev-cart-2", "cust-42", T0 + 2_000, "cart-7", "CHECKOUT_STARTED"),
    OrderChanged(
        event_id="ev-ord-1",
        customer_id="cust-42",
        occurred_at=T0 + 60_000,
        order_id="ord-1001",
        status="PLACED",
        total_minor=12_997,
        currency="EUR",
        items=[
            OrderItem("sku-123", 2, 4_999, "shoes"),
            OrderItem("sku-777", 1, 2_999),
            OrderItem("sku-888", 3, 0, "gifts"),
        ],
        cart_id="cart-7",
        coupon="WELCOME10",
    ),
    OrderChanged("ev-ord-2", "cust-42", T0 + 90_000, "ord-1001", "CANCELLED", 0, "EUR"),
    ShipmentChanged(
        event_id="ev-shp-1",
        customer_id="cust-42",
        occurred_at=T0 + 86_400_000,
        order_id="ord-1001",
        shipment_id="shp-1",
        status="SHIPPED",
        carrier="PostNL",
        tracking_code="3SABCD1234567",
        tracking_url="https://postnl.nl/track?code=3SABCD1234567",
    ),
    ShipmentChanged("ev-shp-2", "cust-42", T0, "ord-1001", "shp-1", "DELIVERY_FAILED"),
    FeedbackGiven(
        event_id="ev-fb-1",
        customer_id="cust-42",
        occurred_at=T0,
        kind="REVIEW",
        score=4,
        order_id="ord-1001",
        product_id="sku-123",
        comment="Fits well — comfy. Ünïcödé ✓",
    ),
    FeedbackGiven("ev-fb-2", "cust-42", T0, "NPS", 0),
    MessageEngagement("ev-me-1", "cust-42", T0, "CLICKED", "EMAIL", "trg-abc"),
    MessageEngagement("ev-me-2", "cust-42", T0, "UNSUBSCRIBED", "SMS"),
    CustomerChanged(
        event_id="ev-cu-1",
        customer_id="cust-42",
        occurred_at=T0,
        action="UPDATED",
        marketing_consent=False,
        time_zone="Europe/Amsterdam",
        locale="nl-NL",
        birthday=7_441,  # 1990-05-17
    ),
    CustomerChanged("ev-cu-2", "cust-42", -86_400_000, "ERASED"),
    Trigger(
        trigger_id="trg-abc",
        trigger_type="REVIEW_REQUEST",
        category="MARKETING",
        customer_id="cust-42",
        due_at=T0 + 14 * 86_400_000,
        emitted_at=T0,
        source_event_id="ev-shp-1",
        stage="ADVOCACY",
        order_id="ord-1001",
        cart_id="cart-7",
        shipment_id="shp-1",
        attributes={"first_name": "Anna", "product": "sku-123", "empty": ""},
    ),
    Trigger(
        "trg-def", "ORDER_CONFIRMATION", "TRANSACTIONAL", "cust-42", T0, T0, "ev-ord-1", "PURCHASE"
    ),
    DeadLetter(
        dead_letter_id="shop.orders/3/1234567",
        topic="shop.orders",
        partition=3,
        offset=1_234_567,
        reason_code="bad_avro",
        reason="truncated Avro body for OrderChanged v1: ...",
        failed_at=T0,
        key=b"cust-42",
        value=b"\xc3\x01\x00\xff binary \x80",
        record_type="OrderChanged",
    ),
    DeadLetter("shop.cart/0/0", "shop.cart", 0, 0, "empty", "value is empty (0 bytes)", T0),
    Decision(
        trigger_id="trg-abc", trigger_type="REVIEW_REQUEST", category="MARKETING",
        customer_id="cust-42", status="SUPPRESSED", reason="no_consent", due_at=T0,
        decided_at=T0 + 1, stage="SERVICE", source_event_id="ev-1", order_id="ord-1",
        cart_id="cart-1", shipment_id="shp-1", attributes={"product_id": "p-1"},
    ),
    Decision("trg-def", "ORDER_CONFIRMATION", "TRANSACTIONAL", "cust-42", "EMITTED", "", T0, T0,
             "PURCHASE", "ev-ord-1"),
    JourneyEvent(
        event_id="ev-ord-1", event_type="order.placed", customer_id="cust-42", occurred_at=T0,
        ingested_at=T0 + 5, input_topic="shop.orders", input_partition=3, input_offset=99,
        page_type=None, session_id=None, cart_id="cart-1", order_id="ord-1", shipment_id=None,
        carrier=None, product_id=None, category=None, amount_minor=4_999, currency="EUR",
        score=None, trigger_id=None,
    ),
    JourneyEvent("ev-pv-1", "page_view", "cust-42", T0, T0, "journey.repartition", 0, 0),
    CustomerSnapshot(
        customer_id="cust-42", stage="SERVICE", segment="REPEAT", first_seen_at=T0,
        orders_count=2, revenue_minor=9_998, marketing_consent=True, updated_at=T0 + 9,
        first_order_at=T0 + 1, last_order_at=T0 + 2, last_nps=9, time_zone="Europe/Amsterdam",
        probability_alive=0.9, predicted_clv_minor=5_000, expected_next_order_at=T0 + 3,
        expected_orders_90d=1.25,
    ),
    CustomerSnapshot("cust-7", "AWARENESS", "PROSPECT", T0, 0, 0, False, T0),
    CustomerPrediction("prediction/cust-42/1", "cust-42", T0, 0.42, 1.5, 12_345, T0 + 86_400_000),
    CustomerPrediction("prediction/cust-7/1", "cust-7", T0, 0.0, 0.0, 0),
]  # fmt: skip
SAMPLE_IDS = [
    f"{type(s).__name__}-{'full' if i % 2 == 0 else 'minimal'}" for i, s in enumerate(SAMPLES)
]


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec.load()


def order() -> OrderChanged:
    sample = SAMPLES[4]
    assert isinstance(sample, OrderChanged)
    return sample


def order_json(**changes: Any) -> bytes:
    data: dict[str, Any] = {
        "event_id": "ev-ord-1",
        "customer_id": "cust-42",
        "occurred_at": "2024-11-22T18:26:40Z",
        "order_id": "ord-1001",
        "status": "PLACED",
        "total_minor": 4999,
        "currency": "EUR",
        "items": [{"product_id": "sku-123", "quantity": 1, "unit_price_minor": 4999}],
    }
    for name, value in changes.items():
        if value is ...:
            data.pop(name, None)
        else:
            data[name] = value
    return orjson.dumps(data)


def rejected(
    codec: Codec, value: bytes | None, expected: type | None = OrderChanged
) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        codec.decode(value, expected)
    error = info.value
    assert error.reason_code in REASON_CODES
    assert str(error) == error.reason
    return error


# ------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("record", SAMPLES, ids=SAMPLE_IDS)
def test_avro_round_trip(codec: Codec, record: Any) -> None:
    value = codec.encode(record)
    assert value[:2] == SOE_MAGIC
    assert value[2:10] == codec.fingerprint(type(record))
    assert codec.decode(value, type(record)) == record
    assert codec.decode(value, None) == record


@pytest.mark.parametrize("record", SAMPLES, ids=SAMPLE_IDS)
def test_json_round_trip(codec: Codec, record: Any) -> None:
    text = codec.to_json(record)
    assert text.startswith(b"{")
    assert codec.decode(text, type(record)) == record


@pytest.mark.parametrize("record", SAMPLES, ids=SAMPLE_IDS)
def test_encode_dict_matches_encode(codec: Codec, record: Any) -> None:
    assert codec.encode_dict(type(record).__name__, dataclasses.asdict(record)) == codec.encode(
        record
    )


def test_decoded_times_are_ints_and_items_are_records(codec: Codec) -> None:
    decoded = codec.decode(codec.encode(order()), OrderChanged)
    assert type(decoded.occurred_at) is int
    assert all(type(item) is OrderItem for item in decoded.items)
    customer = codec.decode(codec.encode(SAMPLES[12]), CustomerChanged)
    assert type(customer.birthday) is int


def test_json_accepted_forms(codec: Codec) -> None:
    # ISO with Z, with an offset, naive (= UTC), epoch ms; leading whitespace; unknown fields.
    for when in ("2024-11-22T18:26:40Z", "2024-11-22T19:26:40+01:00", "2024-11-22T18:26:40", T0):
        decoded = codec.decode(b" \n" + order_json(occurred_at=when, extra={"x": 1}), OrderChanged)
        assert decoded.occurred_at == T0
    decoded = codec.decode(order_json(occurred_at="2024-11-22T18:26:40.123456Z"), OrderChanged)
    assert decoded.occurred_at == T0 + 123
    decoded = codec.decode(order_json(items=..., coupon=None), OrderChanged)
    assert decoded.items == [] and decoded.coupon is None and decoded.cart_id is None
    customer = codec.decode(
        b'{"event_id":"e","customer_id":"c","occurred_at":0,"action":"UPDATED",'
        b'"birthday":"1990-05-17","marketing_consent":true}',
        CustomerChanged,
    )
    assert customer.birthday == 7_441 and customer.marketing_consent is True
    dead = codec.decode(
        b'{"dead_letter_id":"t/0/1","topic":"t","partition":0,"offset":1,"reason_code":"empty",'
        b'"reason":"r","failed_at":0,"value":"' + base64.b64encode(b"\xff\x00") + b'"}',
        DeadLetter,
    )
    assert dead.value == b"\xff\x00" and dead.key is None


def test_to_json_form(codec: Codec) -> None:
    data = json.loads(codec.to_json(SAMPLES[16]))
    assert data["failed_at"] == T0
    assert base64.b64decode(data["value"]) == SAMPLES[16].value
    assert list(data) == [f.name for f in dataclasses.fields(DeadLetter)]


# ------------------------------------------------------------------ agreement with avro-python3

_CRC64_EMPTY = 0xC15D213AA4D7A795


def _crc64_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_CRC64_EMPTY & -(fp & 1))
        table.append(fp)
    return table


_CRC64_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO (Rabin) as in the Avro specification, "Schema Fingerprints"."""
    fp = _CRC64_EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _CRC64_TABLE[(fp ^ byte) & 0xFF]
    return fp


@pytest.mark.parametrize(
    ("canonical", "signed"),
    [  # share/test/data/schema-tests.txt of Apache Avro (fingerprints as signed longs)
        ('"null"', 7195948357588979594),
        ('"boolean"', -6970731678124411036),
        ('"int"', 8247732601305521295),
        ('"long"', -3434872931120570953),
        (
            '{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"}]}',
            7843277075252814651,
        ),
    ],
)
def test_crc64_avro_reference_vectors(canonical: str, signed: int) -> None:
    assert crc64_avro(canonical.encode()) == signed % 2**64


@pytest.mark.parametrize("record", SAMPLES, ids=SAMPLE_IDS)
def test_bytes_equal_avro_python3(codec: Codec, record: Any) -> None:
    schema_json = json.dumps(codec.schema_for(type(record)))
    schema = avro.schema.parse(schema_json)
    body = io.BytesIO()
    avro.io.DatumWriter(schema).write(dataclasses.asdict(record), avro.io.BinaryEncoder(body))
    canonical = ToParsingCanonicalForm(schema)
    fingerprint = crc64_avro(canonical.encode("utf-8")).to_bytes(8, "little")
    assert b"\xc3\x01" + fingerprint + body.getvalue() == codec.encode(record)
    # and avro-python3 reads our body back
    ours = codec.encode(record)[10:]
    read = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(io.BytesIO(ours)))
    assert read == dataclasses.asdict(record)


def test_logical_types_do_not_change_fingerprints(codec: Codec) -> None:
    for name in codec.record_names():
        for version in codec.versions(name).values():
            original = to_parsing_canonical_form(version.schema)
            assert to_parsing_canonical_form(version.write_schema) == original
            assert "logicalType" not in original
            assert version.fingerprint == crc64_avro(original.encode()).to_bytes(8, "little")
    assert "logicalType" in json.dumps(codec.schema_for(OrderChanged))


# ------------------------------------------------------------------------ schema evolution


@dataclasses.dataclass(slots=True, frozen=True)
class OrderChangedV2:
    event_id: str
    customer_id: str
    occurred_at: int
    order_id: str
    status: str
    total_minor: int
    currency: str
    items: list[OrderItem] = dataclasses.field(default_factory=list)
    cart_id: str | None = None
    coupon: str | None = None
    channel: str | None = None


@pytest.fixture
def v2_dir(tmp_path: Path) -> Path:
    for path in SCHEMA_DIR.glob("*/v*.avsc"):
        target = tmp_path / path.parent.name / path.name
        target.parent.mkdir(exist_ok=True)
        shutil.copy(path, target)
    schema = json.loads((tmp_path / "order_changed" / "v1.avsc").read_text())
    schema["fields"].append(
        {"name": "channel", "type": ["null", "string"], "default": None, "doc": "Sales channel."}
    )
    (tmp_path / "order_changed" / "v2.avsc").write_text(json.dumps(schema, indent=2))
    return tmp_path


def test_v1_bytes_decode_under_v2_reader(codec: Codec, v2_dir: Path) -> None:
    v2 = Codec.load(v2_dir, record_classes={"OrderChanged": OrderChangedV2})
    assert v2.fingerprint(OrderChangedV2, 1) == codec.fingerprint(OrderChanged)
    assert v2.fingerprint(OrderChangedV2) != codec.fingerprint(OrderChanged)
    assert sorted(v2.versions("OrderChanged")) == [1, 2]

    v1_bytes = codec.encode(order())
    decoded = v2.decode(v1_bytes, OrderChangedV2)
    assert decoded == OrderChangedV2(**dataclasses.asdict(order()) | {"items": order().items})
    assert decoded.channel is None

    # written with v2, read with v2; the v1-only codec does not know that fingerprint
    v2_bytes = v2.encode(dataclasses.replace(decoded, channel="app"))
    assert v2.decode(v2_bytes, OrderChangedV2).channel == "app"
    assert rejected(codec, v2_bytes).reason_code == "unknown_fingerprint"
    # an older version can still be written on purpose
    assert v2.encode_dict("OrderChanged", dataclasses.asdict(order()), version=1) == v1_bytes


def test_a_v1_snapshot_decodes_under_the_released_v2(codec: Codec) -> None:
    # journey.customers is compacted: snapshots written before v2 stay on it for good.
    full = next(s for s in SAMPLES if isinstance(s, CustomerSnapshot))
    v1_fields = dataclasses.asdict(full)
    del v1_fields["expected_orders_90d"]
    v1_bytes = codec.encode_dict("CustomerSnapshot", v1_fields, version=1)
    assert v1_bytes[2:10] != codec.encode(full)[2:10]  # another fingerprint
    assert codec.decode(v1_bytes, CustomerSnapshot) == dataclasses.replace(
        full, expected_orders_90d=None
    )


def test_v1_corrupt_enum_under_v2_reader(codec: Codec, v2_dir: Path) -> None:
    v2 = Codec.load(v2_dir, record_classes={"OrderChanged": OrderChangedV2})
    value = bytearray(codec.encode(order()))
    value[_status_offset(codec)] = 0x01  # zig-zag -1
    with pytest.raises(DecodeError) as info:
        v2.decode(bytes(value), OrderChangedV2)
    assert info.value.reason_code == "bad_avro"
    assert "field 'status': enum index -1 is not a symbol of OrderStatus" in info.value.reason


def test_records_must_match_newest_schema(v2_dir: Path) -> None:
    with pytest.raises(SchemaLoadError, match="OrderChanged has fields"):
        Codec.load(v2_dir)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(SchemaLoadError, match="no schemas"):
        Codec.load(tmp_path)
    (tmp_path / "orders").mkdir()
    shutil.copy(SCHEMA_DIR / "order_changed" / "v1.avsc", tmp_path / "orders" / "v1.avsc")
    with pytest.raises(SchemaLoadError, match="expected directory order_changed/"):
        Codec.load(tmp_path)
    shutil.rmtree(tmp_path / "orders")
    (tmp_path / "order_changed").mkdir()
    shutil.copy(SCHEMA_DIR / "order_changed" / "v1.avsc", tmp_path / "order_changed" / "v1.avsc")
    shutil.copy(SCHEMA_DIR / "order_changed" / "v1.avsc", tmp_path / "order_changed" / "v2.avsc")
    with pytest.raises(SchemaLoadError, match="same fingerprint"):
        Codec.load(tmp_path)


# ----------------------------------------------------------------------------- rejections


def _status_offset(codec: Codec) -> int:
    """Byte offset of OrderChanged.status in the encoding of order()."""
    a = codec.encode(order())
    b = codec.encode(dataclasses.replace(order(), status="REFUNDED"))
    (offset,) = [i for i in range(len(a)) if a[i] != b[i]]
    return offset


def test_every_truncation_is_bad_avro(codec: Codec) -> None:
    value = codec.encode(order())
    for end in range(10, len(value)):
        error = rejected(codec, value[:end])
        assert error.reason_code == "bad_avro"
        assert error.reason.startswith("truncated Avro body for OrderChanged v1: ")
    assert "field 'coupon'" in rejected(codec, value[:-1]).reason
    assert "field 'event_id'" in rejected(codec, value[:10]).reason


def test_trailing_bytes(codec: Codec) -> None:
    error = rejected(codec, codec.encode(order()) + b"\x00")
    assert error.reason_code == "bad_avro"
    assert error.reason.startswith("1 trailing byte after the OrderChanged v1 record")
    assert rejected(codec, codec.encode(order()) + b"abc").reason.startswith("3 trailing bytes")


def test_short_header(codec: Codec) -> None:
    error = rejected(codec, SOE_MAGIC + b"\x01\x02")
    assert error.reason_code == "bad_header"
    assert "header needs 10" in error.reason


def test_unknown_fingerprint(codec: Codec) -> None:
    value = SOE_MAGIC + bytes(range(1, 9)) + codec.encode(order())[10:]
    error = rejected(codec, value)
    assert error.reason_code == "unknown_fingerprint"
    assert "0102030405060708" in error.reason


@pytest.mark.parametrize(("byte", "index"), [(0x06, 3), (0x0C, 6), (0x01, -1), (0x7F, -64)])
def test_corrupt_enum_index(codec: Codec, byte: int, index: int) -> None:
    value = bytearray(codec.encode(order()))
    value[_status_offset(codec)] = byte
    error = rejected(codec, bytes(value))
    assert error.reason_code == "bad_avro"
    assert error.reason == (
        f"corrupt Avro body for OrderChanged v1: field 'status': enum index {index} is not a "
        "symbol of OrderStatus (PLACED, CANCELLED, REFUNDED)"
    )


def test_two_byte_negative_enum_index(codec: Codec) -> None:
    value = bytearray(codec.encode(order()))
    offset = _status_offset(codec)
    value[offset : offset + 1] = b"\xff\x7f"  # zig-zag -8192; one byte longer than before
    error = rejected(codec, bytes(value))
    assert "enum index -8192 is not a symbol of OrderStatus" in error.reason


def test_corrupt_union_index_and_utf8(codec: Codec) -> None:
    record = SAMPLES[1]  # PageViewed without optionals: the body ends with six 0x00 unions
    value = bytearray(codec.encode(record))
    value[-1] = 0x08  # union branch 4 of ["null", "string"]
    error = rejected(codec, bytes(value), PageViewed)
    assert error.reason == (
        "corrupt Avro body for PageViewed v1: field 'utm_campaign': union branch index 4 is out "
        "of range (0..1)"
    )
    value = bytearray(codec.encode(record))
    value[11] = 0xFF  # first byte of event_id
    error = rejected(codec, bytes(value), PageViewed)
    assert error.reason_code == "bad_avro"
    assert "field 'event_id': string is not valid UTF-8" in error.reason


def test_wrong_record_on_topic(codec: Codec) -> None:
    error = rejected(codec, codec.encode(SAMPLES[2]), OrderChanged)
    assert error.reason_code == "wrong_record"
    assert error.reason == "value is a CartChanged (v1), but this topic carries OrderChanged"


def test_too_large_is_checked_first(codec: Codec) -> None:
    for value in (b"\x00" * 10_485_760, b"{" + b" " * 10_485_759):
        error = rejected(codec, value)
        assert error.reason_code == "too_large"
        assert error.reason == (
            "value is 10485760 bytes, the limit is 1048576 (JOURNEY_MAX_VALUE_BYTES)"
        )
    small = Codec.load(max_value_bytes=100)
    assert small.decode(small.encode(SAMPLES[1]), PageViewed) == SAMPLES[1]
    assert rejected(small, small.encode(SAMPLES[0]), PageViewed).reason_code == "too_large"


def test_empty(codec: Codec) -> None:
    assert rejected(codec, b"").reason == "value is empty (0 bytes)"
    assert rejected(codec, None).reason_code == "empty"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (b"[1, 2]", "0x5b"),
        (b"  x", "0x20"),
        (b"\xc3\x02rest", "0xc3 0x02"),
        (b"\xc3", "0xc3"),
        (b"Obj\x01", "0x4f"),
    ],
)
def test_garbage_header(codec: Codec, value: bytes, shown: str) -> None:
    error = rejected(codec, value)
    assert error.reason_code == "bad_header"
    assert error.reason == (
        f"value starts with {shown}: neither Avro single-object encoding (C3 01) nor JSON"
    )


def test_bad_json(codec: Codec) -> None:
    error = rejected(codec, b'{"event_id": "e",')
    assert error.reason_code == "bad_json"
    assert error.reason.startswith("not valid JSON: ")
    assert rejected(codec, b'{"a": "\xff"}').reason_code == "bad_json"
    error = rejected(codec, order_json(), None)
    assert error.reason_code == "bad_json"
    assert "only Avro" in error.reason


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        (
            {"status": "SHIPPD"},
            "field 'status': 'SHIPPD' is not one of PLACED, CANCELLED, REFUNDED",
        ),
        (
            {"status": 0},
            "field 'status': expected one of PLACED, CANCELLED, REFUNDED, got integer 0",
        ),
        ({"order_id": ...}, "missing required field 'order_id'"),
        ({"order_id": None}, "field 'order_id': expected string, got null"),
        ({"total_minor": "12"}, "field 'total_minor': expected long, got string '12'"),
        ({"total_minor": 12.0}, "field 'total_minor': expected long, got number 12.0"),
        ({"total_minor": True}, "field 'total_minor': expected long, got boolean true"),
        (
            {"total_minor": 2**63},
            "field 'total_minor': 9223372036854775808 is out of range for long",
        ),
        ({"currency": ["EUR"]}, "field 'currency': expected string, got array of 1 items"),
        ({"coupon": 10}, "field 'coupon': expected string, got integer 10"),
        (
            {"occurred_at": "yesterday"},
            "field 'occurred_at': 'yesterday' is not an ISO-8601 timestamp "
            "(e.g. 2024-05-01T12:00:00Z)",
        ),
        (
            {"occurred_at": 1.7e12},
            "field 'occurred_at': expected epoch milliseconds or an ISO-8601 timestamp, "
            "got number 1700000000000.0",
        ),
        ({"items": {"product_id": "p"}}, "field 'items': expected array, got object"),
        (
            {"items": [{"product_id": "p", "quantity": 1, "unit_price_minor": 1}, {"quantity": 1}]},
            "missing required field 'items[1].product_id'",
        ),
        (
            {"items": [{"product_id": "p", "quantity": 2**31, "unit_price_minor": 1}]},
            "field 'items[0].quantity': 2147483648 is out of range for int",
        ),
        (
            {"items": [{"product_id": "p", "quantity": False, "unit_price_minor": 1}]},
            "field 'items[0].quantity': expected int, got boolean false",
        ),
        ({"items": ["p"]}, "field 'items[0]': expected OrderItem (object), got string 'p'"),
    ],
)
def test_json_validation(codec: Codec, changes: dict[str, Any], reason: str) -> None:
    error = rejected(codec, order_json(**changes))
    assert error.reason_code == "validation"
    assert error.reason == reason


def test_json_validation_other_records(codec: Codec) -> None:
    base = b'{"event_id":"e","customer_id":"c","occurred_at":0,"action":"UPDATED",'
    error = rejected(codec, base + b'"birthday":"1990-13-01"}', CustomerChanged)
    assert error.reason == "field 'birthday': '1990-13-01' is not a date (YYYY-MM-DD)"
    error = rejected(codec, base + b'"marketing_consent":"yes"}', CustomerChanged)
    assert error.reason == "field 'marketing_consent': expected boolean, got string 'yes'"
    trigger = json.loads(codec.to_json(SAMPLES[14]))
    trigger["attributes"]["n"] = 1
    error = rejected(codec, orjson.dumps(trigger), Trigger)
    assert error.reason == "field 'attributes['n']': expected string, got integer 1"
    dead = json.loads(codec.to_json(SAMPLES[16]))
    dead["key"] = "not base64!"
    error = rejected(codec, orjson.dumps(dead), DeadLetter)
    assert error.reason == "field 'key': string 'not base64!' is not valid base64"


def test_keys(codec: Codec) -> None:
    assert codec.decode_key(b"cust-42") == "cust-42"
    assert codec.decode_key("klant-ë".encode()) == "klant-ë"
    for key, reason in [
        (b"\xffcust", "key is not valid UTF-8: byte 0xff at position 0"),
        (b"cust\xc3", "key is not valid UTF-8: byte 0xc3 at position 4"),
        (b"", "key is empty"),
        (None, "key is missing (null)"),
    ]:
        with pytest.raises(DecodeError) as info:
            codec.decode_key(key)
        assert info.value.reason_code == "bad_key"
        assert info.value.reason == reason


def test_decode_error_is_a_value_error_and_pickles() -> None:
    error = DecodeError("bad_avro", "truncated")
    assert isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.reason_code, copy.reason, str(copy)) == ("bad_avro", "truncated", "truncated")


def test_unknown_expected_class_is_a_programming_error(codec: Codec) -> None:
    with pytest.raises(TypeError):
        codec.decode(order_json(), OrderItem)
    with pytest.raises(TypeError):
        codec.encode(OrderItem("p", 1, 1))


# ---------------------------------------------------------------------------------- encoding


def test_encode_rejects_bad_records(codec: Codec) -> None:
    with pytest.raises(EncodeError, match="field 'status': 'SHIPPD' is not one of"):
        codec.encode(dataclasses.replace(order(), status="SHIPPD"))
    with pytest.raises(EncodeError, match=r"field 'items\[0\].product_id': expected string"):
        codec.encode(dataclasses.replace(order(), items=[OrderItem(None, 1, 1)]))  # type: ignore[arg-type]


def test_encode_dict_validates(codec: Codec) -> None:
    data = dataclasses.asdict(order())
    assert codec.decode(codec.encode_dict("order_changed", data), OrderChanged) == order()
    with pytest.raises(EncodeError, match="unknown field 'colour' for OrderChanged"):
        codec.encode_dict("OrderChanged", data | {"colour": "red"})
    with pytest.raises(EncodeError, match="missing required field 'currency'"):
        codec.encode_dict("OrderChanged", {k: v for k, v in data.items() if k != "currency"})
    with pytest.raises(EncodeError, match=r"field 'total_minor': expected long, got number 1\.5"):
        codec.encode_dict("OrderChanged", data | {"total_minor": 1.5})
    iso = codec.encode_dict("OrderChanged", data | {"occurred_at": "2024-11-22T18:26:40Z"})
    assert codec.decode(iso, OrderChanged).occurred_at == T0
    with pytest.raises(KeyError):
        codec.encode_dict("Nope", data)


def test_helpers(codec: Codec) -> None:
    assert codec.record_class("journey.OrderChanged") is OrderChanged
    assert codec.record_name(OrderChanged) == "OrderChanged"
    assert codec.schema_for("order_changed")["name"] == "OrderChanged"
    assert len(codec.fingerprint(OrderChanged)) == 8
    assert sorted(codec.record_names()) == sorted({type(s).__name__ for s in SAMPLES}), (
        "every record has samples"
    )


def test_fastavro_reads_our_bytes_with_logical_types(codec: Codec) -> None:
    """Our encoding is plain Avro: a stock fastavro reader gets datetimes back."""
    value = codec.encode(order())
    schema = fastavro.parse_schema(codec.schema_for(OrderChanged))
    decoded = fastavro.schemaless_reader(io.BytesIO(value[10:]), schema, None)
    assert isinstance(decoded, dict)
    assert decoded["occurred_at"].timestamp() * 1000 == order().occurred_at
