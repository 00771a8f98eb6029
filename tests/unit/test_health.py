"""Readiness inputs and the aiokafka log limiter."""

from __future__ import annotations

import asyncio
import logging

from streams.runtime.health import BrokerProbe, Health, QuietKafkaLogs
from tests.integration.conftest import free_port


async def test_the_probe_sees_a_broker_go_away_and_come_back(caplog) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    probe = BrokerProbe(f"127.0.0.1:{port}")
    assert not await probe.probe_once()
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
    try:
        assert await probe.probe_once()
    finally:
        server.close()
        await server.wait_closed()
    health = Health(probe, lambda: True)
    assert health.problem() is None
    with caplog.at_level(logging.WARNING, logger="streams.runtime.health"):
        probe.observe(False)
        probe.observe(False)
        assert health.problem() == "the Kafka broker is unreachable"
        probe.observe(True)
    assert [r.levelname for r in caplog.records] == ["ERROR", "WARNING"]  # one per change
    assert Health(probe, lambda: False).problem() == "ClickHouse is unreachable or not answering"


async def test_a_stop_as_the_probe_connects_ends_the_probe(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A stop whose cancel arrives in the turn of the loop in which the probe's connection
    opens. ``asyncio.wait_for`` of Python 3.11 then returned the connection and forgot the
    cancel: the probe went on for ever, and so did the stop that awaited it."""
    for turns in range(4):  # the cancel 0-3 turns of the loop after the connection opened
        connected: asyncio.Future[tuple[None, Writer]] = asyncio.get_running_loop().create_future()

        async def open_connection(host: str, port: int, opened=connected) -> tuple[None, Writer]:  # type: ignore[no-untyped-def]
            return await opened

        monkeypatch.setattr(asyncio, "open_connection", open_connection)
        probe = BrokerProbe("127.0.0.1:1")
        probe.start()
        task = probe._task
        assert task is not None
        await asyncio.sleep(0.01)  # the probe waits for its connection
        connected.set_result((None, Writer()))
        for _ in range(turns):
            await asyncio.sleep(0)
        stopping = asyncio.ensure_future(probe.stop())
        await asyncio.wait([stopping], timeout=0.5)  # the probe's retry cancel is 1 s away
        assert stopping.done() and task.done(), f"still probing {turns} turns after the connection"


class Writer:
    def close(self) -> None:
        pass

    async def wait_closed(self) -> None:
        pass


def test_repeated_kafka_errors_are_let_through_once_per_interval() -> None:
    now = [0.0]
    quiet = QuietKafkaLogs(every=30, clock=lambda: now[0])

    def record(name: str, msg: str, level: int = logging.ERROR) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, msg, (), None)

    passed = [quiet.filter(record("aiokafka.conn", "Unable connect to %s")) for _ in range(3200)]
    assert passed.count(True) == 1
    assert quiet.filter(record("aiokafka.conn", "another message"))
    assert quiet.filter(record("streams.runtime.engine", "Unable connect to %s"))  # not aiokafka's
    assert quiet.filter(record("aiokafka.conn", "Unable connect to %s", logging.INFO))
    now[0] = 31
    summary = record("aiokafka.conn", "Unable connect to %s")
    assert quiet.filter(summary) and "3199 more like it" in str(summary.msg)


def test_a_routine_rebalance_heartbeat_is_info_not_a_warning() -> None:
    """aiokafka warns "Heartbeat failed ... because it is rebalancing" whenever a member joins
    or leaves the group: shown at INFO (``--log-level info``), hidden at the default level."""
    quiet = QuietKafkaLogs()
    name = "aiokafka.consumer.group_coordinator"
    logger = logging.getLogger(name)
    before = logger.level
    try:
        for level, shown in ((logging.WARNING, False), (logging.INFO, True)):
            logger.setLevel(level)
            record = logging.LogRecord(
                name, logging.WARNING, __file__, 1,
                "Heartbeat failed for group %s because it is rebalancing", ("g",), None,
            )  # fmt: skip
            assert quiet.filter(record) is shown
            assert record.levelname == "INFO"
        other = logging.LogRecord(name, logging.WARNING, __file__, 1, "Heartbeat failed", (), None)
        assert quiet.filter(other) and other.levelname == "WARNING"  # other warnings stay
    finally:
        logger.setLevel(before)


async def test_a_failing_acknowledgement_makes_the_worker_not_ready() -> None:
    from streams.runtime.acks import Acks

    acks = Acks(interval=0.01)
    broken = True

    async def write_states() -> None:
        if broken:
            raise OSError("the store is closed")

    acks.before_flush.append(write_states)
    health = Health(BrokerProbe("127.0.0.1:1"), acknowledging=lambda: not acks.failing)
    acks.start()
    try:
        await asyncio.sleep(0.05)
        assert health.problem() is not None and "acknowledging fails" in str(health.problem())
        broken = False
        await asyncio.sleep(0.05)
        assert health.problem() is None
    finally:
        await acks.stop()
