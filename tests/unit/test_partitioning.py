"""The key's partition: Kafka's default partitioner, enforced on every input record."""

from __future__ import annotations

import logging

import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import Codec
from schemas.records import FeedbackGiven
from streams.runtime.acks import Acks
from streams.runtime.ingest import SOURCE_HEADER, Ingest, key_partition
from streams.runtime.outputs import Outputs
from streams.runtime.partitioner import murmur2
from streams.settings import Settings
from tests.unit.test_engine import FakeBroker

# Kafka's own test vectors for Utils.murmur2 (clients/.../utils/UtilsTest.java).
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize("key", sorted(JAVA_MURMUR2))
@pytest.mark.parametrize("partitions", [1, 3, 12, 100])
def test_key_partition_is_the_java_clients_default(key: bytes, partitions: int) -> None:
    # Java: Utils.toPositive(Utils.murmur2(key)) % numPartitions
    assert key_partition(key, partitions) == (JAVA_MURMUR2[key] & 0x7FFFFFFF) % partitions


@settings(max_examples=2_000, deadline=None)
@given(key=st.binary(max_size=80))
def test_murmur2_is_aiokafkas_for_any_key(key: bytes) -> None:
    """Compiled, ``partitioner.murmur2`` is C of its own: every length (and so every tail of
    0-3 bytes), every byte value, against aiokafka's (the Java client's, by the vectors above)."""
    assert murmur2(key) == aiokafka_murmur2(key)
    assert key_partition(key, 12) == (aiokafka_murmur2(key) & 0x7FFFFFFF) % 12


def test_murmur2_runs_compiled_in_the_compiled_build() -> None:
    from streams import compiled
    from streams.runtime import partitioner

    loaded = "streams.runtime.partitioner" in compiled.loaded_compiled()
    assert loaded == partitioner.COMPILED
    assert murmur2(bytearray(b"21")) == JAVA_MURMUR2[b"21"] & 0xFFFFFFFF  # not bytes: aiokafka's


async def test_a_record_on_another_partition_than_its_key_is_rerouted_not_applied(
    caplog: pytest.LogCaptureFixture,
) -> None:
    codec = Codec.load()
    settings = Settings(_env_file=None, partitions=3)  # type: ignore[call-arg]
    broker = FakeBroker()
    ingest = Ingest(settings, codec, Outputs(settings, broker.produce, Acks()), partitions=3)
    record = FeedbackGiven("e1", "c-cart", 1_000, "NPS", 10)
    key, value = b"c-cart", codec.encode(record)
    right = key_partition(key, 3)
    wrong = (right + 1) % 3
    topic = settings.topic("feedback")

    with caplog.at_level(logging.WARNING, logger="streams.runtime.ingest"):
        assert await ingest.handle(topic, wrong, 5, key, value, []) is None
        assert await ingest.handle(topic, wrong, 6, key, value, []) is None
    assert broker.records == [(settings.topic("repartition"), key, value)] * 2
    assert broker.headers == [[(SOURCE_HEADER, b"feedback")]] * 2  # no dead letter either
    assert ingest.misrouted == {topic: 2}
    assert ingest.repartitioned == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # rate-limited: once per topic and interval
    assert topic in warnings[0] and "murmur2_random" in warnings[0]
    # On its key's partition the same record is the journey's.
    assert await ingest.handle(topic, right, 7, key, value, []) == record
    assert ingest.event_time(topic, value, []) == 1_000
    assert ingest.event_time(topic, b"garbage", []) is None


async def test_a_record_decoded_for_the_merge_is_not_decoded_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    codec = Codec.load()
    settings = Settings(_env_file=None, partitions=3)  # type: ignore[call-arg]
    ingest = Ingest(settings, codec, Outputs(settings, FakeBroker().produce, Acks()), partitions=3)
    record = FeedbackGiven("e1", "c-cart", 1_000, "NPS", 10)
    key, value = b"c-cart", codec.encode(record)
    topic, partition = settings.topic("feedback"), key_partition(key, 3)
    decodes = 0
    decode = ingest._decode

    def counting(*args: object, **kwargs: object) -> object:
        nonlocal decodes
        decodes += 1
        return decode(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ingest, "_decode", counting)
    assert ingest.event_time(topic, value, [], partition, 7) == 1_000
    assert await ingest.handle(topic, partition, 7, key, value, []) == record
    assert decodes == 1
    # Another message (or one the merge dropped at a rebalance) is decoded as before.
    assert ingest.event_time(topic, value, [], partition, 8) == 1_000
    ingest.forget_decoded()
    assert await ingest.handle(topic, partition, 8, key, value, []) == record
    assert await ingest.handle(topic, partition, 9, key, value, []) == record
    assert decodes == 4
