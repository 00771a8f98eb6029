"""A customer's journey: what the model remembers between events, and its compact encoding.

Everything is plain data (times in epoch milliseconds) so that the state can be stored in a
changelogged Faust table and moved with its partition. The classes are msgspec ``Struct``
classes (``array_like``). A state is stored as MessagePack: ``[STATE_VERSION, [its fields, in
order]]``, decoded straight into the objects by msgspec's C code. Against the positional JSON
array of versions 1 to 3 (orjson, then the objects built in Python), a fired timer's state
decodes in less than half the time and encodes in about 40 % of it (session 25). Those versions
still decode (``_decode_json``); a state is written in this version once its customer changes.

The state also carries its **outbox**: the trigger decisions the customer's messages caused
that are not yet known to be stored in ClickHouse and acknowledged by the broker. The model
never reads it; the engine appends to it, re-sends it after a crash and trims it once durable
(see ``streams/runtime/engine.py``), so a state in the changelog is never ahead of what it caused.
It is the last field, so its bytes end the encoded state (``encode_state_parts``).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import msgspec
import orjson

from streams.journey.decisions import Reason, Stage

log = logging.getLogger(__name__)

STATE_VERSION = 4
# Versions 1 to 3: a positional JSON array, ``_decode_json``. Version 1 had no outbox; version 3
# dropped three fields nothing read (their slots stayed, null).
_JSON_VERSIONS = (1, 2, 3)


class Order(msgspec.Struct, array_like=True):
    order_id: str
    placed_at: int | None = None
    total_minor: int = 0
    currency: str = ""
    categories: list[str] = msgspec.field(default_factory=list)
    cart_id: str | None = None
    cancelled: bool = False
    refunded_minor: int = 0
    refunded: bool = False  # fully refunded: no longer a purchase
    returned: bool = False
    delivered_at: int | None = None
    reviewed: bool = False
    confirmed: bool = False
    post_delivery_scheduled: bool = False
    shipments_notified: list[str] = msgspec.field(default_factory=list)
    # Event ids of the refunds applied: a refund delivered again is not subtracted twice.
    refund_ids: list[str] = msgspec.field(default_factory=list)

    @property
    def counts(self) -> bool:
        """A purchase: placed, not cancelled, not fully refunded."""
        return self.placed_at is not None and not self.cancelled and not self.refunded


class Cart(msgspec.Struct, array_like=True):
    cart_id: str
    lines: dict[str, int] = msgspec.field(default_factory=dict)  # product_id -> quantity
    categories: dict[str, str] = msgspec.field(default_factory=dict)  # product_id -> category
    value_minor: int = 0
    currency: str = ""
    last_change_at: int = 0
    reminders_emitted: int = 0
    ordered: bool = False


class Timer(msgspec.Struct, array_like=True):
    """A trigger waiting for its time. ``fire_at`` moves when a rule defers it."""

    trigger_id: str
    trigger_type: str
    due_at: int  # when it was meant to go out
    fire_at: int  # when it is evaluated next (due_at, or the deferred time)
    source_event_id: str
    order_id: str | None = None
    cart_id: str | None = None
    shipment_id: str | None = None
    attributes: dict[str, str] = msgspec.field(default_factory=dict)


class JourneyState(msgspec.Struct, array_like=True):
    customer_id: str
    stage: Stage = Stage.AWARENESS
    erased: bool = False
    first_seen_at: int | None = None
    consent: bool | None = None  # None: never said; the setting decides
    blocked: Reason | None = None  # BOUNCED or COMPLAINED: marketing stops
    time_zone: str | None = None
    orders: dict[str, Order] = msgspec.field(default_factory=dict)
    carts: dict[str, Cart] = msgspec.field(default_factory=dict)
    first_order_at: int | None = None
    last_order_at: int | None = None  # of orders that count
    last_order_id: str | None = None
    orders_count: int = 0
    revenue_minor: int = 0
    last_nps: int | None = None
    last_cart_add_at: int | None = None
    last_marketing_at: int | None = None
    unengaged: int = 0  # marketing triggers emitted since the last open, click or order
    last_emitted: dict[str, int] = msgspec.field(default_factory=dict)  # trigger type -> time
    win_back_order: str | None = None  # the lapse (after this order) that has its win-back
    seen: list[str] = msgspec.field(default_factory=list)  # recent event_ids, oldest first
    # Feedback answers applied, kept apart from ``seen`` (which page views flush within hours):
    # an answer delivered again long after changes no stage and decides no trigger again.
    feedback_seen: list[str] = msgspec.field(default_factory=list)
    timers: dict[str, Timer] = msgspec.field(default_factory=dict)  # key -> timer
    # Numbers the outbox's entries, so the engine can tell which ones a flush stored.
    outbox_seq: int = 0
    # The newest lifetime-value prediction (journey.predictions): [fitted_at, probability_alive,
    # expected_orders_90d, predicted_clv_minor, expected_next_order_at or None], or None.
    prediction: list[Any] | None = None
    # Outputs not yet durable: [sequence, triggers-table row without lineage, Trigger fields or
    # None]. The last field: its bytes end the encoded state (``encode_state_parts``). A field
    # added later goes before it (and makes a new STATE_VERSION).
    outbox: list[list[Any]] = msgspec.field(default_factory=list)

    def next_fire_at(self) -> int | None:
        # A loop, not ``min(...)`` over a generator: three calls per fired timer.
        first = None
        for timer in self.timers.values():
            if first is None or timer.fire_at < first:
                first = timer.fire_at
        return first


# --- encoding -------------------------------------------------------------------------------
# The outbox's index among a state's fields (the last): the engine trims it on the undecoded
# row (``state_row``).
OUTBOX_AT = len(JourneyState.__struct_fields__) - 1
assert JourneyState.__struct_fields__[OUTBOX_AT] == "outbox"

_encode = msgspec.msgpack.Encoder().encode
# Literal[4]: STATE_VERSION (another version fails here, and then in the check below).
_decode = msgspec.msgpack.Decoder(tuple[Literal[4], JourneyState]).decode
assert STATE_VERSION == 4
EMPTY_OUTBOX = _encode([])  # in place of an outbox's bytes: the same state without it


def encode_state(state: JourneyState) -> bytes:
    return _encode((STATE_VERSION, state))


def encode_state_parts(state: JourneyState) -> tuple[bytes, bytes]:
    """``encode_state(state)`` in two parts: the bytes before its outbox (the last field), and the
    outbox's (the engine drops an outbox that became durable from the stored bytes without
    decoding them: ``EMPTY_OUTBOX`` in its place gives the same state with an empty outbox).
    Each part encoded once: the state without its outbox (``[]``, one byte, at its end:
    a MessagePack array has its header in front and no end mark), then the outbox. (Encoding the
    whole state and the outbox again, for its length, encoded the outbox twice: a third of a
    fired timer's encoding.) The state's own outbox is put back whatever happens."""
    outbox = state.outbox
    state.outbox = []
    try:
        head = _encode((STATE_VERSION, state))
    finally:
        state.outbox = outbox
    if head[-1:] != EMPTY_OUTBOX:
        raise AssertionError("the outbox is not the state's last field")
    return head[:-1], _encode(outbox)


def encode_row(row: list[Any]) -> bytes:
    """A row of ``state_row``, encoded again."""
    return _encode(row)


def state_row(data: bytes | memoryview) -> list[Any] | None:
    """The encoded state as ``[STATE_VERSION, [its fields]]`` of plain values, without building
    its objects (the engine trims the outbox at ``OUTBOX_AT`` of the fields in place); None if
    it is not this version's."""
    if data[:1] == b"[":  # a JSON version
        return None
    row: Any = msgspec.msgpack.decode(data)
    if not isinstance(row, list) or row[0] != STATE_VERSION:
        return None
    return row


def decode_state(data: bytes | memoryview) -> JourneyState:
    if data[:1] == b"[":
        return _decode_json(data)
    try:
        _, state = _decode(data)
    except msgspec.ValidationError as exc:
        # A value of another type than its field's annotation says (nothing writes one, but a
        # customer must not be stuck on it): built from the plain values, as they are.
        row = state_row(data)
        if row is None:
            raise ValueError(
                f"journey state of another version than {(*_JSON_VERSIONS, STATE_VERSION)}: {exc}"
            ) from None
        log.debug("journey state decoded from its plain values: %s", exc)
        return _from_fields(row[1])
    return state


def _from_fields(fields: list[Any]) -> JourneyState:
    state = JourneyState(*fields)
    state.stage = _STAGES[fields[_AT["stage"]]]
    blocked = fields[_AT["blocked"]]
    state.blocked = None if blocked is None else _REASONS[blocked]
    state.orders = {key: Order(*o) for key, o in fields[_AT["orders"]].items()}
    state.carts = {key: Cart(*c) for key, c in fields[_AT["carts"]].items()}
    state.timers = {key: Timer(*t) for key, t in fields[_AT["timers"]].items()}
    return state


_AT = {name: at for at, name in enumerate(JourneyState.__struct_fields__)}
_STAGES = {stage.value: stage for stage in Stage}  # faster than Stage(value)
_REASONS = {reason.value: reason for reason in Reason}


def _decode_json(data: bytes | memoryview) -> JourneyState:
    """Versions 1 to 3: a positional JSON array."""
    row = orjson.loads(data)
    version = row[0]
    if version not in _JSON_VERSIONS:
        raise ValueError(
            f"journey state version {version} is not one of {(*_JSON_VERSIONS, STATE_VERSION)}"
        )
    (
        _, customer_id, stage, erased, first_seen_at, consent, blocked, time_zone, orders,
        carts, first_order_at, last_order_at, last_order_id, orders_count, revenue_minor,
        last_nps, _, last_cart_add_at, last_marketing_at, unengaged,
        last_emitted, win_back_order, seen, timers, _, timer_keys, *rest,
    ) = row  # fmt: skip
    # Version 1 ends here; the outbox (at 26) and then the fields appended after it.
    outbox, outbox_seq, *rest = rest if version >= 2 else ([], 0)
    if version < 3:  # before version 3 a cart row held its last change event (slot 6)
        carts = [[*c[:6], *c[7:]] for c in carts]
    return JourneyState(
        customer_id=customer_id,
        stage=_STAGES[stage],
        erased=erased,
        first_seen_at=first_seen_at,
        consent=consent,
        blocked=None if blocked is None else _REASONS[blocked],
        time_zone=time_zone,
        orders={o[0]: Order(*o) for o in orders},
        carts={c[0]: Cart(*c) for c in carts},
        first_order_at=first_order_at,
        last_order_at=last_order_at,
        last_order_id=last_order_id,
        orders_count=orders_count,
        revenue_minor=revenue_minor,
        last_nps=last_nps,
        last_cart_add_at=last_cart_add_at,
        last_marketing_at=last_marketing_at,
        unengaged=unengaged,
        last_emitted=last_emitted,
        win_back_order=win_back_order,
        seen=seen,
        feedback_seen=rest[0] if rest else [],
        timers={key: Timer(*t) for key, t in zip(timer_keys, timers, strict=True)},
        outbox_seq=outbox_seq,
        prediction=rest[1] if len(rest) > 1 else None,
        outbox=outbox,
    )
