"""The engine's outbox and copy-on-write, with an in-memory table, sink and producer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

import streams.engine as engine_module
from schemas.codec import Codec
from schemas.records import OrderChanged, OrderItem, Trigger
from sinks.clickhouse.sink import ClickHouseSink
from streams.clock import Clock
from streams.engine import JourneyEngine, unpack, unpack_prefix
from streams.journey.config import JourneyConfig
from streams.settings import Settings
from tests.unit.test_sink import FakeClickHouse, FakeClient

CODEC = Codec.load()
T = 1_780_000_000_000


class World:
    """A table that outlives workers (the changelog), and one worker's engine, sink, producer."""

    def __init__(self, table: dict[bytes, bytes] | None = None) -> None:
        self.table: dict[bytes, bytes] = {} if table is None else table
        self.client = FakeClient()
        settings = Settings(_env_file=None, sink_retry_backoff="1ms")  # type: ignore[call-arg]
        self.sink = ClickHouseSink(settings, clickhouse=lambda s: FakeClickHouse(self.client))  # type: ignore[arg-type,return-value]
        for table_name in ("events", "deadletters"):
            self.sink.register_table(table_name, ("x",))
        self.sent: list[Trigger] = []
        self.failures: list[tuple[str, BaseException]] = []

        async def send(key: bytes, value: bytes) -> Any:
            self.sent.append(CODEC.decode(value, Trigger))
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

        async def failed(t: str, p: int, o: int, customer: str, exc: BaseException) -> None:
            self.failures.append((customer, exc))

        self.engine = JourneyEngine(
            self.table,
            self.sink,
            CODEC,
            JourneyConfig(),
            Clock(wall_ms=lambda: T),
            send,
            on_failure=failed,
        )
        self.sink.setup()

    def trigger_rows(self) -> list[Any]:
        return [
            row for table, rows, _ in self.client.inserts if "triggers" in table for row in rows
        ]


def placed(event_id: str = "e1", customer: str = "c1") -> OrderChanged:
    return OrderChanged(
        event_id, customer, T, "o1", "PLACED", 2_000, "EUR", [OrderItem("p", 1, 2_000)]
    )


async def test_decisions_stay_in_the_outbox_until_a_flush_stored_them() -> None:
    world = World()
    await world.engine.on_event(placed(), "shop.orders", 0, 5)
    (confirmation,) = world.sent
    value = world.table[b"c1"]
    assert unpack_prefix(value)[2] is True  # flagged: the rebuild finds it without decoding
    assert [entry[1][0] for entry in unpack(value).outbox] == [confirmation.trigger_id]
    await world.sink.flush()
    await world.engine.on_tick(0, "journey.ticks", 1)  # trims what the flush made durable
    value = world.table[b"c1"]
    assert unpack_prefix(value)[2] is False and unpack(value).outbox == []
    assert [row[0] for row in world.trigger_rows()] == [confirmation.trigger_id]


async def test_a_crash_before_the_flush_resends_the_outbox_with_the_same_ids() -> None:
    first = World()
    await first.engine.on_event(placed(), "shop.orders", 0, 5)
    # kill -9: the state reached the changelog, the row and the ack did not.
    second = World(first.table)
    second.engine.rebuild(second.table.items(), {0})
    # The redelivered event is a duplicate for the model, but its outputs are not lost.
    await second.engine.on_event(placed(), "shop.orders", 0, 5)
    await second.engine.on_tick(0, "journey.ticks", 9)
    await second.sink.flush()
    assert [t.trigger_id for t in second.sent] == [t.trigger_id for t in first.sent]
    assert [row[0] for row in second.trigger_rows()] == [first.sent[0].trigger_id]
    assert second.engine.resent == 1
    await second.engine.on_tick(0, "journey.ticks", 10)
    assert unpack(second.table[b"c1"]).outbox == []


async def test_a_recovered_outbox_is_resent_on_the_partitions_tick() -> None:
    first = World()
    await first.engine.on_event(placed(), "shop.orders", 0, 5)
    second = World(first.table)
    second.engine.rebuild(second.table.items(), {0})
    await second.engine.on_tick(0, "journey.ticks", 9)
    await second.sink.flush()
    assert [t.trigger_id for t in second.sent] == [t.trigger_id for t in first.sent]
    assert len(second.trigger_rows()) == 1


async def test_a_failing_step_leaves_the_stored_state_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World()
    await world.engine.on_event(placed(), "shop.orders", 0, 5)
    before = world.table[b"c1"]
    real_step: Callable[..., Any] = engine_module.step

    def half_applies(state: Any, *args: Any) -> Any:
        state.seen.append("half-applied")
        state.orders.clear()
        raise ValueError("year 97036 is out of range")

    monkeypatch.setattr(engine_module, "step", half_applies)
    with pytest.raises(ValueError):
        await world.engine.on_event(placed("e2"), "shop.orders", 0, 6)
    assert world.table[b"c1"] == before
    loaded = world.engine.load("c1")
    assert "half-applied" not in loaded.seen and loaded.orders
    monkeypatch.setattr(engine_module, "step", real_step)
    await world.engine.on_event(placed("e2"), "shop.orders", 0, 6)
    assert "e2" in world.engine.load("c1").seen


async def test_a_customer_failing_in_a_tick_is_reported_and_the_others_fire(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World()
    for customer in ("c1", "c2"):
        await world.engine.on_event(placed("e-" + customer, customer), "shop.orders", 0, 5)
    await world.sink.flush()
    real = engine_module.fire_due

    def broken_for_c1(state: Any, now: int, config: Any) -> Any:
        if state.customer_id == "c1":
            raise OverflowError("date value out of range")
        return real(state, now, config)

    monkeypatch.setattr(engine_module, "fire_due", broken_for_c1)
    for customer in ("c1", "c2"):
        world.engine.index.set(0, customer, T)
    await world.engine.on_tick(0, "journey.ticks", 3)
    assert [c for c, _ in world.failures] == ["c1"]


def test_a_far_timer_is_packed_not_crashed() -> None:
    state = engine_module.new_state("c1")
    from streams.journey.state import Timer

    state.timers["x"] = Timer("t", "WIN_BACK", 2**63 - 5, 2**63 - 5, "e")
    partition, next_fire, _ = unpack_prefix(engine_module.pack(3, state))
    assert partition == 3 and next_fire == engine_module.NO_TIMER


async def test_sums_beyond_int64_saturate_instead_of_failing() -> None:
    from schemas.bounds import MAX_MONEY_MINOR, MAX_QUANTITY
    from schemas.records import CartChanged

    world = World()
    for n in range(30):  # each line is within the bounds; their sum is not within Int64
        add = CartChanged(
            f"a{n}", "c1", T + n, "k", "PRODUCT_ADDED", f"p{n}", None, MAX_QUANTITY,
            MAX_MONEY_MINOR, "EUR",
        )  # fmt: skip
        await world.engine.on_event(add, "shop.cart", 0, n)
    assert world.engine.load("c1").carts["k"].value_minor == 2**63 - 1
