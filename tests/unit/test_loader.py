"""The loader's fact store against in-memory stand-ins (no broker, no ClickHouse)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from schemas.codec import Codec
from schemas.records import CustomerSnapshot, DeadLetter, JourneyEvent
from streams.runtime.acks import Acks
from streams.runtime.loader import FactStore, LoaderStats
from streams.settings import Settings

CODEC = Codec.load()
SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]
T = 1_780_000_000_000


class FakeSink:
    def __init__(self) -> None:
        self.rows: list[tuple[str, Any]] = []
        self.erased: list[str] = []

    def add(self, table: str, row: Any, *lineage: Any) -> None:
        self.rows.append((table, row))

    def add_latest(self, table: str, key: str, row: Any, *lineage: Any) -> None:
        self.rows.append((table, row))

    def erase(self, column: str, value: str, tables: Any) -> None:
        self.erased.append(value)


class FakeTopic:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes]] = []

    async def send(self, key: bytes, value: bytes) -> Any:
        self.sent.append((key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def store() -> tuple[FactStore, FakeSink, FakeTopic, Any]:
    sink, letters = FakeSink(), FakeTopic()
    loader = SimpleNamespace(
        settings=SETTINGS, sink=sink, acks=Acks(), codec=CODEC, stats=LoaderStats(),
        erased=set(), positions={},
    )  # fmt: skip
    return FactStore(loader, letters), sink, letters, loader  # type: ignore[arg-type]


async def test_a_fact_that_does_not_decode_is_a_dead_letter_and_loading_goes_on() -> None:
    facts, sink, letters, loader = store()
    topic = SETTINGS.topic("snapshots")
    await facts.add(topic, 1, 704, b"c1", b"\xc3\x01" + b"\x00" * 8 + b"junk")
    ((key, value),) = letters.sent
    assert key == b"c1"
    letter = CODEC.decode(value, DeadLetter)
    assert (letter.topic, letter.partition, letter.offset) == (topic, 1, 704)
    assert letter.reason_code == "unknown_fingerprint"
    assert loader.acks.pending == 1  # the message is acked after the letter's delivery
    assert loader.stats.undecodable == 1
    snapshot = CustomerSnapshot("c1", "PURCHASE", "NEW", T, 1, 100, True, T)
    await facts.add(topic, 1, 705, b"c1", CODEC.encode(snapshot))
    assert [table for table, _ in sink.rows] == ["customers"]


async def test_after_a_tombstone_no_fact_of_the_customer_is_stored() -> None:
    facts, sink, _, loader = store()
    await facts.add(SETTINGS.topic("snapshots"), 0, 1, b"c1", None)
    assert sink.erased == ["c1"] and "c1" in loader.erased
    event = JourneyEvent("e1", "page_view", "c1", T, T, "shop.page_views", 0, 0)
    await facts.add(SETTINGS.topic("journey_events"), 0, 2, b"c1", CODEC.encode(event))
    assert [table for table, _ in sink.rows] == ["erasures"]
    assert loader.stats.skipped_erased == 1
