"""``Acks`` with ``Outputs``: a message is acknowledged only after its snapshot is on the broker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streams.runtime.acks import Acks
from streams.runtime.outputs import Outputs
from streams.settings import Settings
from tests.unit.loops import assert_stop_ends_when_a_wake_up_races_it

SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]
SNAPSHOTS = SETTINGS.topic("snapshots")


class Producer:
    """Deliveries complete at once; ``fail`` refuses sends; ``gate`` holds each send."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes | None]] = []
        self.fail = False
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def produce(self, topic: str, key: bytes, value: bytes | None, headers: Any) -> Any:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RuntimeError("the producer's buffer is full")
        self.sent.append((key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def make() -> tuple[Producer, Acks, Outputs]:
    producer = Producer()
    acks = Acks()
    return producer, acks, Outputs(SETTINGS, producer.produce, acks)


async def test_a_snapshot_that_could_not_be_sent_stays_queued_and_holds_its_ack() -> None:
    producer, acks, outputs = make()
    acked: list[str] = []
    outputs.snapshot(b"c1", b"s1")
    outputs.snapshot(b"c2", b"s2")
    acks.after(lambda: acked.append("m1"))
    producer.fail = True
    with pytest.raises(RuntimeError):
        await acks.flush()
    assert acked == [] and producer.sent == []
    assert outputs.queued == 2  # counted in the worker's "unacknowledged" until sent
    producer.fail = False
    assert await acks.flush() == 1
    assert acked == ["m1"] and outputs.queued == 0
    assert sorted(producer.sent) == [(b"c1", b"s1"), (b"c2", b"s2")]


async def test_a_message_handled_while_snapshots_are_sent_waits_for_the_next_flush() -> None:
    producer, acks, outputs = make()
    acked: list[str] = []
    outputs.snapshot(b"c1", b"s1")
    acks.after(lambda: acked.append("m1"))
    producer.gate = asyncio.Event()
    flush = asyncio.ensure_future(acks.flush())
    await producer.entered.wait()
    # The agent goes on while the flush awaits the producer: m2's snapshot is queued after the
    # flush took the queue, so m2 must not be acknowledged by this flush.
    outputs.snapshot(b"c2", b"s2")
    outputs.snapshot(b"c1", b"s1-newer")
    acks.after(lambda: acked.append("m2"))
    producer.gate.set()
    assert await flush == 1
    assert acked == ["m1"]
    assert producer.sent == [(b"c1", b"s1")]
    assert await acks.flush() == 1
    assert acked == ["m1", "m2"]
    assert sorted(producer.sent[1:]) == [(b"c1", b"s1-newer"), (b"c2", b"s2")]


async def test_an_erasure_during_a_send_is_not_followed_by_an_older_snapshot() -> None:
    producer, acks, outputs = make()
    outputs.snapshot(b"c1", b"s1")
    outputs.snapshot(b"c2", b"s2")
    producer.gate = asyncio.Event()
    flush = asyncio.ensure_future(acks.flush())
    await producer.entered.wait()
    erase = asyncio.ensure_future(outputs.erased(b"c2"))
    producer.gate.set()
    await flush
    await erase
    await acks.flush()
    c2 = [value for key, value in producer.sent if key == b"c2"]
    assert c2 == [None], producer.sent  # its snapshot, taken off the queue, is never sent


@pytest.mark.parametrize("turns", range(6))
async def test_stop_ends_the_loop_even_when_a_wake_up_races_the_cancellation(turns: int) -> None:
    await assert_stop_ends_when_a_wake_up_races_it(Acks(interval=10), turns)
