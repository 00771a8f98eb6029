"""Dead-letter tools: list and explain what failed, and replay it once the cause is fixed.

The dead-letter topic is the record of truth: each ``DeadLetter`` carries the original key and
bytes, where they came from (topic, partition, offset) and why they were refused. Replaying
publishes the original key and bytes to their source topic again, so a replayed event goes
through exactly the same path as a fresh one (decode, validation, re-keying, the journey). Only
letters from an input topic that now decode and validate as that topic's record are replayed:
anyone who can write to the dead-letter topic could otherwise publish anything anywhere.
An event replayed twice is harmless for the journey: its ``event_id`` is processed once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError

from schemas.codec import Codec, DecodeError
from schemas.records import TOPIC_RECORDS, DeadLetter
from streams.ops.publish import Publisher
from streams.ops.topics import partition_counts, unreachable
from streams.runtime.ingest import semantic_problem
from streams.schema_registry import resolver_for
from streams.settings import Settings

# What an operator can do about each kind of failure.
ADVICE = {
    "bad_key": "The producer keyed the message with bytes that are not UTF-8. Fix the producer; "
    "the event itself may be fine (replay re-keys it by its customer_id).",
    "too_large": "The value exceeds JOURNEY_MAX_VALUE_BYTES. Raise the limit if such events are "
    "legitimate, restart the workers, then replay (values over 512 KiB are kept only in part "
    "and must be sent again by the producer).",
    "empty": "The value was empty (a tombstone?). Producers must not send empty values.",
    "bad_header": "Neither Avro single-object encoding (C3 01 ...) nor JSON. Fix the producer.",
    "unknown_fingerprint": "Avro written with a schema version this pipeline does not know. "
    "Release the schema (schemas/<record>/vN.avsc), deploy, then replay.",
    "wrong_record": "The record type does not belong on this topic. Fix the producer's routing.",
    "bad_avro": "The Avro body is corrupt or truncated. Fix the producer.",
    "bad_json": "The JSON is not valid JSON. Fix the producer.",
    "validation": "The event breaks the contract (see the reason). Fix the producer; replay if "
    "the pipeline's rule was what changed.",
    "unknown_source": "A message on an internal topic without its source header.",
    "no_registry": "Avro in the Confluent Schema Registry framing (0x00 + schema id), and this "
    "pipeline has no registry configured. Set JOURNEY_SCHEMA_REGISTRY_URL (and credentials), "
    "restart the workers, then replay (docs/producing.md).",
    "unknown_schema_id": "The registry does not have the schema id the value names: the producer "
    "used another registry, or the schema was deleted. Fix the producer's registry URL, then "
    "replay.",
    "incompatible_schema": "The producer's registered schema cannot be read as our schema (the "
    "reason names the field). Align the producer's schema with schemas/<record>/, then replay.",
}


@dataclass(frozen=True)
class Letter:
    """A dead letter, and where it sits in the dead-letter topic."""

    letter: DeadLetter
    partition: int
    offset: int

    @property
    def id(self) -> str:
        return self.letter.dead_letter_id

    @property
    def truncated(self) -> bool:
        """Oversized values are kept only in part: those cannot be replayed."""
        return "dead letter keeps the first" in self.letter.reason


async def read_letters(settings: Settings, codec: Codec | None = None) -> list[Letter]:
    """Every dead letter currently in the topic, oldest first per partition."""
    codec = codec or Codec.load(max_value_bytes=settings.max_value_bytes)
    resolver = resolver_for(settings, codec)
    topic = settings.topic("deadletter")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=f"{settings.app_id}-dlq",
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        **settings.kafka_client_options(),
    )
    try:
        await consumer.start()
    except (KafkaConnectionError, OSError) as exc:
        await consumer.stop()
        raise unreachable(settings, exc) from exc
    letters: list[Letter] = []
    try:
        count = (await partition_counts(settings, [topic])).get(topic) or 0
        tps = [TopicPartition(topic, p) for p in range(count)]
        if not tps:
            return letters
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + 60
        while remaining and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for tp, messages in batch.items():
                for message in messages:
                    if resolver is not None and message.value:  # JOURNEY_OUTPUT_FRAMING=confluent
                        await resolver.ensure(message.value)
                    try:
                        letter = codec.decode(message.value, DeadLetter)
                    except DecodeError:
                        continue  # not ours: the topic should only hold DeadLetter records
                    letters.append(Letter(letter, tp.partition, message.offset))
                    if message.offset + 1 >= ends[tp]:
                        remaining.discard(tp)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
        if resolver is not None:
            await resolver.close()
    return letters


def select(
    letters: Iterable[Letter],
    ids: Iterable[str] = (),
    reason: str | None = None,
    topic: str | None = None,
) -> list[Letter]:
    wanted = set(ids)
    chosen = []
    for letter in letters:
        if wanted and letter.id not in wanted:
            continue
        if reason and letter.letter.reason_code != reason:
            continue
        if topic and topic not in (letter.letter.topic, letter.letter.topic.split(".", 1)[-1]):
            continue
        chosen.append(letter)
    return chosen


def replay_problem(settings: Settings, codec: Codec, letter: DeadLetter) -> str | None:
    """Why ``letter`` must not be replayed, or ``None``: only to the input topic it came from,
    and only once it decodes and validates as that topic's record (a crafted letter could
    otherwise publish anything anywhere, e.g. a forged trigger to the triggers topic)."""
    short = {full: name for name, full in settings.input_topics().items()}.get(letter.topic)
    if short is None:
        return f"{letter.topic!r} is not an input topic; only input events are replayed"
    expected = TOPIC_RECORDS[short]
    try:
        record = codec.decode(letter.value or b"", expected)
    except DecodeError as exc:
        return f"still not a valid {expected.__name__} ({exc.reason_code}: {exc.reason})"
    return semantic_problem(record)


async def replay(
    settings: Settings,
    letters: list[Letter],
    on_progress: Callable[[int], object] | None = None,
    codec: Codec | None = None,
) -> tuple[int, list[tuple[Letter, str]]]:
    """Publish each valid letter's original key and value to its source topic again.

    Returns how many were published, and the letters refused with the reason."""
    codec = codec or Codec.load(max_value_bytes=settings.max_value_bytes)
    refused: list[tuple[Letter, str]] = []
    valid: list[Letter] = []
    for item in letters:
        problem = replay_problem(settings, codec, item.letter)
        if problem is None:
            valid.append(item)
        else:
            refused.append((item, problem))
    if not valid:
        return 0, refused
    publisher = Publisher(settings)
    await publisher.start()
    try:
        for done, item in enumerate(valid, start=1):
            letter = item.letter
            await publisher.send_raw(
                "",
                letter.key,
                letter.value or b"",
                headers=[("journey-replay-of", letter.dead_letter_id.encode())],
                full_topic=letter.topic,
            )
            if on_progress is not None:
                on_progress(done)
    finally:
        await publisher.close()
    return len(valid), refused


def read_letters_sync(settings: Settings) -> list[Letter]:
    return asyncio.run(read_letters(settings))
