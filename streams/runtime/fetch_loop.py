"""Faust's fetch loop without four futures per message (faust-streaming 0.15.3).

Faust hands every fetched message to the conductor with
``await self.wait_first(callback(message), self.suspend_flow.wait())``: each message costs a task
for the callback, one for ``suspend_flow.wait()``, two more for the service's stopped and crashed
events, and an ``asyncio.wait`` over the four. Profiled under load (issue 13), that machinery was
about as much CPU as everything the journey worker does with the message; awaiting the callback
directly halved the cost of a Faust agent that only acknowledges.

``DirectCallback._drain_messages`` is Faust's loop with one change: while the flow is active
(``suspend_flow`` not set), the callback is awaited directly. The callback returns at once unless
the stream's queue is full or the producer buffer is above its limit; then it waits until the
agent took messages off the queue or the producer drained, which both go on during a rebalance
(the stream keeps taking messages, and skips those of a stopped flow; ``commit_guard.py`` makes
sure such a skipped message is delivered again). If a rebalance happened meanwhile, the rest of
the batch is stale and the read offset is left where the rebalance's seek put it (setting it to
the stale message's offset would make Faust drop the messages below it when they are fetched
again). A stop cancels the loop in its await, as before.
While the flow is suspended (a rebalance), Faust's own ``wait_first`` path is taken unchanged.

The method body is a copy of the pinned version's (``Consumer._drain_messages``): the
``PINNED_FAUST_VERSION`` check of ``commit_guard.install_commit_guard`` covers this module too.
Why not upstream: a pull request to faust-streaming is the right home for the change, and this
file is what it would contain; until a release carries it, the worker cannot wait for one.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from faust.transport.consumer import CONSUMER_FETCHING, Consumer
from mode import Service, ServiceT


class DirectCallback(Consumer):
    """Mixin for a concrete Faust consumer class (see ``commit_guard.guarded``)."""

    async def _drain_messages(self, fetcher: ServiceT) -> None:  # pragma: no cover
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        suspended = self.suspend_flow.is_set

        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for

        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                ait: Any = getmany(timeout=1.0)
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0

                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            if suspended():
                                await self.wait_first(callback(message), self.suspend_flow.wait())
                            else:  # the change: no four futures per message
                                generation = self.app.consumer_generation_id
                                await callback(message)
                                if self.app.consumer_generation_id != generation:
                                    # A rebalance happened while the callback waited: the seek
                                    # that ended it set the read offset; this batch is stale.
                                    break
                            set_read_offset(tp, offset)
                    unset_flag(flag_consumer_fetching)

        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)
