"""``journey import``: publish a history file (CSV or JSON Lines) into the input topics.

Each row names its record in a ``record`` column (or field): the record class (``OrderChanged``,
also ``order_changed``), the topic's short name (``orders``) or the analysts' event type
(``order.placed``, ``cart.product_added``, ``page_view``, ...; see :data:`EVENT_TYPES`), which
also sets the record's enum field (``status``, ``action``, ``kind``, ``page_type``). Every other
field is the record's field by name, in the contract's JSON input form. CSV cells are strings:
they are first converted to the JSON types the schema asks for (:class:`RowParser`), then every
row is validated by the codec's JSON path, ``Codec.decode``, exactly as live JSON input is, so a
rejected row has the reason a dead letter would have.

Good rows are published as Avro single-object encoding to their input topic, keyed by
``customer_id``, in file order and without pacing; rows keep their ``occurred_at``. Nothing is
done about the journey clock here: the worker's replay guard records triggers that were due more
than ``JOURNEY_REPLAY_GUARD`` ago as EXPIRED, so importing history sends no message.

Layers: :class:`RowParser` turns rows into :class:`Parsed` or :class:`Rejected` (pure, no I/O),
:func:`read_rows` reads a file with it, :func:`publish_rows` sends, :func:`run_import` does it
all for the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import re
import stat
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, cast

import orjson

from schemas.codec import Codec, DecodeError
from schemas.records import (
    TOPIC_RECORDS,
    CartChanged,
    CustomerChanged,
    FeedbackGiven,
    InputEvent,
    MessageEngagement,
    OrderChanged,
    PageViewed,
    ShipmentChanged,
)
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.ops.console import Progress
    from streams.ops.publish import Publisher

__all__ = [
    "EVENT_TYPES",
    "FORMATS",
    "ImportFailed",
    "ImportFileError",
    "ImportResult",
    "Parsed",
    "Rejected",
    "RowParser",
    "count_rows",
    "detect_format",
    "publish_rows",
    "read_rows",
    "run_import",
]

Format = Literal["csv", "jsonl"]
FORMATS: Final = ("auto", "csv", "jsonl")
RECORD_COLUMN: Final = "record"
# Files up to this size are counted first, so that the progress bar knows the total.
COUNT_LIMIT_BYTES: Final = 512 * 1024 * 1024
# How many rejected rows an ImportResult keeps (all of them go to the ``on_reject`` callback).
KEEP_REJECTED: Final = 20
# Lines are read at most this much at a time, so no line is ever held whole beyond its limit.
_CHUNK: Final = 64 * 1024
# A rejected over-long line keeps this much of its start, to show which line it was.
_PREVIEW_CHARS: Final = 200

# The analysts' event types (``journey.events.event_type``): prefix -> record and the enum
# field the suffix sets, e.g. ``order.placed`` -> OrderChanged with status PLACED. A bare
# prefix (``page_view``, ``order``) names the record only; its enum field must then be given.
EVENT_TYPES: Final[dict[str, tuple[type[InputEvent], str]]] = {
    "page_view": (PageViewed, "page_type"),
    "cart": (CartChanged, "action"),
    "order": (OrderChanged, "status"),
    "shipment": (ShipmentChanged, "status"),
    "feedback": (FeedbackGiven, "kind"),
    "engagement": (MessageEngagement, "action"),
    "customer": (CustomerChanged, "action"),
}

_TOPIC_OF: Final[dict[type[InputEvent], str]] = {cls: t for t, cls in TOPIC_RECORDS.items()}
_INTEGER = re.compile(r"^\s*[+-]?[0-9]+\s*$")
_TRUE: Final = frozenset({"true", "1"})
_FALSE: Final = frozenset({"false", "0"})


class ImportFailed(Exception):
    """The import could not be done (exit code 2); ``str(exc)`` says why."""


class ImportFileError(ImportFailed):
    """The file cannot be imported at all (missing, unreadable, no ``record`` column, ...)."""


# --------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Parsed:
    """A good row: the record and the input topic (short name) it goes to."""

    line: int
    topic: str
    record: InputEvent


@dataclass(frozen=True, slots=True)
class Rejected:
    """A bad row: where it is, why (``reason_code`` as for dead letters), and what it held."""

    line: int
    reason_code: str
    reason: str
    record: str | None = None  # the ``record`` value as written, if any
    row: Any = None  # the JSON line as text, or the CSV cells by column

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "line": self.line,
                "reason_code": self.reason_code,
                "reason": self.reason,
                "record": self.record,
                "row": self.row,
            }
        )

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason_code}: {self.reason}"


Row = Parsed | Rejected


@dataclass(frozen=True, slots=True)
class LongLine:
    """A line longer than the limit (JOURNEY_MAX_VALUE_BYTES): its length and its start only."""

    length: int
    head: bytes


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int | float):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {value[:60]!r}"
    if isinstance(value, list):
        return f"array of {len(value)} items"
    return "object" if isinstance(value, dict) else type(value).__name__


# --------------------------------------------------------------------------------------------
# CSV cells -> JSON values, from the schema's field types
# --------------------------------------------------------------------------------------------

_CellKind = Literal["string", "integer", "time", "date", "boolean", "float", "json"]


def _cell_kind(node: Any, named: dict[str, Any]) -> _CellKind:
    """What a CSV cell of this Avro type must become to be the type's JSON input form."""
    if isinstance(node, list):
        branches = [b for b in node if b != "null"]
        return _cell_kind(branches[0], named) if len(branches) == 1 else "string"
    if isinstance(node, str):
        if node in named:
            return _cell_kind(named[node], named)
        if node in ("int", "long"):
            return "integer"
        if node == "boolean":
            return "boolean"
        if node in ("float", "double"):
            return "float"
        return "string"  # string, bytes (base64), null
    kind = node.get("type")
    if kind in ("record", "array", "map"):
        return "json"
    if kind in ("enum", "fixed"):
        return "string"
    logical = node.get("logicalType")
    if logical == "timestamp-millis":
        return "time"
    if logical == "date":
        return "date"
    return _cell_kind(kind, named)


def _collect_named(node: Any, named: dict[str, Any], namespace: str = "") -> None:
    if isinstance(node, list):
        for branch in node:
            _collect_named(branch, named, namespace)
    elif isinstance(node, dict):
        if node.get("type") in ("record", "enum", "fixed") and "name" in node:
            ns = node.get("namespace", namespace)
            name = str(node["name"])
            named[name] = node
            if ns and "." not in name:
                named[f"{ns}.{name}"] = node
            namespace = ns
        for key in ("type", "items", "values"):
            if key in node and not isinstance(node[key], str | type(None)):
                _collect_named(node[key], named, namespace)
        for f in node.get("fields", []):
            _collect_named(f.get("type"), named, namespace)


def _cell_value(kind: _CellKind, name: str, cell: str) -> Any:
    """The JSON value of a non-empty cell; a cell that does not convert stays a string, so the
    codec rejects it with its usual reason (``expected int, got string 'x'``)."""
    if kind == "string":
        return cell
    if kind in ("integer", "time", "date"):
        return int(cell) if _INTEGER.match(cell) else cell
    if kind == "boolean":
        lowered = cell.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        return cell
    if kind == "float":
        try:
            return float(cell)
        except ValueError:
            return cell
    try:
        return orjson.loads(cell)
    except orjson.JSONDecodeError as exc:
        raise _RowError("validation", f"field '{name}': cell is not valid JSON ({exc})") from None


class _RowError(Exception):
    def __init__(self, reason_code: str, reason: str) -> None:
        super().__init__(reason)
        self.reason_code = reason_code
        self.reason = reason


# --------------------------------------------------------------------------------------------
# The parser
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    cls: type[InputEvent]
    topic: str
    implied: tuple[str, str] | None  # (enum field, symbol) set by an event type


class RowParser:
    """Rows (JSON objects or CSV cells) -> :class:`Parsed` or :class:`Rejected`."""

    def __init__(self, codec: Codec | None = None) -> None:
        self.codec = codec or Codec.load()
        self._targets: dict[str, _Target] = {}
        self._cells: dict[type[InputEvent], dict[str, _CellKind]] = {}
        self.fields: set[str] = {RECORD_COLUMN}  # every field of every input record
        for topic, cls in TOPIC_RECORDS.items():
            target = _Target(cls, topic, None)
            name = self.codec.record_name(cls)
            for alias in (name, re.sub(r"(?<!^)(?=[A-Z])", "_", name), topic):
                self._targets[alias.lower()] = target
            schema = self.codec.schema_for(cls)
            named: dict[str, Any] = {}
            _collect_named(schema, named)
            kinds = {f["name"]: _cell_kind(f["type"], named) for f in schema["fields"]}
            self._cells[cls] = kinds
            self.fields.update(kinds)
        self.enums: dict[tuple[type[InputEvent], str], tuple[str, ...]] = {}
        for prefix, (cls, enum_field) in EVENT_TYPES.items():
            self._targets[prefix] = _Target(cls, _TOPIC_OF[cls], None)
            (spec,) = [f for f in self.codec.schema_for(cls)["fields"] if f["name"] == enum_field]
            symbols = tuple(str(s) for s in spec["type"]["symbols"])
            self.enums[(cls, enum_field)] = symbols
            for symbol in symbols:
                implied = (enum_field, symbol)
                self._targets[f"{prefix}.{symbol.lower()}"] = _Target(cls, _TOPIC_OF[cls], implied)
        records = ", ".join(self.codec.record_name(c) for c in _TOPIC_OF)
        self._accepted = (
            f"expected a record ({records}), a topic ({', '.join(TOPIC_RECORDS)}) or an event "
            f"type ({', '.join(EVENT_TYPES)}, optionally with its enum value: order.placed, "
            "cart.product_added, page_view.product, ...)"
        )

    # --- the record column ---------------------------------------------------------------------
    def target(self, value: Any) -> _Target:
        """The record a ``record`` value names, or a _RowError saying what is accepted."""
        if value is None:
            raise _RowError(
                "unknown_record",
                f"no '{RECORD_COLUMN}': name the record (OrderChanged), its topic (orders) or "
                "the event type (order.placed)",
            )
        if not isinstance(value, str):
            raise _RowError(
                "unknown_record", f"'{RECORD_COLUMN}' must be a string, got {_describe(value)}"
            )
        key = value.strip().lower()
        found = self._targets.get(key)
        if found is not None:
            return found
        prefix, dot, suffix = key.partition(".")
        if dot and prefix in EVENT_TYPES:
            cls, enum_field = EVENT_TYPES[prefix]
            symbols = ", ".join(s.lower() for s in self.enums[(cls, enum_field)])
            raise _RowError(
                "unknown_record",
                f"unknown event type {value!r}: {suffix!r} is not a {enum_field} of "
                f"{cls.__name__} ({prefix}.{{{symbols}}})",
            )
        raise _RowError("unknown_record", f"unknown record {value!r}: {self._accepted}")

    # --- one row -------------------------------------------------------------------------------
    def parse_object(self, line: int, data: dict[str, Any], row: Any = None) -> Row:
        """A row as a dict of JSON values (a JSONL line, or CSV cells already converted)."""
        given = data.get(RECORD_COLUMN)
        shown = given if isinstance(given, str) else None
        try:
            target = self.target(given)
            return self._validate(line, target, data)
        except _RowError as exc:
            return Rejected(line, exc.reason_code, exc.reason, shown, row)

    def _validate(self, line: int, target: _Target, data: dict[str, Any]) -> Row:
        values = {k: v for k, v in data.items() if k != RECORD_COLUMN}
        if target.implied is not None:
            enum_field, symbol = target.implied
            current = values.get(enum_field)
            if current is None:
                values[enum_field] = symbol
            elif current != symbol:
                raise _RowError(
                    "validation",
                    f"record {data[RECORD_COLUMN]!r} means {enum_field} {symbol}, but field "
                    f"'{enum_field}' is {_describe(current)}",
                )
        try:
            record = cast(InputEvent, self.codec.decode(orjson.dumps(values), target.cls))
        except DecodeError as exc:
            raise _RowError(exc.reason_code, exc.reason) from None
        if not record.customer_id:
            raise _RowError("bad_key", "customer_id is empty: it is the message key")
        return Parsed(line, target.topic, record)

    def parse_json_line(self, line: int, raw: bytes | LongLine) -> Row | None:
        """One JSONL line; ``None`` for a blank line."""
        if isinstance(raw, LongLine):
            limit = self.codec.max_value_bytes
            head = raw.head.decode("utf-8", errors="replace")[:_PREVIEW_CHARS]
            return Rejected(
                line,
                "too_large",
                f"line is {raw.length:,} bytes, the limit is {limit} (JOURNEY_MAX_VALUE_BYTES)",
                None,
                head + "...",
            )
        if not raw.strip():
            return None
        text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            where = f" at column {exc.colno}" if exc.lineno == 1 else ""
            return Rejected(line, "bad_json", f"not valid JSON: {exc.msg}{where}", None, text)
        if not isinstance(data, dict):
            return Rejected(
                line, "bad_json", f"JSON value must be an object, got {_describe(data)}", None, text
            )
        return self.parse_object(line, data, text)

    def parse_cells(self, line: int, cells: dict[str, str]) -> Row:
        """One CSV row by column name; empty cells are absent fields."""
        given = cells.get(RECORD_COLUMN) or None
        try:
            target = self.target(given)
            kinds = self._cells[target.cls]
            data: dict[str, Any] = {RECORD_COLUMN: given}
            for name, cell in cells.items():
                if name == RECORD_COLUMN or cell == "":
                    continue
                kind = kinds.get(name)
                data[name] = cell if kind is None else _cell_value(kind, name, cell)
            return self._validate(line, target, data)
        except _RowError as exc:
            return Rejected(line, exc.reason_code, exc.reason, given, cells)

    # --- whole inputs --------------------------------------------------------------------------
    def parse_jsonl(self, lines: Iterable[bytes | LongLine]) -> Iterator[Row]:
        for number, raw in enumerate(lines, start=1):
            row = self.parse_json_line(number, raw)
            if row is not None:
                yield row

    def parse_csv(self, text: Iterable[str]) -> Iterator[Row]:
        """CSV with a header row (``record`` and field names); a text stream or lines.

        Raises :class:`ImportFileError` for a header the rows cannot be read with, or text that
        is not CSV (a field over ``csv.field_size_limit()``, as from a quote left open).
        """
        reader = csv.reader(iter(text))
        header: list[str] | None = None
        last = 0
        for cells in _csv_rows(reader):
            line, last = last + 1, reader.line_num
            if header is None:
                if not any(c.strip() for c in cells):
                    continue
                header = self.check_header(line, cells)
                continue
            if not any(cells):
                continue  # a blank line
            if _not_utf8(cells):
                yield Rejected(line, "bad_csv", "row is not valid UTF-8", None, _repair(cells))
            elif len(cells) != len(header):
                yield Rejected(
                    line,
                    "bad_csv",
                    f"row has {len(cells)} cells, the header has {len(header)} columns",
                    None,
                    cells,
                )
            else:
                yield self.parse_cells(line, dict(zip(header, cells, strict=True)))

    def check_header(self, line: int, cells: list[str]) -> list[str]:
        """The column names; ImportFileError if rows cannot be read with this header."""
        header = [c.strip() for c in cells]
        if _not_utf8(header):
            raise ImportFileError(f"line {line}: the CSV header is not valid UTF-8")
        if RECORD_COLUMN not in header:
            raise ImportFileError(
                f"line {line}: the CSV header has no '{RECORD_COLUMN}' column (columns: "
                f"{', '.join(header)}); every row must name its record, e.g. order.placed"
            )
        repeated = sorted({c for c in header if header.count(c) > 1})
        if repeated:
            raise ImportFileError(f"line {line}: CSV header repeats {', '.join(repeated)}")
        return header

    def unknown_columns(self, header: Iterable[str]) -> list[str]:
        """Columns that are no field of any input record (they are ignored, as the codec does)."""
        return sorted(c for c in header if c not in self.fields)


def _csv_rows(reader: Any) -> Iterator[list[str]]:
    """The rows of a ``csv.reader``; ImportFileError (with the line) where the text is not CSV.

    After a csv.Error the reader cannot be trusted to resynchronise (it may be inside a quoted
    field), so the file stops there rather than turning the rest into wrong rows.
    """
    start = reader.line_num + 1
    while True:
        try:
            cells: list[str] = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            problem = str(exc)
            if "field limit" in problem:
                problem = (
                    f"a field is longer than {csv.field_size_limit():,} characters "
                    "(is a quote left open?)"
                )
            raise ImportFileError(
                f"line {start}: not valid CSV: {problem}; nothing from this line on was read"
            ) from None
        start = reader.line_num + 1
        yield cells


def _not_utf8(cells: list[str]) -> bool:
    try:
        for cell in cells:
            cell.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _repair(cells: list[str]) -> list[str]:
    return [c.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for c in cells]


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def detect_format(path: Path, fmt: str = "auto") -> Format:
    """``csv`` or ``jsonl``: as given, else by the file name, else by the first character."""
    if fmt in ("csv", "jsonl"):
        return cast(Format, fmt)
    if fmt != "auto":
        raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    with _open_binary(path) as stream:
        head = stream.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return "jsonl" if head.startswith(b"{") else "csv"


def _open_binary(path: Path) -> Any:
    """A regular file, opened for reading; ImportFileError for anything else.

    Devices, pipes and sockets are refused: the file is read more than once (format, header,
    row count, rows), which would silently lose a pipe's first rows, and ``/dev/zero`` never ends.
    """
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise ImportFileError(f"{path} is a directory, not a file")
        if not stat.S_ISREG(mode):
            raise ImportFileError(
                f"{path} is not a regular file (a device, pipe or socket): save it to a file first"
            )
        return path.open("rb")
    except FileNotFoundError:
        raise ImportFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise ImportFileError(f"cannot read {path}: {exc.strerror or exc}") from None


def bounded_lines(stream: Any, limit: int) -> Iterator[bytes | LongLine]:
    """The lines of a binary stream; a line longer than ``limit`` bytes (its line break not
    counted) is read past in chunks and given as a :class:`LongLine`, never held whole."""
    while True:
        raw: bytes = stream.readline(limit + 2)  # room for the line's own "\r\n"
        if not raw:
            return
        if len(raw.rstrip(b"\r\n")) <= limit:
            yield raw
            continue
        length, head = len(raw), raw[: _PREVIEW_CHARS * 4]
        while not raw.endswith(b"\n"):
            raw = stream.readline(_CHUNK)
            if not raw:
                break
            length += len(raw)
        yield LongLine(length, head)


def count_rows(
    path: Path, fmt: Format, line_limit: int, limit_bytes: int = COUNT_LIMIT_BYTES
) -> int | None:
    """Non-blank lines (minus the CSV header): the progress total. ``None`` for big files."""
    try:
        if path.stat().st_size > limit_bytes:
            return None
    except OSError:
        return None
    count = 0
    with _open_binary(path) as stream:
        for raw in bounded_lines(stream, line_limit):
            if isinstance(raw, LongLine) or raw.strip():
                count += 1
    return max(count - 1, 0) if fmt == "csv" else count


def read_rows(path: Path, fmt: Format, parser: RowParser) -> Iterator[Row]:
    """The rows of a file, in file order; ImportFileError if it cannot be read at all.

    A JSONL line longer than JOURNEY_MAX_VALUE_BYTES is a rejected row (``too_large``, as the
    codec says of a value that size); in CSV, where a quoted field may span lines, such a line
    stops the file (ImportFileError). Either way it is never read into memory whole.
    """
    stream = _open_binary(path)
    try:
        lines = bounded_lines(stream, parser.codec.max_value_bytes)
        if fmt == "jsonl":
            yield from parser.parse_jsonl(lines)
            return
        yield from parser.parse_csv(_TextLines(lines, parser.codec.max_value_bytes))
    except OSError as exc:
        raise ImportFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        stream.close()


class _TextLines:
    """Binary lines -> text (UTF-8, a BOM dropped); bad bytes become surrogates that
    ``parse_csv`` reports per row instead of failing the whole file."""

    def __init__(self, lines: Iterable[bytes | LongLine], limit: int) -> None:
        self._lines = lines
        self._limit = limit
        self._first = True

    def __iter__(self) -> Iterator[str]:
        for number, raw in enumerate(self._lines, start=1):
            if isinstance(raw, LongLine):
                raise ImportFileError(
                    f"line {number} is {raw.length:,} bytes, the limit is {self._limit} "
                    "(JOURNEY_MAX_VALUE_BYTES): not a CSV file?"
                )
            if self._first:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
                self._first = False
            yield raw.decode("utf-8", "surrogateescape")


def csv_header(path: Path, line_limit: int) -> tuple[int, list[str]] | None:
    """The CSV header's line and cells (``None`` for a file without any)."""
    with _open_binary(path) as stream:
        reader = csv.reader(_TextLines(bounded_lines(stream, line_limit), line_limit))
        last = 0
        for cells in _csv_rows(reader):
            line, last = last + 1, reader.line_num
            if any(c.strip() for c in cells):
                return line, cells
    return None


# --------------------------------------------------------------------------------------------
# Publishing
# --------------------------------------------------------------------------------------------


@dataclass
class ImportResult:
    path: Path
    fmt: Format
    dry_run: bool
    rows: int = 0  # rows read: published (or publishable) + rejected; blank lines not counted
    published: Counter[str] = field(default_factory=Counter)  # full topic name -> rows
    rejected: int = 0
    first_rejected: list[Rejected] = field(default_factory=list)  # the first KEEP_REJECTED
    seconds: float = 0.0
    unknown_columns: list[str] = field(default_factory=list)

    @property
    def good(self) -> int:
        return sum(self.published.values())

    def summary(self) -> str:
        verb = "would publish" if self.dry_run else "published"
        rate = self.rows / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"{'read':<14}{_rows(self.rows)} from {self.path} ({self.fmt}) in "
            f"{self.seconds:,.1f}s ({rate:,.0f} rows/s)",
            f"{verb:<14}{_rows(self.good)}" + (" (dry run: nothing sent)" if self.dry_run else ""),
        ]
        lines += [f"  {topic:<42}{n:>10,}" for topic, n in sorted(self.published.items())]
        lines.append(f"{'rejected':<14}{_rows(self.rejected)}")
        if self.unknown_columns:
            lines.append(
                f"{'ignored':<14}columns that are no field of any record: "
                f"{', '.join(self.unknown_columns)}"
            )
        return "\n".join(lines)

    def rejections(self, errors_path: Path | None = None) -> str:
        """The first rejected rows in detail, and how many more there are."""
        lines = [f"  {row}" for row in self.first_rejected]
        more = self.rejected - len(self.first_rejected)
        if more > 0:
            where = f"all are in {errors_path}" if errors_path else "--errors FILE lists all"
            lines.append(f"  ... and {more:,} more rejected rows ({where})")
        return "\n".join(lines)

    def verdict(self) -> str:
        """One line on what happened to the rows, for the end of the output."""
        done = "are valid (dry run)" if self.dry_run else "were published"
        if not self.rejected:
            return f"all {self.rows:,} rows {done}"
        text = (
            f"{self.rejected:,} of {self.rows:,} rows were rejected; the other {self.good:,} {done}"
        )
        if not self.good:
            text += f" (is this {self.fmt}? --format csv|jsonl chooses)"
        return text


def _rows(n: int) -> str:
    return f"{n:,} row" if n == 1 else f"{n:,} rows"


async def publish_rows(
    rows: Iterable[Row],
    settings: Settings,
    result: ImportResult,
    publisher: Publisher | None,
    *,
    progress: Progress | None = None,
    on_reject: Callable[[Rejected], None] | None = None,
) -> ImportResult:
    """Send the good rows (``publisher=None``: only count them), collect the bad ones."""
    codec = publisher.codec if publisher is not None else None
    since_yield = 0
    for row in rows:
        result.rows += 1
        if isinstance(row, Rejected):
            result.rejected += 1
            if len(result.first_rejected) < KEEP_REJECTED:
                result.first_rejected.append(row)
            if on_reject is not None:
                on_reject(row)
        else:
            if publisher is not None and codec is not None:
                key = row.record.customer_id.encode()
                await publisher.send_raw(row.topic, key, codec.encode(row.record))
            result.published[settings.topic(row.topic)] += 1
        since_yield += 1
        if since_yield >= 1000:
            await asyncio.sleep(0)  # let the producer's sender have a turn
            since_yield = 0
        if progress is not None:
            progress.update(result.rows, f"{result.rejected:,} rejected")
    return result


async def run_import(
    settings: Settings,
    path: Path,
    fmt: str = "auto",
    *,
    dry_run: bool = False,
    progress: Callable[[int | None], Progress] | None = None,
    errors_path: Path | None = None,
    on_reject: Callable[[Rejected], None] | None = None,
    codec: Codec | None = None,
) -> ImportResult:
    """Import one file: read, validate, publish (unless ``dry_run``), and say what happened.

    ``progress`` builds the display from the row total (``None`` when not counted);
    ``errors_path`` receives every rejected row as a JSON line. Raises ImportFailed (also
    ImportFileError), BrokerUnavailable or TopicLayoutError; the file, the topics and the broker
    are checked before anything is sent.
    """
    from aiokafka.errors import KafkaError

    from streams.ops.publish import Publisher
    from streams.ops.topics import verify_layout

    started = time.monotonic()
    kind = detect_format(path, fmt)
    parser = RowParser(codec or Codec.load(max_value_bytes=settings.max_value_bytes))
    result = ImportResult(path, kind, dry_run)
    if kind == "csv":
        header = csv_header(path, parser.codec.max_value_bytes)
        if header is not None:  # a header the rows cannot be read with fails before any send
            result.unknown_columns = parser.unknown_columns(parser.check_header(*header))
    total = count_rows(path, kind, parser.codec.max_value_bytes)
    publisher: Publisher | None = None
    if not dry_run:
        await verify_layout(settings)  # a missing topic would be auto-created with 1 partition
        publisher = Publisher(settings, parser.codec)
        await publisher.start()
    errors_out: Any = None
    try:
        if errors_path is not None:
            try:
                errors_out = errors_path.open("wb")
            except OSError as exc:
                raise ImportFailed(f"cannot write {errors_path}: {exc.strerror or exc}") from None

        def reject(row: Rejected) -> None:
            if errors_out is not None:
                errors_out.write(row.to_json() + b"\n")
            if on_reject is not None:
                on_reject(row)

        display = progress(total) if progress is not None else None
        try:
            await publish_rows(
                read_rows(path, kind, parser), settings, result, publisher,
                progress=display, on_reject=reject,
            )  # fmt: skip
            if publisher is not None:
                await publisher.close()  # every row is acknowledged by the broker
                publisher = None
        except KafkaError as exc:
            raise ImportFailed(
                f"sending to Kafka failed after {result.rows:,} rows were read: {exc}. What was "
                "sent stays; importing the file again is safe (rows are deduplicated by event_id)"
            ) from exc
        if display is not None:
            display.finish(result.rows, f"{result.rejected:,} rejected")
    finally:
        if publisher is not None:
            with contextlib.suppress(Exception):
                await publisher.close()
        if errors_out is not None:
            errors_out.close()
        result.seconds = time.monotonic() - started
    return result
