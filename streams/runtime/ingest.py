"""What happens to each consumed message before the journey sees it.

Decode it against the record its topic carries; send what cannot be used to the dead-letter
topic with the reason; re-key events that arrived under another key than their customer_id
(through the repartition topic, so they reach the partition that owns the customer); and hand
every accepted event to the journey engine (which publishes its canonical ``journey.events``
record, unless the customer was erased). Nothing here knows about Faust: the agent passes the
message's coordinates; acking it is ``acks.py``'s, after the journey has run.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from typing import Any

from schemas.bounds import bounds_problem
from schemas.codec import Codec, DecodeError
from schemas.records import (
    TOPIC_RECORDS,
    CartChanged,
    CustomerPrediction,
    DeadLetter,
    FeedbackGiven,
    InputEvent,
    OrderChanged,
    ShipmentChanged,
)
from streams.runtime.outputs import Outputs
from streams.runtime.partitioner import murmur2
from streams.schema_registry import resolver_for
from streams.settings import Settings

# Header naming the input a repartitioned event came from (its record type follows from it).
SOURCE_HEADER = "journey-source"

DEADLETTER_VALUE_LIMIT = 512 * 1024
# A producer partitioning otherwise is reported at most this often per topic (it repeats per event).
MISROUTED_WARNING_INTERVAL_S = 60.0

log = logging.getLogger(__name__)

# What a consumed message can be once accepted: a shop event, or the loader's prediction.
Accepted = InputEvent | CustomerPrediction


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def semantic_problem(record: Accepted) -> str | None:
    """What the Avro schema cannot say but the journey needs. ``None`` when the record is fine."""
    if not record.event_id:
        return "event_id is empty"
    if not record.customer_id:
        return "customer_id is empty"
    if record.occurred_at <= 0:
        return f"occurred_at {record.occurred_at} is not a time after 1970"
    bounds = bounds_problem(record)
    if bounds is not None:
        return bounds
    match record:
        case FeedbackGiven(kind="NPS", score=score) if not 0 <= score <= 10:
            return f"NPS score {score} is outside 0-10"
        case FeedbackGiven(kind="REVIEW", score=score) if not 1 <= score <= 5:
            return f"review score {score} is outside 1-5"
        case OrderChanged(total_minor=total) if total < 0:
            return f"total_minor {total} is negative"
        case CustomerPrediction(probability_alive=p) if not 0.0 <= p <= 1.0:
            return f"probability_alive {p} is outside 0-1"
        case CustomerPrediction(expected_orders_90d=n) if not 0.0 <= n <= 1e6:
            return f"expected_orders_90d {n} is outside 0-1,000,000"
        case CartChanged(quantity=quantity) if quantity is not None and quantity < 0:
            return f"quantity {quantity} is negative"
    return link_problem(record)


def link_problem(record: Accepted) -> str | None:
    """Fields that go out in triggers as links a customer clicks (the shipping message's track &
    trace) must be http(s) URLs: ``javascript:``, ``data:`` and the like would be phishing."""
    match record:
        case ShipmentChanged(tracking_url=url) if url is not None and not is_web_url(url):
            return f"tracking_url {url[:100]!r} is not an http(s) URL"
    return None


def is_web_url(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def key_hash(key: bytes) -> int:
    """Kafka's default partitioner's hash of a key: murmur2, positive."""
    return int(murmur2(key) & 0x7FFFFFFF)


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a key: murmur2, as the Java client and
    aiokafka (librdkafka clients need ``partitioner=murmur2_random`` to agree)."""
    return key_hash(key) % partitions


def _header(headers: Any, name: str) -> bytes | None:
    if not headers:
        return None
    items = headers.items() if isinstance(headers, dict) else headers
    for key, value in items:
        if key == name:
            return value if isinstance(value, bytes) else str(value).encode()
    return None


# At most this many records decoded for the merge are kept for ``handle`` (the merge holds at most
# JOURNEY_ORDERING_BUFFER messages; more would mean messages it dropped without a rebalance).
DECODED_KEPT = 250_000


class Ingest:
    def __init__(
        self,
        settings: Settings,
        codec: Codec,
        outputs: Outputs,
        *,
        clock: Callable[[], int] = wall_clock_ms,
        partitions: int | None = None,
    ) -> None:
        """``partitions``: the input topics' real partition count (the layout check's)."""
        self.codec = codec
        self._decode = codec.decoder()  # codec.decode, its usual case compiled
        self.outputs = outputs
        self.clock = clock
        self.short_names = {full: short for short, full in settings.input_topics().items()}
        self.repartition_topic = settings.topic("repartition")
        # The loader's predictions: not a shop input, but applied like one (docs/topics.md).
        self.short_names[settings.topic("predictions")] = "predictions"
        self.consumed: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()
        self.dead: Counter[str] = Counter()
        self.repartitioned = 0
        # Registry-framed values: their writer schema is fetched (and waited for) before decoding.
        self.schema_resolver = resolver_for(settings, codec)
        self.partitions = partitions or settings.partitions
        # Events on another partition than their key's, by topic (re-routed like wrong keys).
        self.misrouted: Counter[str] = Counter()
        self._misrouted_warned: dict[str, float] = {}
        # Records decoded for the event-time merge, by (topic, partition, offset): see event_time.
        self._decoded: dict[tuple[str, int, int], Accepted] = {}

    async def handle(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Any,
    ) -> Accepted | None:
        """Returns the accepted event, or ``None`` when it went elsewhere (dead letter, re-key).

        The caller acks the message (``Acks.after``) once everything it caused, here and in the
        journey, has been handed to the producer.
        """
        self.consumed[topic] += 1
        short, expected = self._record_type(topic, headers)
        if short is None or expected is None:
            self._dead_letter(
                topic,
                partition,
                offset,
                key,
                value,
                None,
                "unknown_source",
                f"message on {topic} without a valid {SOURCE_HEADER} header ({short!r})",
            )
            return None
        if self.schema_resolver is not None and value:
            await self.schema_resolver.ensure(value)
        record = self._accept(topic, partition, offset, key, value, short, expected)
        if record is not None:
            self.accepted[topic] += 1
        return record

    def _accept(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        short: str,
        expected: type[Accepted],
    ) -> Accepted | None:
        """The decoded event, checked and on its customer's partition; else ``None`` (dead
        letter, or re-routed)."""
        try:
            record: Accepted = self._decoded.pop((topic, partition, offset), None) or (
                self._decode(value or b"", expected)
            )
        except DecodeError as exc:
            self._dead_letter(
                topic, partition, offset, key, value, expected.__name__, exc.reason_code, exc.reason
            )
            return None
        problem = semantic_problem(record)
        if problem is not None:
            self._dead_letter(
                topic, partition, offset, key, value, expected.__name__, "validation", problem
            )
            return None
        customer_key = record.customer_id.encode()
        if key != customer_key:
            if key is not None:
                try:
                    self.codec.decode_key(key)
                except DecodeError as exc:
                    self._dead_letter(
                        topic,
                        partition,
                        offset,
                        key,
                        value,
                        expected.__name__,
                        exc.reason_code,
                        exc.reason,
                    )
                    return None
            # Keyed otherwise (or not at all): the event belongs to the partition that owns
            # its customer. Re-key it there instead of dropping it.
            self._reroute(customer_key, value, short)
            return None
        if partition != key_partition(customer_key, self.partitions):
            # Keyed right but partitioned otherwise (a CRC32 producer): another worker may own
            # this customer. Never apply it here; send it to the customer's partition.
            self._report_misrouted(topic, partition)
            self._reroute(customer_key, value, short)
            return None
        return record

    def _record_type(self, topic: str, headers: Any) -> tuple[str | None, type[Accepted] | None]:
        """The input a message belongs to (short topic name) and the record it must hold."""
        short = self.short_names.get(topic)
        if short is None and topic == self.repartition_topic:
            source = _header(headers, SOURCE_HEADER)
            short = source.decode("utf-8", "replace") if source else None
        if short == "predictions":
            return short, CustomerPrediction
        return short, TOPIC_RECORDS.get(short) if short else None

    def event_time(
        self,
        topic: str,
        value: bytes | None,
        headers: Any,
        partition: int | None = None,
        offset: int | None = None,
    ) -> int | None:
        """When the event of a message happened (``occurred_at``), for the event-time merge;
        ``None`` when it cannot be decoded (it will be a dead letter: its order is moot).

        With the message's ``partition`` and ``offset``, the decoded record is kept until
        ``handle`` takes the same message, which then does not decode it again (a second decode
        was 5 % of the worker's CPU). ``forget_decoded`` drops what the merge dropped."""
        _, expected = self._record_type(topic, headers)
        if expected is None:
            return None
        try:
            record = self._decode(value or b"", expected)
        except DecodeError:
            return None
        if partition is not None and offset is not None:
            if len(self._decoded) >= DECODED_KEPT:
                self._decoded.clear()  # a bound, not expected: the merge holds fewer
            self._decoded[(topic, partition, offset)] = record
        return int(record.occurred_at)

    def forget_decoded(self) -> None:
        """The merge dropped what it held (a rebalance): those messages come again."""
        self._decoded.clear()

    def _report_misrouted(self, topic: str, partition: int) -> None:
        self.misrouted[topic] += 1
        now = time.monotonic()
        last = self._misrouted_warned.get(topic)
        if last is None or now - last >= MISROUTED_WARNING_INTERVAL_S:
            self._misrouted_warned[topic] = now
            log.warning(
                "%s: %d event(s) so far on another partition than Kafka's default partitioner "
                "(murmur2) gives their customer_id (last on partition %d); re-routed through %s. "
                "The producer partitions otherwise: librdkafka clients (confluent-kafka, kcat, "
                "Go, node-rdkafka) need partitioner=murmur2_random",
                topic, self.misrouted[topic], partition, self.repartition_topic,
            )  # fmt: skip

    def _reroute(self, customer_key: bytes, value: bytes | None, short: str) -> None:
        self.outputs.repartition(customer_key, value or b"", [(SOURCE_HEADER, short.encode())])
        self.repartitioned += 1

    async def processing_error(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        exc: BaseException,
        what: str = "",
    ) -> None:
        """Handling this message failed (a bug, or input the bounds did not foresee): it becomes a
        dead letter with the exception's summary, and the stream goes on. ``what`` says which part
        of the message's work failed (e.g. a customer's timers during a tick)."""
        summary = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        short = self.short_names.get(topic)
        expected = TOPIC_RECORDS.get(short) if short else None
        self._dead_letter(
            topic,
            partition,
            offset,
            key,
            value,
            expected.__name__ if expected else None,
            "processing_error",
            f"{what}{': ' if what else ''}{summary[:1000]}",
        )

    def _dead_letter(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        record_type: str | None,
        reason_code: str,
        reason: str,
    ) -> None:
        if value is not None and len(value) > DEADLETTER_VALUE_LIMIT:
            # Kafka's default message limit is 1 MiB: keep the start of an oversized value,
            # enough to recognise it, and say so.
            reason += (
                f" (dead letter keeps the first {DEADLETTER_VALUE_LIMIT} of {len(value)} bytes)"
            )
            value = value[:DEADLETTER_VALUE_LIMIT]
        letter = DeadLetter(
            dead_letter_id=f"{topic}/{partition}/{offset}",
            topic=topic,
            partition=partition,
            offset=offset,
            reason_code=reason_code,
            reason=reason,
            failed_at=self.clock(),
            key=key,
            value=value,
            record_type=record_type,
        )
        self.dead[reason_code] += 1
        self.outputs.dead_letter(
            key if key else letter.dead_letter_id.encode(), self.codec.encode(letter)
        )
