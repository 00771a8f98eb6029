"""The sender's loop: triggers in, emails out, engagement back (see the package docstring)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import jinja2
from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.codec import Codec, DecodeError
from schemas.records import CustomerChanged, MessageEngagement, Trigger
from streams.ops.publish import Publisher
from streams.runtime.ingest import wall_clock_ms
from streams.schema_registry import resolver_for
from streams.sender.outbox import Outbox, outbox_path
from streams.sender.render import Renderer
from streams.sender.smtp import SmtpTransport, TemporaryFailure
from streams.settings import Settings

log = logging.getLogger(__name__)


def transport_from(settings: Settings) -> SmtpTransport:
    password = settings.sender_smtp_password
    return SmtpTransport(
        settings.sender_smtp_host,
        settings.sender_smtp_port,
        sender_address=settings.sender_from,
        starttls=settings.sender_smtp_starttls,
        username=settings.sender_smtp_username,
        password=password.get_secret_value() if password else None,
        cafile=settings.sender_smtp_cafile,
    )


def renderer_from(settings: Settings) -> Renderer:
    return Renderer(
        shop=settings.sender_shop_name,
        shop_url=settings.sender_shop_url,
        recipient_template=settings.sender_recipient,
        default_language=settings.sender_default_locale,
    )


class EmailSender:
    def __init__(
        self,
        settings: Settings,
        *,
        clock_ms: Callable[[], int] = wall_clock_ms,
        codec: Codec | None = None,
        transport: SmtpTransport | None = None,
        retry_backoff_s: float = 1.0,
        retry_backoff_max_s: float = 30.0,
    ) -> None:
        self.settings = settings
        self.clock_ms = clock_ms
        self.codec = codec or Codec.load(max_value_bytes=settings.max_value_bytes)
        self.transport = transport or transport_from(settings)
        self.renderer = renderer_from(settings)
        self.outbox = Outbox(outbox_path(settings.data_dir))
        self.resolver = resolver_for(settings, self.codec)
        self.publisher = Publisher(settings, self.codec)
        self.retry_backoff_s = retry_backoff_s
        self.retry_backoff_max_s = retry_backoff_max_s
        self.counts: Counter[str] = Counter()  # delivered, bounced, duplicate, ... (``describe``)
        self._unreported: dict[str, None] = {}  # engagement sent, not yet acknowledged by Kafka
        self.triggers_topic = settings.topic("triggers")
        self.customers_topic = settings.topic("customers")

    async def handle_trigger(self, trigger: Trigger) -> str:
        """Send it unless handled before; queue its engagement. Returns what happened."""
        done = self.outbox.get(trigger.trigger_id)
        if done is not None:
            reportable = done.status in ("DELIVERED", "BOUNCED")
            if reportable and not done.reported and trigger.trigger_id not in self._unreported:
                # Sent before a crash that came before Kafka had its engagement: report it now.
                await self._report(trigger.trigger_id, trigger.customer_id, done.status)
            self.counts["duplicate"] += 1
            return "duplicate"
        try:
            email = self.renderer.render(trigger, self.outbox.locale(trigger.customer_id))
        except jinja2.TemplateError as exc:
            # A trigger type without a template (a new type) or a broken template: nothing is
            # sent, and it is kept visibly in the outbox (status NOT_SENT) instead of crashing
            # the sender on every restart or dropping it silently.
            problem = f"{type(exc).__name__}: {exc}"
            log.error(
                "trigger %s (%s) not sent: %s", trigger.trigger_id, trigger.trigger_type, problem
            )
            self.outbox.record(
                self.renderer.unrendered(trigger, problem), "NOT_SENT", problem, self.clock_ms()
            )
            self.counts["not_sent"] += 1
            return "NOT_SENT"
        delay = self.retry_backoff_s
        while True:
            try:
                status, detail = await asyncio.to_thread(self.transport.send, email)
                break
            except TemporaryFailure as exc:
                self.counts["smtp_retries"] += 1
                log.warning("trigger %s: %s; retrying in %.0f s", trigger.trigger_id, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_backoff_max_s)
        self.outbox.record(email, status, detail, self.clock_ms())
        await self._report(trigger.trigger_id, trigger.customer_id, status)
        self.counts[status.lower()] += 1
        return status

    async def _report(self, trigger_id: str, customer_id: str, status: str) -> None:
        engagement = MessageEngagement(
            event_id=f"{trigger_id}:{status.lower()}",  # a resend reports the same event
            customer_id=customer_id,
            occurred_at=self.clock_ms(),
            action=status,
            channel="EMAIL",
            trigger_id=trigger_id,
        )
        await self.publisher.send_record("engagement", customer_id, engagement)
        self._unreported[trigger_id] = None

    def handle_customer(self, change: CustomerChanged) -> None:
        if change.action == "ERASED":
            self.outbox.forget_customer(change.customer_id)
        elif change.locale is not None:
            self.outbox.set_locale(change.customer_id, change.locale)

    async def handle_message(self, topic: str, value: bytes | None) -> None:
        if value is None:
            return
        if self.resolver is not None:
            await self.resolver.ensure(value)
        expected = Trigger if topic == self.triggers_topic else CustomerChanged
        try:
            record = self.codec.decode(value, expected)
        except DecodeError as exc:
            # journey.triggers is written by the pipeline: a record it cannot read is a problem
            # (a warning). Bad input on shop.customers is the pipeline's to dead-letter: the
            # sender only counts what it skipped, apart, so that the console does not make a
            # shop's malformed customer record look like a lost email.
            if expected is Trigger:
                self.counts["undecodable triggers"] += 1
            else:
                self.counts["malformed customer records skipped"] += 1
            level = logging.WARNING if expected is Trigger else logging.INFO
            log.log(level, "skipping an undecodable message on %s: %s", topic, exc)
            return
        if isinstance(record, Trigger):
            await self.handle_trigger(record)
        else:
            self.handle_customer(record)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        await self.publisher.start()
        consumer = AIOKafkaConsumer(
            self.triggers_topic,
            self.customers_topic,
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=f"{self.settings.app_id}-sender",
            client_id=f"{self.settings.app_id}-sender",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **self.settings.kafka_client_options(),
        )
        await consumer.start()
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=500, max_records=200)
                positions: dict[TopicPartition, int] = {}
                if any(tp.topic == self.triggers_topic for tp in batch):
                    # A trigger is rendered in the customer's language: apply every customer
                    # update already on the broker first, whatever order the fetches came in.
                    await self._catch_up_customers(consumer, batch, positions)
                # Customer updates of this batch before its triggers (same reason).
                for tp in sorted(batch, key=lambda tp: tp.topic != self.customers_topic):
                    for message in batch[tp]:
                        await self.handle_message(tp.topic, message.value)
                        positions[tp] = message.offset + 1
                await self._flush_reports()
                if positions:
                    await consumer.commit(positions)
        finally:
            # Each step even if one before it fails or is cancelled (a second Ctrl-C): the
            # producer left open printed "Unclosed AIOKafkaProducer" at exit.
            try:
                await consumer.stop()
            finally:
                try:
                    await self.publisher.close()
                finally:
                    if self.resolver is not None:
                        await self.resolver.close()
                    self.outbox.close()

    async def _catch_up_customers(
        self,
        consumer: AIOKafkaConsumer,
        batch: dict[TopicPartition, list[Any]],
        positions: dict[TopicPartition, int],
    ) -> None:
        """Read shop.customers up to its end offsets now (only those partitions), so that a
        locale published before a trigger is known when the trigger is rendered."""
        customers = [tp for tp in consumer.assignment() if tp.topic == self.customers_topic]
        if not customers:
            return
        ends = await consumer.end_offsets(customers)
        for tp in customers:  # what this batch holds already is applied by the caller
            for message in batch.pop(tp, []):
                await self.handle_message(tp.topic, message.value)
                positions[tp] = message.offset + 1
        behind = [tp for tp in customers if await consumer.position(tp) < ends[tp]]
        # Bounded: a partition that cannot reach its end offset (a transaction marker last)
        # must not stop sending; its updates then apply in arrival order.
        deadline = asyncio.get_running_loop().time() + 10
        while behind and asyncio.get_running_loop().time() < deadline:
            more = await consumer.getmany(*behind, timeout_ms=500, max_records=500)
            for tp, messages in more.items():
                for message in messages:
                    await self.handle_message(tp.topic, message.value)
                    positions[tp] = message.offset + 1
            behind = [tp for tp in behind if await consumer.position(tp) < ends[tp]]

    async def _flush_reports(self) -> None:
        """The engagement records are acknowledged by Kafka: only then are they 'reported'."""
        if not self._unreported:
            return
        await self.publisher.flush()
        for trigger_id in self._unreported:
            self.outbox.mark_reported(trigger_id)
        self._unreported.clear()


def describe(counts: Any) -> str:
    return ", ".join(f"{name} {n:,}" for name, n in sorted(counts.items())) or "nothing yet"
