"""`journey import` without a broker: rows of every record in CSV and JSONL, every form of the
`record` column, CSV type conversion, bad rows with their line and reason, and the command."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections import Counter
from dataclasses import fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from schemas.codec import Codec, DecodeError
from schemas.records import (
    TOPIC_RECORDS,
    CartChanged,
    CustomerChanged,
    FeedbackGiven,
    InputEvent,
    MessageEngagement,
    OrderChanged,
    OrderItem,
    PageViewed,
    ShipmentChanged,
)
from streams.ops.cli import main
from streams.ops.importer import (
    EVENT_TYPES,
    ImportFileError,
    ImportResult,
    Parsed,
    Rejected,
    RowParser,
    count_rows,
    detect_format,
    publish_rows,
    read_rows,
)
from streams.ops.simulator import DAY, SimulationConfig, generate
from streams.runtime.facts import event_type
from streams.settings import Settings

CODEC = Codec.load()
PARSER = RowParser(CODEC)
TOPIC_OF = {cls: topic for topic, cls in TOPIC_RECORDS.items()}
T = 1_714_564_800_000  # 2024-05-01T12:00:00Z
ENUM_FIELD = {cls: name for cls, name in EVENT_TYPES.values()}

ONE_OF_EACH: list[InputEvent] = [
    PageViewed("e1", "c-1", T, "s-1", "PRODUCT", "https://shop/p/1", "p-1", "shoes", "https://g", "news", "email", "spring"),
    CartChanged("e2", "c-1", T + 1, "k-1", "PRODUCT_ADDED", "p-1", "shoes", 2, 4_995, "EUR"),
    OrderChanged("e3", "c-1", T + 2, "o-1", "PLACED", 9_990, "EUR", [OrderItem("p-1", 2, 4_995, "shoes"), OrderItem("p-2", 1, 0)], "k-1", "SPRING10"),
    ShipmentChanged("e4", "c-1", T + 3, "o-1", "sh-1", "DELIVERED", "PostNL", "3S1", "https://t/3S1"),
    FeedbackGiven("e5", "c-1", T + 4, "NPS", 9, "o-1", None, "quick, \"nice\"\nand cheap"),
    MessageEngagement("e6", "c-1", T + 5, "OPENED", "EMAIL", "tr-1"),
    CustomerChanged("e7", "c-1", T + 6, "UPDATED", False, "Europe/Amsterdam", "nl-NL", 7_338),
]  # fmt: skip


def record_forms(record: InputEvent) -> list[str]:
    """Every way of naming this record in the `record` column."""
    cls = type(record)
    name = cls.__name__
    snake = "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
    forms = [name, snake, name.upper(), TOPIC_OF[cls], event_type(record)]
    prefix = event_type(record).partition(".")[0]
    forms.append(f"{prefix}.{getattr(record, ENUM_FIELD[cls]).lower()}")  # page_view.product too
    return forms


def json_line(event: InputEvent, form: str, /, **changes: Any) -> bytes:
    """The record in the contract's JSON form plus a `record` field; `...` deletes a field."""
    data = orjson.loads(CODEC.to_json(event))
    data["record"] = form
    for key, value in changes.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    return orjson.dumps(data) + b"\n"


ALL_FIELDS = [
    "record",
    *dict.fromkeys(f.name for cls in TOPIC_RECORDS.values() for f in fields(cls)),
]


def csv_cells(record: InputEvent, form: str, iso: bool = False) -> dict[str, str]:
    """A record as CSV cells: empty for null, items as JSON, booleans and numbers as text."""
    cells = {"record": form}
    for f in fields(record):
        value = getattr(record, f.name)
        if value is None:
            cells[f.name] = ""
        elif isinstance(value, bool):
            cells[f.name] = "true" if value else "false"
        elif f.name == "occurred_at" and iso:
            cells[f.name] = datetime.fromtimestamp(value / 1000, UTC).isoformat()
        elif isinstance(value, list):
            cells[f.name] = json.dumps(orjson.loads(CODEC.to_json(record))[f.name])
        else:
            cells[f.name] = str(value)
    return cells


def csv_text(rows: list[dict[str, str]], columns: list[str] | None = None) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns or ALL_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def good(rows: list[Any]) -> list[Parsed]:
    assert all(isinstance(r, Parsed) for r in rows), [
        str(r) for r in rows if isinstance(r, Rejected)
    ]
    return rows


# --- every record, every form ----------------------------------------------------------------
@pytest.mark.parametrize("record", ONE_OF_EACH, ids=lambda r: type(r).__name__)
def test_jsonl_rows_of_every_record_in_every_form(record: InputEvent) -> None:
    forms = record_forms(record)
    rows = good(list(PARSER.parse_jsonl([json_line(record, form) for form in forms])))
    assert [r.line for r in rows] == list(range(1, len(forms) + 1))
    for row in rows:
        assert row.record == record
        assert row.topic == TOPIC_OF[type(record)]


@pytest.mark.parametrize("record", ONE_OF_EACH, ids=lambda r: type(r).__name__)
def test_an_event_type_with_a_value_sets_the_enum_field(record: InputEvent) -> None:
    enum_field = ENUM_FIELD[type(record)]
    form = record_forms(record)[-1]  # e.g. order.placed, page_view.product
    (row,) = good(list(PARSER.parse_jsonl([json_line(record, form, **{enum_field: ...})])))
    assert row.record == record
    cells = csv_cells(record, form)
    cells[enum_field] = ""
    (row,) = good(list(PARSER.parse_csv(io.StringIO(csv_text([cells])))))
    assert row.record == record


@pytest.mark.parametrize("record", ONE_OF_EACH, ids=lambda r: type(r).__name__)
def test_csv_rows_of_every_record_in_every_form(record: InputEvent) -> None:
    forms = record_forms(record)
    text = csv_text([csv_cells(record, form, iso=i % 2 == 1) for i, form in enumerate(forms)])
    rows = good(list(PARSER.parse_csv(io.StringIO(text))))
    assert len(rows) == len(forms)
    for row in rows:
        assert row.record == record
        assert row.topic == TOPIC_OF[type(record)]


def test_every_event_type_of_the_analysts_is_accepted() -> None:
    for prefix, (cls, enum_field) in EVENT_TYPES.items():
        symbols = PARSER.enums[(cls, enum_field)]
        assert symbols, prefix
        sample = next(r for r in ONE_OF_EACH if type(r) is cls)
        for symbol in symbols:
            record = replace(sample, **{enum_field: symbol})  # type: ignore[type-var]
            value = f"{prefix}.{symbol.lower()}"
            (row,) = good(list(PARSER.parse_jsonl([json_line(record, value, **{enum_field: ...})])))
            assert getattr(row.record, enum_field) == symbol
            assert event_type(row.record) in (value, "page_view")


def test_a_simulated_history_round_trips_through_jsonl_and_csv() -> None:
    events = [e.record for e in generate(SimulationConfig(seed=7, customers=60, start_ms=T, arrival_window_ms=3 * DAY)) if e.record is not None]  # fmt: skip
    assert {type(e) for e in events} == set(TOPIC_RECORDS.values())
    lines = [json_line(e, event_type(e)) for e in events]
    assert [r.record for r in good(list(PARSER.parse_jsonl(lines)))] == events
    text = csv_text([csv_cells(e, TOPIC_OF[type(e)]) for e in events])
    assert [r.record for r in good(list(PARSER.parse_csv(io.StringIO(text))))] == events


# --- CSV type conversion --------------------------------------------------------------------
def one_csv(**cells: str) -> Parsed | Rejected:
    (row,) = PARSER.parse_csv(io.StringIO(csv_text([cells], list(cells))))
    return row


def test_csv_strings_become_the_types_of_the_schema() -> None:
    row = one_csv(record="cart.product_added", event_id="x", customer_id="c", occurred_at="1714564800000", cart_id="k", quantity=" 3 ", unit_price_minor="-250", product_id="007")  # fmt: skip
    assert isinstance(row, Parsed)
    assert row.record == CartChanged("x", "c", T, "k", "PRODUCT_ADDED", "007", None, 3, -250)
    for cell, expected in (("true", True), ("TRUE", True), ("1", True), ("false", False), ("0", False)):  # fmt: skip
        row = one_csv(record="customer.updated", event_id="x", customer_id="c", occurred_at="2024-05-01T14:00:00+02:00", marketing_consent=cell, birthday="1990-02-03")  # fmt: skip
        assert isinstance(row, Parsed)
        assert row.record == CustomerChanged("x", "c", T, "UPDATED", expected, None, None, 7_338)
    row = one_csv(record="CustomerChanged", event_id="x", customer_id="c", occurred_at="2024-05-01 12:00:00", action="UPDATED", birthday="7338")  # fmt: skip
    assert isinstance(row, Parsed)
    assert row.record == CustomerChanged("x", "c", T, "UPDATED", None, None, None, 7_338)
    row = one_csv(record="order.refunded", event_id="x", customer_id="c", occurred_at=str(T), order_id="o", total_minor="0", currency="EUR", items="[]")  # fmt: skip
    assert isinstance(row, Parsed)
    assert row.record == OrderChanged("x", "c", T, "o", "REFUNDED", 0, "EUR", [])


def test_empty_csv_cells_are_absent_fields() -> None:
    row = one_csv(record="order.placed", event_id="x", customer_id="c", occurred_at=str(T), order_id="o", total_minor="10", currency="EUR", items="", cart_id="", coupon="")  # fmt: skip
    assert isinstance(row, Parsed)
    assert row.record == OrderChanged("x", "c", T, "o", "PLACED", 10, "EUR", [], None, None)
    row = one_csv(record="order.placed", event_id="x", customer_id="c", occurred_at=str(T), order_id="o", total_minor="", currency="EUR")  # fmt: skip
    assert isinstance(row, Rejected)
    assert row.reason == "missing required field 'total_minor'"


def test_csv_cells_that_do_not_convert_get_the_codecs_reason() -> None:
    cases = {
        "quantity": ("1.5", "field 'quantity': expected int, got string '1.5'"),
        "unit_price_minor": ("ten", "field 'unit_price_minor': expected long, got string 'ten'"),
        "occurred_at": ("yesterday", "field 'occurred_at': 'yesterday' is not an ISO-8601 timestamp (e.g. 2024-05-01T12:00:00Z)"),
        "action": ("PRODUCT_STOLEN", "field 'action': 'PRODUCT_STOLEN' is not one of PRODUCT_ADDED, PRODUCT_REMOVED, CHECKOUT_STARTED"),
    }  # fmt: skip
    base = {"record": "cart", "event_id": "x", "customer_id": "c", "occurred_at": str(T), "cart_id": "k", "action": "PRODUCT_ADDED"}  # fmt: skip
    for name, (cell, reason) in cases.items():
        row = one_csv(**{**base, name: cell})
        assert isinstance(row, Rejected), name
        assert (row.reason_code, row.reason) == ("validation", reason)
    row = one_csv(record="customer.updated", event_id="x", customer_id="c", occurred_at=str(T), marketing_consent="yes")  # fmt: skip
    assert isinstance(row, Rejected)
    assert row.reason == "field 'marketing_consent': expected boolean, got string 'yes'"
    row = one_csv(record="order.placed", event_id="x", customer_id="c", occurred_at=str(T), order_id="o", total_minor="1", currency="EUR", items="[{'product_id': 'p'}]")  # fmt: skip
    assert isinstance(row, Rejected)
    assert row.reason.startswith("field 'items': cell is not valid JSON (")
    row = one_csv(record="order.placed", event_id="x", customer_id="c", occurred_at=str(T), order_id="o", total_minor="1", currency="EUR", items='[{"product_id": "p", "quantity": 1}]')  # fmt: skip
    assert isinstance(row, Rejected)
    assert row.reason == "missing required field 'items[0].unit_price_minor'"


# --- bad rows -------------------------------------------------------------------------------
def test_bad_jsonl_rows_have_their_line_and_reason_and_good_rows_still_come_out() -> None:
    order, cart = ONE_OF_EACH[2], ONE_OF_EACH[1]
    lines = [
        json_line(order, "order.placed"),  # 1 good
        json_line(order, "order.teleported"),  # 2
        b"\n",  # 3 blank: skipped, but counted as a line
        json_line(order, "OrderChanged", total_minor=...),  # 4
        json_line(cart, "cart", action="PRODUCT_STOLEN"),  # 5
        json_line(cart, "cart", occurred_at="last tuesday"),  # 6
        b'{"record": "orders", "event_id": \n',  # 7
        json_line(cart, "warehouse"),  # 8
        b"[1, 2]\n",  # 9
        json_line(order, "order.placed", status="CANCELLED"),  # 10
        json_line(cart, "cart", customer_id=""),  # 11
        json_line(cart, "cart", record=...),  # 12
        json_line(cart, "cart"),  # 13 good
        b"\xff\xfe{}\n",  # 14
        json_line(order, "order.placed", status="PLACED"),  # 15 good: the same as implied
    ]
    rows = list(PARSER.parse_jsonl(lines))
    assert [(r.line, type(r).__name__) for r in rows] == [
        (1, "Parsed"), (2, "Rejected"), (4, "Rejected"), (5, "Rejected"), (6, "Rejected"),
        (7, "Rejected"), (8, "Rejected"), (9, "Rejected"), (10, "Rejected"), (11, "Rejected"),
        (12, "Rejected"), (13, "Parsed"), (14, "Rejected"), (15, "Parsed"),
    ]  # fmt: skip
    why = {r.line: (r.reason_code, r.reason) for r in rows if isinstance(r, Rejected)}
    assert why[2] == ("unknown_record", "unknown event type 'order.teleported': 'teleported' is not a status of OrderChanged (order.{placed, cancelled, refunded})")  # fmt: skip
    assert why[4] == ("validation", "missing required field 'total_minor'")
    assert why[5] == ("validation", "field 'action': 'PRODUCT_STOLEN' is not one of PRODUCT_ADDED, PRODUCT_REMOVED, CHECKOUT_STARTED")  # fmt: skip
    assert why[6] == ("validation", "field 'occurred_at': 'last tuesday' is not an ISO-8601 timestamp (e.g. 2024-05-01T12:00:00Z)")  # fmt: skip
    assert why[7][0] == "bad_json" and why[7][1].startswith("not valid JSON: ")
    assert why[8][0] == "unknown_record"
    assert why[8][1].startswith("unknown record 'warehouse': expected a record (PageViewed, ")
    assert "a topic (page_views, cart, orders," in why[8][1]
    assert why[9] == ("bad_json", "JSON value must be an object, got array of 2 items")
    assert why[10] == ("validation", "record 'order.placed' means status PLACED, but field 'status' is string 'CANCELLED'")  # fmt: skip
    assert why[11] == ("bad_key", "customer_id is empty: it is the message key")
    assert why[12][0] == "unknown_record" and why[12][1].startswith("no 'record':")
    assert why[14][0] == "bad_json"
    rejected = {r.line: r for r in rows if isinstance(r, Rejected)}
    assert rejected[2].record == "order.teleported"
    assert orjson.loads(rejected[2].row)["record"] == "order.teleported"  # the line as written
    assert orjson.loads(rejected[5].to_json())["line"] == 5


def test_rejections_have_the_same_reasons_as_live_json_input() -> None:
    cart = ONE_OF_EACH[1]
    for change in ({"action": "NOPE"}, {"quantity": "2"}, {"cart_id": ...}, {"occurred_at": True}):
        line = json_line(cart, "cart", **change)
        (row,) = PARSER.parse_jsonl([line])
        assert isinstance(row, Rejected)
        with pytest.raises(DecodeError) as live:
            CODEC.decode(line, CartChanged)  # what the worker says about the same value
        assert (row.reason_code, row.reason) == (live.value.reason_code, live.value.reason)


def test_bad_csv_rows_have_their_line_and_reason_and_good_rows_still_come_out() -> None:
    cart = ONE_OF_EACH[1]
    feedback = ONE_OF_EACH[4]  # its comment has a quote and a line break: two lines in the file
    rows_in = [
        csv_cells(feedback, "feedback.nps"),  # lines 2-3
        {**csv_cells(cart, "cart"), "action": "PRODUCT_STOLEN"},  # 4
        {**csv_cells(cart, "basket")},  # 5
        {**csv_cells(cart, "cart"), "event_id": ""},  # 6
        {**csv_cells(cart, "cart"), "occurred_at": "31/12/2024"},  # 7
        csv_cells(cart, "cart.product_added"),  # 8
    ]
    text = csv_text(rows_in)
    text += "\ncart,too,few\n"  # 9 blank, 10 short
    text += (
        ",".join(csv_cells(cart, "cart.product_added").get(c, "") for c in ALL_FIELDS) + "\n"
    )  # 11
    rows = list(PARSER.parse_csv(io.StringIO(text)))
    assert [(r.line, type(r).__name__) for r in rows] == [
        (2, "Parsed"), (4, "Rejected"), (5, "Rejected"), (6, "Rejected"), (7, "Rejected"),
        (8, "Parsed"), (10, "Rejected"), (11, "Parsed"),
    ]  # fmt: skip
    assert rows[0].record == feedback  # type: ignore[union-attr]
    why = {r.line: (r.reason_code, r.reason) for r in rows if isinstance(r, Rejected)}
    assert why[4] == ("validation", "field 'action': 'PRODUCT_STOLEN' is not one of PRODUCT_ADDED, PRODUCT_REMOVED, CHECKOUT_STARTED")  # fmt: skip
    assert why[5][0] == "unknown_record" and why[5][1].startswith("unknown record 'basket'")
    assert why[6] == ("validation", "missing required field 'event_id'")
    assert why[7] == ("validation", "field 'occurred_at': '31/12/2024' is not an ISO-8601 timestamp (e.g. 2024-05-01T12:00:00Z)")  # fmt: skip
    assert why[10] == ("bad_csv", f"row has 3 cells, the header has {len(ALL_FIELDS)} columns")
    bad = next(r for r in rows if isinstance(r, Rejected) and r.line == 4)
    assert bad.row["action"] == "PRODUCT_STOLEN" and bad.record == "cart"


def test_a_csv_header_without_a_record_column_is_a_file_error() -> None:
    with pytest.raises(ImportFileError, match="no 'record' column"):
        list(PARSER.parse_csv(io.StringIO("event_id,customer_id\nx,c\n")))
    with pytest.raises(ImportFileError, match="repeats event_id"):
        list(PARSER.parse_csv(io.StringIO("record,event_id,event_id\nx,c,d\n")))
    assert PARSER.unknown_columns(["record", "event_id", "colour"]) == ["colour"]


# --- files ----------------------------------------------------------------------------------
def test_files_formats_counts_bom_and_bad_bytes(tmp_path: Path) -> None:
    cart = ONE_OF_EACH[1]
    jsonl = tmp_path / "history.data"
    jsonl.write_bytes(json_line(cart, "cart") + b"\n" + b'{"record": "cart", "x": "\xff"}\n')
    assert detect_format(jsonl) == "jsonl"
    assert count_rows(jsonl, "jsonl", 1024) == 2
    rows = list(read_rows(jsonl, "jsonl", PARSER))
    assert [(r.line, type(r).__name__) for r in rows] == [(1, "Parsed"), (3, "Rejected")]

    table = tmp_path / "history.txt"
    body = csv_text([csv_cells(cart, "cart"), {**csv_cells(cart, "cart"), "category": "caf\xe9"}])
    table.write_bytes(b"\xef\xbb\xbf" + body.encode().replace("café".encode(), b"caf\xe9"))
    assert detect_format(table) == "csv"
    assert detect_format(table, "jsonl") == "jsonl"
    assert detect_format(tmp_path / "x.csv", "auto") == "csv"  # by name, not opened
    assert count_rows(table, "csv", 1024) == 2
    assert count_rows(table, "csv", 1024, limit_bytes=10) is None
    rows = list(read_rows(table, "csv", PARSER))
    assert isinstance(rows[0], Parsed) and rows[0].record == cart
    assert isinstance(rows[1], Rejected)
    assert (rows[1].line, rows[1].reason) == (3, "row is not valid UTF-8")

    with pytest.raises(ImportFileError, match="no such file"):
        list(read_rows(tmp_path / "missing.csv", "csv", PARSER))
    with pytest.raises(ImportFileError, match="is a directory"):
        detect_format(tmp_path)


# --- publishing -----------------------------------------------------------------------------
class FakePublisher:
    def __init__(self) -> None:
        self.codec = CODEC
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    async def send_raw(self, short_topic: str, key: bytes | None, value: bytes) -> None:
        self.sent.append((short_topic, key, value))


def test_good_rows_are_published_as_avro_keyed_by_customer() -> None:
    settings = Settings(_env_file=None, topic_prefix="t.")  # type: ignore[call-arg]
    events = [replace(e, customer_id=f"c-{i % 3}") for i, e in enumerate(ONE_OF_EACH)]  # type: ignore[type-var]
    lines = [json_line(e, event_type(e)) for e in events]
    lines.insert(3, b"{oops}\n")
    publisher = FakePublisher()
    seen: list[Rejected] = []
    result = ImportResult(Path("h.jsonl"), "jsonl", dry_run=False)
    asyncio.run(publish_rows(PARSER.parse_jsonl(lines), settings, result, publisher, on_reject=seen.append))  # type: ignore[arg-type]  # fmt: skip
    assert [(topic, key) for topic, key, _ in publisher.sent] == [(TOPIC_OF[type(e)], e.customer_id.encode()) for e in events]  # fmt: skip
    assert [CODEC.decode(value, TOPIC_RECORDS[topic]) for topic, _, value in publisher.sent] == events  # fmt: skip
    assert all(value.startswith(b"\xc3\x01") for _, _, value in publisher.sent)
    assert (result.rows, result.good, result.rejected) == (8, 7, 1)
    assert result.published == Counter({settings.topic(TOPIC_OF[type(e)]): 1 for e in events})
    assert [r.line for r in seen] == [4] and [r.line for r in result.first_rejected] == [4]
    assert "line 4: bad_json: not valid JSON" in result.rejections()

    dry = ImportResult(Path("h.jsonl"), "jsonl", dry_run=True)
    asyncio.run(publish_rows(PARSER.parse_jsonl(lines), settings, dry, None))
    assert (dry.rows, dry.good, dry.rejected) == (8, 7, 1)


# --- the command ----------------------------------------------------------------------------
def test_the_command_reports_and_exits_0_1_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cart = ONE_OF_EACH[1]
    ok = tmp_path / "ok.jsonl"
    ok.write_bytes(b"".join(json_line(replace(cart, event_id=f"e{i}"), "cart") for i in range(30)))
    runner = CliRunner()
    done = runner.invoke(main, ["import", str(ok), "--dry-run"])
    assert done.exit_code == 0, done.output
    assert "all 30 rows are valid (dry run)" in done.output
    assert "would publish 30 rows" in done.output

    bad = tmp_path / "bad.csv"
    rows = [csv_cells(replace(cart, event_id=f"e{i}"), "cart" if i % 2 else "kart") for i in range(50)]  # fmt: skip
    bad.write_text(csv_text(rows))
    errors = tmp_path / "errors.jsonl"
    done = runner.invoke(main, ["import", str(bad), "--dry-run", "--errors", str(errors)])
    assert done.exit_code == 1, done.output
    assert "line 2: unknown_record: unknown record 'kart'" in done.output
    assert "line 40: " in done.output and "line 42: " not in done.output  # the first 20 in detail
    assert "... and 5 more rejected rows (all are in" in done.output
    assert "25 of 50 rows were rejected; the other 25 are valid (dry run)" in done.output
    written = [json.loads(line) for line in errors.read_text().splitlines()]
    assert [w["line"] for w in written] == list(range(2, 52, 2))
    assert written[0]["row"]["record"] == "kart"

    for args, message in (
        ([str(tmp_path / "nothing.jsonl")], "no such file"),
        ([str(ok), "--format", "csv"], "no 'record' column"),
    ):
        done = runner.invoke(main, ["import", *args, "--dry-run"])
        assert done.exit_code == 2, done.output
        assert message in done.output


def test_a_huge_line_is_never_held_whole(tmp_path: Path) -> None:
    """A 30 MB line (limit 1 MiB) is rejected while memory stays far below its size."""
    import tracemalloc

    huge = tmp_path / "huge.jsonl"
    with huge.open("wb") as out:
        out.write(b'{"record": "cart", "x": "')
        for _ in range(30):
            out.write(b"x" * 1_000_000)
        out.write(b'"}\n' + json_line(ONE_OF_EACH[1], "cart") + b"\n")
    tracemalloc.start()
    try:
        rows = list(read_rows(huge, "jsonl", PARSER))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [(r.line, type(r).__name__) for r in rows] == [(1, "Rejected"), (2, "Parsed")]
    assert isinstance(rows[0], Rejected) and rows[0].reason_code == "too_large"
    assert len(rows[0].row) < 1000  # only the line's start is kept, for the report
    assert peak < 4 * PARSER.codec.max_value_bytes, peak
