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

Compiled (``journey compile``): the newest version of a flat record is read by ``binary.py``,
which reads only what it reads exactly as fastavro does and leaves everything else (and every
older version) to fastavro, so each value's record or rejection is fastavro's; records are
written by ``binary.py`` from a program compiled per schema (as Python: generated code).
"""

from __future__ import annotations

import base64
import copy
import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import fastavro
import orjson
from fastavro.schema import fingerprint as _fastavro_fingerprint

from schemas.codec import binary
from schemas.codec.base import (
    _HEADER_LEN,
    _VERSION_FILE,
    _WHITESPACE,
    DEFAULT_SCHEMA_DIR,
    REASON_CODES,
    SOE_MAGIC,
    Build,
    Conv,
    DecodeError,
    EncodeError,
    ReasonCode,
    SchemaLoadError,
    _Corrupt,
    _Invalid,
    _Truncated,
)
from schemas.codec.compiled import (
    Write,
    _compile_build,
    _compile_enum_check,
    _compile_reader,
    _compile_unbuild,
    _compile_writer,
    _named,
    _row_program,
)
from schemas.codec.diagnose import _Walker
from schemas.codec.json_input import _compile_conv, _describe, _plural
from schemas.codec.versions import SchemaVersion, _default_record_classes, _snake
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
        "write",
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
        self.write: Write | None = _compile_writer(schema, named)
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

    __slots__ = ("check", "fast", "reader_schema", "record", "version", "writer_schema")

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
        # The newest version of a flat record, compiled (``binary.py``): read without fastavro
        # where the value reads exactly as fastavro reads it, straight into its class; anything
        # else goes to fastavro.
        self.fast = (
            _compile_reader(version.write_schema, _named(version.write_schema), record.cls)
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
        # Schema Registry: readers by schema id.
        self.registry_url: str | None = None
        self._by_schema_id: dict[int, _Reader | DecodeError] = {}
        # What each record's values start with: its single-object header, or the registry
        # framing of its id once ``use_output_ids`` gave one.
        self._headers: dict[str, bytes] = {}
        for full_name, group in sorted(by_name.items()):
            record = _Record(group, classes)
            self._records[full_name] = record
            self._headers[full_name] = record.newest.header
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
        version = rec.newest
        header = self._header(rec)
        if rec.write is not None:
            try:
                return rec.write(record, header)
            except Exception:
                pass
        datum = rec.to_dict(record)
        out = io.BytesIO(header)
        out.seek(len(header))
        try:
            fastavro.schemaless_writer(out, version.write_schema, datum)
        except Exception as exc:
            raise self._encode_failure(rec, version, datum, exc) from None
        return out.getvalue()

    def _header(self, rec: _Record) -> bytes:
        return self._headers[rec.full_name]

    def row_encoder(self, cls: type, fields: Sequence[str]) -> Callable[[Sequence[Any]], bytes]:
        """``encode(cls(**dict(zip(fields, row))))`` for rows of these fields in this order, the
        same bytes without building the instance (the engine's outbox keeps a decision as such a
        row). A row the compiled writer cannot write goes through ``encode``, which writes it
        with fastavro or says what is wrong."""
        rec = self._record(cls)
        schema = rec.newest.write_schema
        program = _row_program(schema, _named(schema), fields)
        names = tuple(fields)

        def encode_instance(row: Sequence[Any]) -> bytes:
            return self.encode(cls(**dict(zip(names, row, strict=True))))

        if program is None:
            return encode_instance
        return binary.row_writer(program, self._headers, rec.full_name, encode_instance)

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

    def decoder(self) -> Callable[[bytes, type | None], Any]:
        """``decode`` for the worker's every message: the same record or ``DecodeError`` for
        every value, with the usual case (single-object encoding of a record's newest version)
        read without an interpreted frame when the codec is compiled (``binary.soe_decoder``)."""
        fast = {
            fingerprint: (reader.record.cls, reader.fast)
            for fingerprint, reader in self._by_fingerprint.items()
            if reader.fast is not None
        }
        if not fast:  # as Python: fastavro reads everything
            return self.decode
        return binary.soe_decoder(fast, self.max_value_bytes, SOE_MAGIC, _HEADER_LEN, self.decode)

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
        if reader.fast is not None:
            try:
                fast = reader.fast(value, start)
            except Exception:  # Unread (or a bug there): fastavro reads it, and says what is wrong
                pass
            else:
                # Already the record. No sentinel to look for (``check``): it reads an enum only
                # into one of the schema's own symbols (any other index is Unread).
                return fast
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
            self._headers[record.full_name] = confluent_frame(schema_id, b"")
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
