"""Trigger + customer locale -> the email's subject and text (Jinja2, one template per type).

A template has two blocks, ``subject`` and ``body``. Templates see the trigger's fields,
every attribute of ``trigger.attributes`` by name, and these prepared values: ``first_order``
(bool), ``reminder`` (int), ``cart_lines`` (list of (product, quantity)), ``categories`` (list),
``total`` (money in the customer's language: ``total_minor``/``cart_value_minor`` and
``currency``), ``shop``, ``shop_url``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from schemas.records import Trigger

TEMPLATES = Path(__file__).resolve().parent / "templates"
# One address, printable ASCII without spaces or separators: nothing that could add a header.
_ADDRESS = re.compile(r"[^\s@<>,;:\"\\]+@[^\s@<>,;:\"\\]+")
LANGUAGES = ("en", "nl")


@dataclass(frozen=True)
class Email:
    trigger_id: str
    trigger_type: str
    customer_id: str
    recipient: str
    locale: str
    subject: str
    body: str


def language_of(locale: str | None, default: str) -> str:
    """``nl-NL``, ``nl_BE``, ``NL`` -> ``nl``; a language without templates -> the default."""
    if locale:
        language = locale.replace("_", "-").split("-")[0].lower()
        if language in LANGUAGES:
            return language
    return default


def money(minor: int, currency: str, language: str) -> str:
    """``12345, EUR`` -> ``EUR 123.45`` (en) / ``EUR 123,45`` (nl)."""
    whole, cents = divmod(abs(minor), 100)
    sign = "-" if minor < 0 else ""
    if language == "nl":
        return f"{currency} {sign}{whole:,}".replace(",", ".") + f",{cents:02d}"
    return f"{currency} {sign}{whole:,}.{cents:02d}"


class Renderer:
    def __init__(
        self,
        *,
        shop: str,
        shop_url: str,
        recipient_template: str,
        default_language: str = "en",
        templates: Path = TEMPLATES,
    ) -> None:
        self.shop = shop
        self.shop_url = shop_url.rstrip("/")
        self.recipient_template = recipient_template
        self.default_language = default_language
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(templates)),
            autoescape=False,  # plain-text mail, nothing is HTML
            undefined=jinja2.StrictUndefined,  # a missing value is a bug in a template, loudly
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def context(self, trigger: Trigger, language: str) -> dict[str, Any]:
        attributes = dict(trigger.attributes)
        context: dict[str, Any] = {
            # Attributes a type may lack: templates test them with `if`.
            "coupon": None, "carrier": None, "tracking_code": None, "tracking_url": None,
            "category": None, "product_id": None, "items": None, "score": None, "kind": None,
            **attributes,
            "trigger_type": trigger.trigger_type,
            "customer_id": trigger.customer_id,
            "order_id": trigger.order_id,
            "cart_id": trigger.cart_id,
            "shipment_id": trigger.shipment_id,
            "shop": self.shop,
            "shop_url": self.shop_url,
            "first_order": attributes.get("first_order") == "true",
            "reminder": int(attributes.get("reminder", "1")),
            "cart_lines": [
                (product, int(quantity))
                for product, _, quantity in (
                    line.rpartition("x") for line in attributes.get("cart_lines", "").split(",")
                )
                if product
            ],
            "categories": [c for c in attributes.get("categories", "").split(",") if c],
            "total": None,
        }  # fmt: skip
        minor = attributes.get("total_minor") or attributes.get("cart_value_minor")
        if minor and attributes.get("currency"):
            context["total"] = money(int(minor), attributes["currency"], language)
        return context

    def render(self, trigger: Trigger, locale: str | None) -> Email:
        language = language_of(locale, self.default_language)
        template = self.env.get_template(f"{language}/{trigger.trigger_type}.txt.j2")
        context = template.new_context(self.context(trigger, language))
        # One line: a value with a line break (an order id, say) must not end the header early.
        subject = " ".join("".join(template.blocks["subject"](context)).split())
        body = "".join(template.blocks["body"](context))
        recipient = self.recipient_template.format(customer_id=trigger.customer_id)
        if not _ADDRESS.fullmatch(recipient):
            raise jinja2.TemplateError(f"{recipient!r} is not a usable email address")
        return Email(
            trigger_id=trigger.trigger_id,
            trigger_type=trigger.trigger_type,
            customer_id=trigger.customer_id,
            recipient=recipient,
            locale=language,
            subject=subject,
            body=body.lstrip("\n"),
        )

    def unrendered(self, trigger: Trigger, problem: str) -> Email:
        """What the outbox keeps of a trigger that could not be rendered."""
        return Email(
            trigger_id=trigger.trigger_id,
            trigger_type=trigger.trigger_type,
            customer_id=trigger.customer_id,
            recipient=self.recipient_template.format(customer_id=trigger.customer_id),
            locale="",
            subject=f"(not sent: no usable template for {trigger.trigger_type})",
            body=problem,
        )
