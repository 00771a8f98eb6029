"""The compiled reader (``schemas/codec/binary.py``) decides nothing on its own: every value, valid
or not, gets from the codec what fastavro gives it (the same record, or a dead letter with the
same reason and message). Attacked with what a careless or hostile producer sends: truncated
values, corrupted bytes, lengths and counts past the end, overlong varints, bad UTF-8, stray
bytes after the record, random bodies behind a valid header."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import Codec, DecodeError
from streams import compiled
from streams.ops.simulator import SimulationConfig, generate
from tests.unit.test_codec_writer import value_for

FAST = Codec.load()
SLOW = Codec.load()
for _reader in SLOW._by_fingerprint.values():
    _reader.fast = None
READERS = {r.record.name: r for r in FAST._by_fingerprint.values() if r.version is r.record.newest}


def outcome(codec: Codec, value: Any) -> tuple[Any, ...]:
    try:
        return ("record", codec.decode(value))
    except DecodeError as exc:
        return ("dead letter", exc.reason, str(exc))


def assert_same(value: Any) -> tuple[Any, ...]:
    fast = outcome(FAST, value)
    assert fast == outcome(SLOW, value), value
    return fast


def simulated_values() -> list[bytes]:
    """Encoded input events of the simulator, a few hundred of each record."""
    config = SimulationConfig(seed=7, bad_event_rate=0.0, start_ms=1_780_000_000_000)
    per_kind: dict[str, list[bytes]] = {}
    for event in itertools.islice(generate(config), 30_000):
        if event.record is not None:
            values = per_kind.setdefault(type(event.record).__name__, [])
            if len(values) < 300:
                values.append(FAST.encode(event.record))
    return [value for values in per_kind.values() for value in values]


VALUES = simulated_values()


def test_flat_records_have_a_compiled_reader_when_compiled() -> None:
    """So that the comparisons below compare something: each input record but ``OrderChanged``
    (its items are an array of records: fastavro reads it) is read by the compiled reader in
    the compiled run, and none is as Python (fastavro reads everything)."""
    flat = {name for name in READERS if name != "OrderChanged"}
    has_fast = {name for name, reader in READERS.items() if reader.fast is not None}
    if compiled.disabled() or "schemas.codec.binary" not in compiled.loaded_compiled():
        assert has_fast == set()
    else:
        assert has_fast == flat


def test_valid_values_read_as_fastavro_reads_them() -> None:
    for value in VALUES:
        assert assert_same(value)[0] == "record"
    for name in READERS:
        rec = FAST._record(name)
        if rec.write is None:  # not flat (OrderChanged): value_for makes flat records only
            continue
        schema = rec.newest.write_schema
        named = schema.get("__named_schemas", {})
        for kind in ("small", "big", "long"):
            datum = {f["name"]: value_for(f["type"], named, kind) for f in schema["fields"]}
            assert assert_same(FAST.encode(rec.build(datum)))[0] == "record"


def test_every_truncation_and_trailing_bytes_get_fastavros_answer() -> None:
    for value in VALUES[::7]:
        for end in range(len(value)):
            assert_same(value[:end])
        for tail in (b"\x00", b"\x01", b"\xff\xff", b"x" * 20):
            assert assert_same(value + tail)[0] == "dead letter"


def test_corrupted_bytes_get_fastavros_answer() -> None:
    rng = random.Random(13)
    for value in VALUES[::5]:
        for at in range(10, len(value)):  # the body, behind the header
            for byte in (0x00, 0x01, 0x02, 0x7F, 0x80, 0xFF, rng.randrange(256)):
                assert_same(value[:at] + bytes((byte,)) + value[at + 1 :])


@pytest.mark.parametrize(
    "body",
    [
        b"\xff" * 11,  # a varint past 64 bits
        b"\x80" * 9 + b"\x02",  # 64 bits and one more
        b"\x80" * 9 + b"\x01",  # the largest 64-bit varint
        b"\x01",  # a length below zero
        b"\xfe\xff\xff\xff\x0f",  # a length far past the end
        b"\x04\xed\xa0",  # a surrogate's UTF-8, cut
        b"\x06\xed\xa0\x80",  # a surrogate's UTF-8 (not valid UTF-8)
        b"\x04\xc3\x28",  # an invalid continuation byte
    ],
)
def test_hostile_bodies_behind_each_header_get_fastavros_answer(body: bytes) -> None:
    for reader in READERS.values():
        header = reader.version.header
        assert_same(header + body)
        assert_same(header + b"\x02a" + body)  # behind a first string field


@settings(max_examples=400, deadline=None)
@given(name=st.sampled_from(sorted(READERS)), body=st.binary(max_size=120))
def test_random_bodies_behind_a_valid_header_get_fastavros_answer(name: str, body: bytes) -> None:
    assert_same(READERS[name].version.header + body)


def test_the_compiled_reader_reads_bytes_only() -> None:
    """It reads the value's buffer in place: anything but ``bytes`` is left to fastavro."""
    from schemas.codec.binary import Unread

    reader = READERS["PageViewed"]
    if reader.fast is None:
        pytest.skip("as Python, fastavro reads everything")
    value = next(v for v in VALUES if v.startswith(reader.version.header))
    assert SLOW.decode(value) == reader.fast(value, 10)
    for other in (bytearray(value), memoryview(value), value.decode("latin-1"), None):
        with pytest.raises(Unread):
            reader.fast(other, 10)
    for start in (-1, len(value) + 1):
        with pytest.raises(Unread):
            reader.fast(value, start)


def test_registry_framed_values_get_fastavros_answer() -> None:
    """A registry schema identical to our newest version is read by that version's reader (the
    compiled one too), behind the 5-byte Confluent framing."""
    import json

    from schemas.registry import confluent_frame

    codecs = (Codec.load(), Codec.load())
    for reader in codecs[1]._by_fingerprint.values():
        reader.fast = None
    rec = FAST._record("PageViewed")
    for codec in codecs:
        codec.add_registry_schema(41, json.dumps(rec.newest.schema))
    value = next(v for v in VALUES if v.startswith(rec.newest.header))
    framed = confluent_frame(41, value[10:])
    record = codecs[1].decode(framed)
    assert codecs[0].decode(framed) == record == FAST.decode(value)
    for mutated in (
        *(framed[:end] for end in range(5, len(framed))),
        *(framed[:at] + b"\xff" + framed[at + 1 :] for at in range(5, len(framed))),
        framed + b"\x00",
    ):
        answers = []
        for codec in codecs:
            try:
                answers.append(("record", codec.decode(mutated)))
            except DecodeError as exc:
                answers.append(("dead letter", exc.reason, str(exc)))
        assert answers[0] == answers[1], mutated


def test_the_workers_decoder_gives_decode_s_answer_for_every_value() -> None:
    """``Codec.decoder()`` (what the worker's ingest calls for every message: the usual case in
    compiled code, anything else through ``decode``) gives every value, for the record the topic
    expects and for another one, the record or dead letter ``decode`` gives it."""
    decoder = FAST.decoder()
    classes = sorted({r.record.cls for r in READERS.values()}, key=lambda c: c.__name__)

    def answer(decode: Any, value: bytes, expected: type) -> tuple[Any, ...]:
        try:
            return ("record", decode(value, expected))
        except DecodeError as exc:
            return ("dead letter", exc.reason, str(exc))

    small = FAST.max_value_bytes
    cases = [b"", b"{}", b'{"event_id": 1}', b"\xc3\x01", b"\xc3\x01" + b"\x00" * 8, b"\x00\x00"]
    for value in VALUES[::3]:
        cases += [value, value[:-1], value + b"\x00", value[:12] + b"\xff" + value[13:]]
    cases.append(VALUES[0] + b"\x00" * small)  # too large
    records = 0
    for value, expected in itertools.product(cases, classes):
        got = answer(decoder, value, expected)
        assert got == answer(SLOW.decode, value, expected), (value, expected)
        records += got[0] == "record"
    assert records >= len(VALUES[::3])  # each valid value read as its own record
