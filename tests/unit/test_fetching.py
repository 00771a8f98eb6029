"""The event-time merge's pauses on Faust's consumer, and the fetch responses it reads the ends
from (streams/runtime/fetching.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import pytest
from faust.types import TP

from streams.runtime.commit_guard import install_commit_guard
from streams.runtime.fetching import FetchControl, install_fetch_control

A, B = TP("shop.orders", 0), TP("shop.customers", 0)


def consumer(assigned: set[TP]) -> Any:
    app = faust.App("test-fetching", broker="kafka://127.0.0.1:1", autodiscover=False)
    install_commit_guard(app)
    install_fetch_control(app)
    made: Any = app.consumer  # created, not started: no broker needed
    assert isinstance(made, FetchControl)
    made.assignment = lambda: set(assigned)
    made._set_active_tps(set(assigned))
    return made


def test_a_paused_partition_is_not_fetched_but_the_batch_it_is_in_still_arrives() -> None:
    c = consumer({A, B})
    c.pause_fetching(A)
    assert c._get_active_partitions() == {B}  # not asked of aiokafka: its fetched data waits
    assert A in c._buffered_partitions  # Faust's getmany still yields the batch it is in
    c.resume_fetching(A)
    assert c._get_active_partitions() == {A, B} and A not in c._buffered_partitions


def test_faust_lifting_its_own_buffer_pause_does_not_lift_the_merges() -> None:
    c = consumer({A, B})
    c.pause_fetching(A)
    c.on_buffer_full(A)  # Faust's stream buffer filled up too, then drained
    c.on_buffer_drop(A)
    assert A not in c._get_active_partitions()
    c.on_buffer_full(B)  # Faust's own pauses still work
    assert B not in c._get_active_partitions()
    c.on_buffer_drop(B)
    assert B in c._get_active_partitions()


def test_a_resume_does_not_undo_faust_pausing_for_a_rebalance_or_recovery() -> None:
    c = consumer({A, B})
    c.pause_fetching(A)
    c.pause_partitions({A, B})  # Faust: a rebalance begins, or recovery
    c.resume_fetching(A)
    assert c._get_active_partitions() == set()
    c.resume_partitions({A, B})
    assert c._get_active_partitions() == {A, B}


def test_a_new_assignment_ends_the_merges_pauses_and_reconcile_resumes_forgotten_ones() -> None:
    c = consumer({A, B})
    c.pause_fetching(A)
    c._set_active_tps({A, B})  # a rebalance assigned them again
    assert c.merge_paused == frozenset() and c._get_active_partitions() == {A, B}
    c.pause_fetching(A)
    c.pause_fetching(B)
    c.reconcile([B])  # the merge holds only B paused
    assert c.merge_paused == {B} and c._get_active_partitions() == {A}


def test_a_partition_no_longer_assigned_is_not_fetched_again_on_resume() -> None:
    c = consumer({A, B})
    c.pause_fetching(A)
    c.assignment = lambda: {B}
    c.resume_fetching(A)
    assert A not in c._get_active_partitions()


def test_each_poll_is_announced_after_its_records_came_back_before_any_is_handed_over() -> None:
    """``after_poll`` listeners (the merge's end offsets) run once per ``_getmany``, after the
    records came back from the fetcher: Faust hands none over before they ran."""
    c = consumer({A, B})
    seen: list[str] = []
    fetched = {A: ["record"]}

    async def fetcher_getmany(active: Any, timeout: float) -> Any:
        seen.append("fetched")
        return fetched

    c._thread.getmany = fetcher_getmany  # Faust's consumer thread: aiokafka's fetcher
    c.after_poll.append(lambda: seen.append("announced"))
    assert asyncio.run(c._getmany({A, B}, 0.1)) is fetched
    assert seen == ["fetched", "announced"]


async def test_watched_fetches_are_recorded_and_a_failed_one_makes_its_brokers_ends_unknown() -> (
    None
):
    """``watch_fetches``: each fetch response a consumer's client receives is recorded with its
    broker; a fetch that raises (the broker gone, a timeout, a cancelled fetch) makes that
    broker's ends unknown and still raises; other requests pass untouched."""
    from types import SimpleNamespace

    from aiokafka.protocol.fetch import FetchRequest

    from streams.runtime.fetching import FetchedEnds, watch_fetches

    answers: list[Any] = []
    sent: list[Any] = []

    async def send(node_id: int, request: Any, **kwargs: Any) -> Any:
        sent.append((node_id, request, kwargs))
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    consumer = SimpleNamespace(_client=SimpleNamespace(send=send))
    fetched = FetchedEnds()
    watch_fetches(consumer, fetched)
    fetch = FetchRequest(500, 1, 1 << 20, 0, [("orders", [(0, 40, 1 << 20)])])
    response = SimpleNamespace(topics=[("orders", [(0, 0, 42, 42, 0, None, -1, b"")])])
    answers.append(response)
    assert await consumer._client.send(1, fetch) is response
    assert fetched.known_ends([("orders", 0)]) == {("orders", 0): 42}
    metadata = object()  # not a fetch: passed on, not read
    answers.append("metadata answer")
    assert await consumer._client.send(1, metadata, group=2) == "metadata answer"
    assert sent[-1] == (1, metadata, {"group": 2})
    assert fetched.known_ends([("orders", 0)]) == {("orders", 0): 42}
    answers.append(TimeoutError("no answer"))
    with pytest.raises(TimeoutError):
        await consumer._client.send(1, fetch)
    assert fetched.known_ends([("orders", 0)]) == {("orders", 0): None}
