"""The reference email sender against a real SMTP server in this process (aiosmtpd).

Kafka is the integration tests' (tests/integration/test_sender.py); here the engagement records
are collected by a stand-in publisher, so that what the sender decides can be seen directly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from schemas.codec import Codec
from schemas.records import CustomerChanged, MessageEngagement, Trigger
from streams.sender.local_smtp import free_port
from streams.sender.outbox import latest_emails, outbox_path
from streams.sender.render import Renderer, language_of, money
from streams.sender.service import EmailSender, describe
from streams.settings import Settings

T0 = 1_732_300_000_000


class Inbox:
    def __init__(self, refuse: set[str] | None = None) -> None:
        self.messages: list[email.message.Message] = []
        self.refuse = refuse or set()

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox(refuse={"gone@customers.example.com"})
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


class Collected:
    """Stands in for the Kafka publisher: what would go to shop.engagement."""

    def __init__(self) -> None:
        self.records: list[MessageEngagement] = []
        self.flushed = 0

    async def send_record(self, topic: str, key: str, record: Any) -> None:
        assert topic == "engagement" and key == record.customer_id
        Codec.load().encode(record)  # what Kafka would get must be a valid record
        self.records.append(record)

    async def flush(self) -> None:
        self.flushed += 1


def make_sender(tmp_path: Path, port: int, **extra: Any) -> tuple[EmailSender, Collected]:
    options: dict[str, Any] = {"sender_smtp_starttls": False, **extra}
    settings = Settings(_env_file=None, data_dir=tmp_path, sender_smtp_port=port, **options)  # type: ignore[call-arg]
    sender = EmailSender(
        settings, clock_ms=lambda: T0, retry_backoff_s=0.05, retry_backoff_max_s=0.1
    )
    collected = Collected()
    sender.publisher = collected  # type: ignore[assignment]
    return sender, collected


def trigger(trigger_type: str, customer: str = "c-1", **attributes: str) -> Trigger:
    return Trigger(
        trigger_id=f"t-{trigger_type}-{customer}",
        trigger_type=trigger_type,
        category="TRANSACTIONAL",
        customer_id=customer,
        due_at=T0,
        emitted_at=T0,
        source_event_id="ev-1",
        stage="PURCHASE",
        order_id="o-77",
        cart_id="cart-5",
        shipment_id="s-3",
        attributes=attributes,
    )


# The attributes the journey model puts on each type (streams/journey/model.py).
EXAMPLES = {
    "ORDER_CONFIRMATION": {
        "first_order": "true",
        "total_minor": "12345",
        "currency": "EUR",
        "items": "3",
        "categories": "shoes",
        "coupon": "WELCOME10",
    },
    "SHIPPING_CONFIRMATION": {
        "carrier": "PostNL",
        "tracking_code": "3SABC123",
        "tracking_url": "https://track.example/3SABC123",
    },
    "DELIVERY_CHECK_IN": {"delivered_at": str(T0), "categories": "shoes"},
    "REVIEW_REQUEST": {"delivered_at": str(T0)},
    "NPS_SURVEY": {"delivered_at": str(T0)},
    "ABANDONED_CART": {
        "reminder": "2",
        "cart_lines": "sku-1x2,sku-9x1",
        "items": "3",
        "cart_value_minor": "4990",
        "currency": "EUR",
        "categories": "bags",
    },
    "BROWSE_ABANDONMENT": {"product_id": "sku-4", "viewed_at": str(T0), "category": "hats"},
    "CROSS_SELL": {"delivered_at": str(T0), "categories": "shoes,socks"},
    "WIN_BACK": {"last_order_at": str(T0), "orders": "2"},
    "REFERRAL_INVITE": {"kind": "NPS", "score": "10"},
    "DETRACTOR_FOLLOW_UP": {"kind": "REVIEW", "score": "1", "product_id": "sku-4"},
    "BIRTHDAY": {"birthday": "1990-11-26", "age": "36"},
}


def test_every_trigger_type_has_an_english_and_a_dutch_template() -> None:
    symbols = next(
        f["type"]["symbols"]
        for f in Codec.load().schema_for("Trigger")["fields"]
        if f["name"] == "trigger_type"
    )
    assert set(symbols) == set(EXAMPLES)
    renderer = Renderer(
        shop="Shop", shop_url="https://s.example", recipient_template="{customer_id}@x"
    )
    for symbol in symbols:
        for locale in ("en-GB", "nl-NL"):
            mail = renderer.render(trigger(symbol, **EXAMPLES[symbol]), locale)
            assert mail.subject and mail.body.strip(), (symbol, locale)
            assert "{{" not in mail.body and "None" not in mail.body + mail.subject, (
                symbol,
                locale,
            )


def test_templates_use_the_attributes() -> None:
    renderer = Renderer(
        shop="Shop", shop_url="https://s.example", recipient_template="{customer_id}@x"
    )
    first = renderer.render(trigger("ORDER_CONFIRMATION", **EXAMPLES["ORDER_CONFIRMATION"]), "en")
    assert first.subject == "Welcome to Shop! Your first order o-77 is confirmed"
    assert "EUR 123.45" in first.body and "WELCOME10" in first.body
    again = renderer.render(
        trigger(
            "ORDER_CONFIRMATION", first_order="false", total_minor="100", currency="EUR", items="1"
        ),
        "en",
    )
    assert again.subject == "Your order o-77 is confirmed"
    dutch = renderer.render(
        trigger("ORDER_CONFIRMATION", **EXAMPLES["ORDER_CONFIRMATION"]), "nl_BE"
    )
    assert dutch.locale == "nl" and "Welkom" in dutch.subject and "EUR 123,45" in dutch.body
    shipped = renderer.render(
        trigger("SHIPPING_CONFIRMATION", **EXAMPLES["SHIPPING_CONFIRMATION"]), "nl"
    )
    assert "https://track.example/3SABC123" in shipped.body and "PostNL" in shipped.body
    cart = renderer.render(trigger("ABANDONED_CART", **EXAMPLES["ABANDONED_CART"]), "en")
    assert (
        "  - 2 x sku-1" in cart.body and "  - 1 x sku-9" in cart.body and "EUR 49.90" in cart.body
    )
    assert cart.subject == "Your cart is still waiting for you"  # reminder 2


def test_language_and_money() -> None:
    assert language_of("nl-NL", "en") == "nl" and language_of("NL", "en") == "nl"
    assert language_of("de-DE", "en") == "en" and language_of(None, "nl") == "nl"
    assert money(123456789, "EUR", "nl") == "EUR 1.234.567,89"
    assert money(5, "USD", "en") == "USD 0.05"


async def test_sends_records_and_reports_delivered(tmp_path: Path, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    sender, collected = make_sender(tmp_path, port)
    sender.handle_customer(CustomerChanged("e", "c-1", T0, "UPDATED", locale="nl-NL"))
    status = await sender.handle_trigger(
        trigger("SHIPPING_CONFIRMATION", **EXAMPLES["SHIPPING_CONFIRMATION"])
    )
    assert status == "DELIVERED"
    (message,) = inbox.messages
    assert message["To"] == "c-1@customers.example.com"
    assert message["Subject"] == "Je bestelling o-77 is onderweg"
    assert message["Message-ID"] == "<t-SHIPPING_CONFIRMATION-c-1@journey>"
    assert "https://track.example/3SABC123" in message.get_payload()
    (engagement,) = collected.records
    assert (engagement.action, engagement.channel, engagement.trigger_id) == (
        "DELIVERED",
        "EMAIL",
        "t-SHIPPING_CONFIRMATION-c-1",
    )
    assert engagement.event_id == "t-SHIPPING_CONFIRMATION-c-1:delivered"
    await sender._flush_reports()
    (stored,) = latest_emails(outbox_path(tmp_path))
    assert stored.reported and stored.locale == "nl" and stored.status == "DELIVERED"


async def test_duplicates_are_dropped_across_restarts(
    tmp_path: Path, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    first, _ = make_sender(tmp_path, port)
    same = trigger("WIN_BACK", **EXAMPLES["WIN_BACK"])
    assert await first.handle_trigger(same) == "DELIVERED"
    assert await first.handle_trigger(same) == "duplicate"
    await first._flush_reports()
    first.outbox.close()
    restarted, collected = make_sender(tmp_path, port)
    assert await restarted.handle_trigger(same) == "duplicate"
    assert len(inbox.messages) == 1
    assert collected.records == []  # reported before the restart: not again


async def test_engagement_not_acknowledged_before_a_crash_is_reported_after(
    tmp_path: Path, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    crashed, _ = make_sender(tmp_path, port)
    same = trigger("WIN_BACK", **EXAMPLES["WIN_BACK"])
    await crashed.handle_trigger(same)  # sent and recorded; the engagement never acknowledged
    crashed.outbox.close()
    restarted, collected = make_sender(tmp_path, port)
    assert await restarted.handle_trigger(same) == "duplicate"
    assert [r.action for r in collected.records] == ["DELIVERED"]
    assert len(inbox.messages) == 1


async def test_refused_recipient_is_bounced(tmp_path: Path, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    sender, collected = make_sender(
        tmp_path, port, sender_recipient="{customer_id}@customers.example.com"
    )
    status = await sender.handle_trigger(
        trigger("WIN_BACK", customer="gone", **EXAMPLES["WIN_BACK"])
    )
    assert status == "BOUNCED"
    assert inbox.messages == []
    assert [r.action for r in collected.records] == ["BOUNCED"]


async def test_smtp_outage_waits_then_sends(tmp_path: Path) -> None:
    inbox = Inbox()
    port = free_port()  # nobody listens on it yet
    sender, collected = make_sender(tmp_path, port)
    sending = asyncio.ensure_future(
        sender.handle_trigger(trigger("WIN_BACK", **EXAMPLES["WIN_BACK"]))
    )
    await asyncio.sleep(0.4)
    assert not sending.done() and sender.counts["smtp_retries"] >= 2
    assert collected.records == []  # no bounce for an outage
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        assert await asyncio.wait_for(sending, 10) == "DELIVERED"
    finally:
        controller.stop()
    assert len(inbox.messages) == 1


def _certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_starttls_and_login(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    logins: list[str] = []

    def authenticate(
        server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"shop", b"s3cret")
        logins.append(f"{mechanism}:{ok}")
        return AuthResult(success=ok)

    inbox = Inbox()
    port = free_port()
    controller = Controller(
        inbox, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True,
        authenticator=authenticate, auth_require_tls=True,
    )  # fmt: skip
    controller.start()
    try:
        plain, _ = make_sender(tmp_path / "a", port)  # no STARTTLS: the server refuses, we wait
        refused = asyncio.ensure_future(
            plain.handle_trigger(trigger("WIN_BACK", **EXAMPLES["WIN_BACK"]))
        )
        await asyncio.sleep(0.3)
        assert not refused.done() and plain.counts["smtp_retries"] >= 1
        refused.cancel()
        wrong, _ = make_sender(
            tmp_path / "b", port, sender_smtp_starttls=True, sender_smtp_cafile=cert,
            sender_smtp_username="shop", sender_smtp_password="wrong",
        )  # fmt: skip
        refused = asyncio.ensure_future(
            wrong.handle_trigger(trigger("WIN_BACK", **EXAMPLES["WIN_BACK"]))
        )
        await asyncio.sleep(0.3)
        assert not refused.done() and wrong.counts["bounced"] == 0  # our mistake is no bounce
        refused.cancel()
        right, _collected = make_sender(
            tmp_path / "c", port, sender_smtp_starttls=True, sender_smtp_cafile=cert,
            sender_smtp_username="shop", sender_smtp_password="s3cret",
        )  # fmt: skip
        assert (
            await right.handle_trigger(trigger("WIN_BACK", **EXAMPLES["WIN_BACK"])) == "DELIVERED"
        )
    finally:
        controller.stop()
    assert len(inbox.messages) == 1
    assert "LOGIN:True" in logins or "PLAIN:True" in logins


async def test_a_duplicate_in_the_same_batch_is_reported_once(
    tmp_path: Path, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    sender, collected = make_sender(tmp_path, port)
    same = trigger("WIN_BACK", **EXAMPLES["WIN_BACK"])
    assert await sender.handle_trigger(same) == "DELIVERED"
    assert await sender.handle_trigger(same) == "duplicate"  # before the batch's flush
    assert [r.action for r in collected.records] == ["DELIVERED"]
    assert len(inbox.messages) == 1


async def test_a_type_without_template_is_kept_visibly_not_sent(
    tmp_path: Path, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    sender, collected = make_sender(tmp_path, port)
    assert await sender.handle_trigger(trigger("BIRTHDAY")) == "NOT_SENT"
    assert inbox.messages == [] and collected.records == []
    (kept,) = latest_emails(outbox_path(tmp_path))
    assert kept.status == "NOT_SENT" and "BIRTHDAY" in kept.subject
    assert await sender.handle_trigger(trigger("BIRTHDAY")) == "duplicate"  # no crash loop


async def test_header_injection_through_ids_is_refused(
    tmp_path: Path, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    sender, collected = make_sender(tmp_path, port)
    evil = trigger("WIN_BACK", customer="x\r\nBcc: all@evil.example", **EXAMPLES["WIN_BACK"])
    assert await sender.handle_trigger(evil) == "NOT_SENT"
    multi = trigger("ORDER_CONFIRMATION", customer="c-9", **EXAMPLES["ORDER_CONFIRMATION"])
    multi = dataclasses.replace(multi, order_id="o-1\r\nBcc: all@evil.example")
    assert await sender.handle_trigger(multi) == "DELIVERED"
    (message,) = inbox.messages
    assert message["Bcc"] is None  # the id stayed inside the (folded) Subject header
    assert " ".join(str(message["Subject"]).split()).endswith(
        "o-1 Bcc: all@evil.example is confirmed"
    )
    assert [r.customer_id for r in collected.records] == ["c-9"]


def test_dashboard_escapes_email_content() -> None:
    from streams.sender.outbox import SentEmail
    from streams.web.dashboard import emails_section

    html = emails_section(
        [
            SentEmail(
                "t",
                "WIN_BACK",
                "c",
                "c@x.example",
                "en",
                "<script>alert(1)</script>",
                "a <b>",
                "DELIVERED",
                "",
                1,
                True,
            )
        ]
    )
    assert "<script>" not in html and "&lt;script&gt;" in html and "a &lt;b&gt;" in html


def test_latest_emails_readable_after_the_sender_stopped(tmp_path: Path) -> None:
    from streams.sender.outbox import Outbox
    from streams.sender.render import Email

    path = outbox_path(tmp_path)
    assert latest_emails(path) == []  # nothing yet: no file
    outbox = Outbox(path)
    for n in range(3):
        outbox.record(
            Email(f"t{n}", "WIN_BACK", "c", "c@x", "en", f"s{n}", "b"), "DELIVERED", "", n
        )
    outbox.close()
    assert [e.subject for e in latest_emails(path, 2)] == ["s2", "s1"]


async def test_what_it_skips_is_counted_by_topic(tmp_path: Path) -> None:
    """A shop's malformed customer record is not a lost email: the console says which it was."""
    sender, _ = make_sender(tmp_path, 1)
    await sender.handle_message(sender.customers_topic, b"not a record")
    await sender.handle_message(sender.triggers_topic, b"not a trigger")
    await sender.handle_message(sender.customers_topic, None)  # a tombstone: nothing to count
    assert dict(sender.counts) == {
        "malformed customer records skipped": 1,
        "undecodable triggers": 1,
    }
    assert describe(sender.counts) == (
        "malformed customer records skipped 1, undecodable triggers 1"
    )
