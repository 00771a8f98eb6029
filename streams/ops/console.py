"""What a person sees in the terminal: progress lines and the live status of a running pipeline."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from schemas.records import Trigger


class Progress:
    """A one-line progress display: a bar when the total is known, a counter otherwise.

    On a terminal the line is redrawn in place; elsewhere (CI logs, pipes) a line is printed at
    most every ``log_every`` seconds so logs stay readable.
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        out: TextIO | None = None,
        log_every: float = 5.0,
    ) -> None:
        self.label = label
        self.total = total
        self.out = out or sys.stderr
        self.tty = self.out.isatty()
        self.log_every = log_every
        self.started = time.monotonic()
        self._last = 0.0
        self.done = 0
        self.extra = ""

    def update(self, done: int, extra: str = "", force: bool = False) -> None:
        self.done, self.extra = done, extra
        now = time.monotonic()
        if not force and now - self._last < (0.2 if self.tty else self.log_every):
            return
        self._last = now
        self._draw(end="" if self.tty else "\n")

    def finish(self, done: int | None = None, extra: str = "") -> None:
        if done is not None:
            self.done = done
        self.extra = extra or self.extra
        self._draw(end="\n")

    def _draw(self, end: str) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        if self.total:
            fraction = min(self.done / self.total, 1.0)
            filled = int(fraction * 30)
            bar = "#" * filled + "-" * (30 - filled)
            text = f"{self.label} [{bar}] {fraction:5.1%} {self.done:,}/{self.total:,}"
        else:
            text = f"{self.label} {self.done:,}"
        text += f"  {rate:,.0f}/s  {elapsed:,.0f}s"
        if self.extra:
            text += f"  {self.extra}"
        prefix = "\r\x1b[2K" if self.tty else ""
        self.out.write(prefix + text + end)
        self.out.flush()


def _days(ms: int) -> str:
    days = ms / 86_400_000
    return f"{days:.0f} days" if days >= 1.5 else f"{ms / 3_600_000:.0f} h"


def describe_trigger(trigger: Trigger) -> str:
    """One line for a person: which message, to whom, and why now."""
    a = trigger.attributes
    order = trigger.order_id or "?"
    since_delivery = (
        _days(trigger.due_at - int(a["delivered_at"])) if "delivered_at" in a else "some days"
    )
    why = {
        "ORDER_CONFIRMATION": f"order {order} placed"
        + (" (first order: welcome)" if a.get("first_order") == "true" else ""),
        "SHIPPING_CONFIRMATION": f"order {order} shipped with {a.get('carrier', '?')}, "
        f"track & trace {a.get('tracking_code', '?')}",
        "DELIVERY_CHECK_IN": f"{since_delivery} after delivery of {order}",
        "REVIEW_REQUEST": f"{since_delivery} after delivery of {order}, not reviewed yet",
        "NPS_SURVEY": f"{since_delivery} after delivery of {order}",
        "ABANDONED_CART": f"reminder {a.get('reminder', '?')}: cart {trigger.cart_id} with "
        f"{a.get('items', '?')} item(s) left without an order",
        "BROWSE_ABANDONMENT": f"viewed {a.get('product_id', '?')} and added nothing to a cart",
        "CROSS_SELL": f"{since_delivery} after delivery; bought {a.get('categories', '?')}",
        "WIN_BACK": f"no order since {order} ({a.get('orders', '?')} order(s) in all)",
        "REFERRAL_INVITE": f"happy customer: {a.get('kind', '?')} score {a.get('score', '?')}",
        "DETRACTOR_FOLLOW_UP": f"unhappy customer: {a.get('kind', '?')} score "
        f"{a.get('score', '?')}",
        "BIRTHDAY": f"birthday: turns {a.get('age', '?')} today",
    }.get(trigger.trigger_type, "")
    return f"{trigger.trigger_type:<22} {trigger.customer_id:<18} {why}"
