"""Several journey workers and the loader, each its own process, in one consumer group.

Both tests run two worlds on the same input topics, published live by ``journey simulate``: the
world under test (its processes started, killed, added and stopped while the shop publishes) and
a clean world (one worker and a loader, never disturbed; its own groups, topics and ClickHouse).

* ``test_kills_of_workers_and_loader``: three workers and the loader. A worker is killed (-9)
  three times (each time the one holding the most partitions that have not moved yet; more kills,
  up to five, only if some partition has still not moved: five always suffice, as the first
  moves at least two partitions and each further one at least one) and the loader twice. After each worker
  kill the survivors must take over all six partitions, and the restarted worker must get some
  back: every partition moves and comes back.
* ``test_worker_added_and_removed_mid_stream``: one worker and the loader; a second worker joins
  mid-stream and must take partitions over, then the first is stopped (SIGTERM) and the second
  must take them all.

Then, once the workers' group has committed the end of every input (and the ticks sent until
then, so that recovered outboxes are re-sent), the workers stop, and once the loader has
committed the end of every fact topic: ``events`` holds exactly one physical row per accepted
event (what was published, minus dead letters and erased customers), ``triggers`` and
``deadletters`` one physical row per key, no trigger id has two statuses, every trigger id
published on ``journey.triggers`` carries one decision (its records differ at most in
``emitted_at``) and is a row, and no decision of the clean world is missing (compared where the
decision does not depend on the order of a customer's topics, as ``test_crash_consistency``
does, with the helpers in ``support.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from schemas.codec import DecodeError
from schemas.records import (
    TOPIC_RECORDS,
    CustomerChanged,
    DeadLetter,
    InputEvent,
    JourneyEvent,
    Trigger,
)
from tests.integration.conftest import (
    BOOTSTRAP,
    JOURNEY,
    Env,
    Worker,
    free_port,
    separate_outputs,
)
from tests.integration.support import CODEC, decisions_in, order_robust_decisions, read_topic, sql

PARTITIONS = 6
# Events per second the shop publishes while processes are killed, added and removed.
RATE = float(os.environ.get("JOURNEY_MULTI_RATE", "40"))
ALL = set(range(PARTITIONS))
# The shop publishes at least this many: enough decisions to compare with the clean world.
MIN_EVENTS = 2500


def status_of(process: Worker) -> dict[str, Any]:
    """The newest status line the process printed ({} before its first)."""
    for line in reversed(process.output):
        if line.startswith("{"):
            try:
                status = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(status, dict):
                return status
    return {}


class Group:
    """The loader and journey workers of one world, each a process of its own."""

    def __init__(self, env: Env, start_role: Callable[..., Worker], **extra: str) -> None:
        self.env = env
        self.start_role = start_role
        self.extra = extra
        self.settings = env.settings(
            **{k.removeprefix("JOURNEY_").lower(): v for k, v in extra.items()}
        )
        self.loader: Worker | None = None
        self.workers: dict[str, Worker] = {}
        self.ports: dict[str, str] = {}
        self.heals: dict[str, int] = {}  # commit heals of each stopped worker (its last status)

    def start_loader(self) -> None:
        self.loader = self.start_role("loader", **self.extra)

    def start_worker(self, name: str) -> None:
        port = self.ports.setdefault(name, str(free_port()))  # the same one after a restart
        self.workers[name] = self.start_role(
            "worker", **{**self.extra, "JOURNEY_WORKER_NAME": name, "JOURNEY_WORKER_WEB_PORT": port}
        )

    def kill_worker(self, name: str) -> None:
        self.workers.pop(name).kill()

    def note_heals(self, name: str, worker: Worker) -> None:
        """Keep the commit heals ``worker`` last reported, before it stops."""
        self.heals[name] = int(status_of(worker).get("commit_heals", 0))

    def stop_worker(self, name: str) -> int:
        worker = self.workers.pop(name)
        self.note_heals(name, worker)
        return worker.stop()

    def stop_workers(self) -> None:
        """Every worker stopped (SIGTERM) at once; each must stop cleanly."""
        stopping, self.workers = self.workers, {}
        for name, worker in stopping.items():
            self.note_heals(name, worker)
        with ThreadPoolExecutor(len(stopping) or 1) as pool:
            codes = dict(zip(stopping, pool.map(Worker.stop, stopping.values()), strict=True))
        assert set(codes.values()) <= {0}, f"workers did not stop cleanly: {codes}"

    def partitions(self) -> dict[str, set[int]]:
        """Each live worker's partitions, as it last reported them. A worker that died by
        itself fails the test."""
        for name, process in [*self.workers.items(), ("loader", self.loader)]:
            if process is not None and process.process.poll() is not None:
                raise AssertionError(
                    f"{name} exited with {process.process.returncode}:\n"
                    + "".join(process.output[-40:])
                )
        return {
            name: set(status_of(process).get("partitions", []))
            for name, process in self.workers.items()
        }

    def shared_by(self, names: set[str]) -> bool:
        """The live workers are ``names``, and every partition is with exactly one of them."""
        owned = self.partitions()
        return (
            set(owned) == names
            and all(owned.values())
            and sum(len(p) for p in owned.values()) == PARTITIONS
            and set().union(*owned.values()) == ALL
        )

    def consumed(self, name: str) -> int:
        return int(status_of(self.workers[name]).get("consumed", 0))

    def wait(self, condition: Callable[[], bool], what: str, timeout: float = 150) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting until {what}; partitions {self.partitions()}")

    # --- everything consumed, everything loaded ---------------------------------------------
    def drain(self) -> None:
        """The workers' group has committed the end of every input, then of the ticks sent
        until then (recovered outboxes are re-sent on a tick); the workers stop (SIGTERM) and
        the loader commits the end of every fact topic."""
        s = self.settings
        inputs = [*s.input_topics().values(), s.topic("repartition")]
        try:
            self.wait(lambda: lagging(s.app_id, inputs) == [], "the workers consumed every input")
        except AssertionError as exc:
            status = {n: status_of(w) for n, w in self.workers.items()}
            raise AssertionError(f"{exc}; behind (topic, partition, committed, end): "
                                 f"{lagging(s.app_id, inputs)}; workers: {status}") from exc  # fmt: skip
        ticks = end_offsets([s.topic("ticks")])
        self.wait(lambda: lagging(s.app_id, [s.topic("ticks")], ticks) == [], "ticks handled")
        self.stop_workers()
        self.wait(
            lambda: lagging(f"{s.app_id}-loader", s.fact_topics()) == [],
            "the loader stored every fact",
        )


def end_offsets(topics: list[str]) -> dict[TopicPartition, int]:
    async def go() -> dict[TopicPartition, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
            return dict(await consumer.end_offsets(tps))
        finally:
            await consumer.stop()

    return asyncio.run(go())


def lagging(
    group: str, topics: list[str], ends: dict[TopicPartition, int] | None = None
) -> list[tuple[str, int, int, int]]:
    """(topic, partition, committed, end) of every partition ``group`` has not committed up to
    its end offset (``ends``: these ends, not the current ones)."""
    ends = ends if ends is not None else end_offsets(topics)

    async def go() -> dict[TopicPartition, Any]:
        admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
        await admin.start()
        try:
            return dict(await admin.list_consumer_group_offsets(group, partitions=list(ends)))
        finally:
            await admin.close()

    committed = asyncio.run(go())
    behind = []
    for tp, end in ends.items():
        done = committed[tp].offset if tp in committed else -1
        if end > 0 and done < end:
            behind.append((tp.topic, tp.partition, done, end))
    return behind


def simulate(env: Env, seed: int, rate: float = RATE) -> subprocess.Popen[str]:
    """The shop, publishing at ``rate`` until the test stops it (``stop_simulator``)."""
    log = (env.tmp / "simulate.log").open("w")
    return subprocess.Popen(
        [JOURNEY, "simulate", "--seed", str(seed), "--customers", "600", "--rate", str(rate),
         "--speed", "20000", "--max-events", "20000", "--bad-rate", "0", "--run-id", "multi"],
        env=env.environ(), cwd=env.tmp, stdout=log, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def stop_simulator(simulator: subprocess.Popen[str], group: Group) -> None:
    """Once the shop has published ``MIN_EVENTS`` (enough decisions to compare)."""
    inputs = list(group.settings.input_topics().values())
    group.wait(
        lambda: sum(end_offsets(inputs).values()) >= MIN_EVENTS, f"{MIN_EVENTS} events published"
    )
    assert simulator.poll() is None, "the shop stopped publishing before the test was done"
    simulator.send_signal(signal.SIGINT)
    try:
        simulator.wait(30)
    except subprocess.TimeoutExpired:
        simulator.kill()
        simulator.wait(30)


def worlds(env: Env, start_role: Callable[..., Worker]) -> tuple[Group, Group]:
    """The world under test and the clean one, their loaders started, topics created."""
    env.vars["JOURNEY_PARTITIONS"] = str(PARTITIONS)
    group = Group(env, start_role)
    clean = Group(env, start_role, **separate_outputs(env, "clean"))
    env.journey("topics", "create")
    env.journey("topics", "create", **clean.extra)
    for world in (group, clean):
        world.start_loader()
    clean.start_worker("clean")
    return group, clean


def published(env: Env, group: Group) -> tuple[list[tuple[str, InputEvent]], set[str], set[str]]:
    """What the shop published that the journey accepts: (short topic, event) of every input
    record not dead-lettered, the erased customers, and the event ids ``events`` must hold."""
    settings = group.settings
    letters = [CODEC.decode(m.value, DeadLetter) for m in read_topic(
        settings.topic("deadletter"), PARTITIONS)]  # fmt: skip
    rejected = {(d.topic, d.partition, d.offset) for d in letters}
    events: list[tuple[str, InputEvent]] = []
    undecodable = 0
    for short, topic in settings.input_topics().items():
        for message in read_topic(topic, PARTITIONS):
            if (message.topic, message.partition, message.offset) in rejected:
                continue
            try:
                events.append((short, CODEC.decode(message.value, TOPIC_RECORDS[short])))
            except DecodeError:
                undecodable += 1
    assert not undecodable, f"{undecodable} input records neither decoded nor dead-lettered"
    erased = {
        e.customer_id for _, e in events if isinstance(e, CustomerChanged) and e.action == "ERASED"
    }
    kept = {e.event_id for _, e in events if e.customer_id not in erased}
    print(f"published {sum(1 for _ in events) + len(rejected)} records, {len(rejected)} dead "
          f"letters, {len(erased)} customers erased: {len(kept)} events to store")  # fmt: skip
    return events, erased, kept


def trigger_records(topic: str) -> dict[str, list[Trigger]]:
    by_id: dict[str, list[Trigger]] = defaultdict(list)
    for message in read_topic(topic, PARTITIONS):
        trigger = CODEC.decode(message.value, Trigger)
        by_id[trigger.trigger_id].append(trigger)
    return by_id


def check_stored_once(env: Env, group: Group, kept: set[str], erased: set[str]) -> int:
    """One physical row per accepted event and per decision; one decision per trigger id.
    Returns how many records of ``journey.events`` and ``journey.triggers`` were published
    again (a redelivered message, a re-sent outbox), that is, how much there was to dedupe."""
    (counts,) = sql(env, """SELECT
        (SELECT count() FROM journey.events) AS events,
        (SELECT count() FROM journey.events FINAL) AS events_final,
        (SELECT uniqExact(event_id) FROM journey.events) AS event_ids,
        (SELECT count() FROM journey.triggers) AS decisions,
        (SELECT count() FROM journey.triggers FINAL) AS decisions_final,
        (SELECT uniqExact(customer_id, trigger_id, status) FROM journey.triggers) AS decision_keys,
        (SELECT count() FROM (SELECT trigger_id FROM journey.triggers GROUP BY trigger_id
                              HAVING uniqExact(status) > 1)) AS split_trigger_ids,
        (SELECT count() FROM journey.deadletters) AS letters,
        (SELECT count() FROM journey.deadletters FINAL) AS letters_final,
        (SELECT uniqExact(dead_letter_id) FROM journey.deadletters) AS letter_ids""")  # fmt: skip
    print(f"stored: {counts}")
    stored = {r["event_id"] for r in sql(env, "SELECT event_id FROM journey.events")}
    facts = read_topic(group.settings.topic("journey_events"), PARTITIONS)
    event_ids = [CODEC.decode(m.value, JourneyEvent).event_id for m in facts]
    on_topic = set(event_ids)
    missing = kept - stored
    assert stored == kept, (
        f"accepted but not stored: {sorted(missing)[:10]} (of these, published on "
        f"journey.events by a worker: {sorted(missing & on_topic)[:10]}); "
        f"stored but not accepted: {sorted(stored - kept)[:10]}"
    )
    assert counts["events"] == counts["events_final"] == counts["event_ids"] == len(kept), counts
    assert counts["decisions"] == counts["decisions_final"] == counts["decision_keys"], counts
    assert counts["split_trigger_ids"] == 0, counts
    assert counts["letters"] == counts["letters_final"] == counts["letter_ids"], counts

    # journey.triggers: a trigger id published twice (a re-sent outbox, a redelivered message)
    # is the same decision each time; each is an EMITTED row (unless its customer was erased).
    by_id = trigger_records(group.settings.topic("triggers"))
    for trigger_id, records in by_id.items():
        contents = {
            json.dumps({**dataclasses.asdict(t), "emitted_at": None}, sort_keys=True)
            for t in records
        }
        assert len(contents) == 1, f"trigger id {trigger_id} published for {len(contents)} " \
            f"different decisions: {sorted(contents)}"  # fmt: skip
    emitted_rows = {
        r["trigger_id"]
        for r in sql(env, "SELECT trigger_id FROM journey.triggers WHERE status = 'EMITTED'")
    }
    sent = {i for i, records in by_id.items() if records[0].customer_id not in erased}
    assert sent == emitted_rows, (
        f"published but not stored: {sorted(sent - emitted_rows)[:10]}; "
        f"stored but not published: {sorted(emitted_rows - sent)[:10]}"
    )
    again_events = len(event_ids) - len(on_topic)
    again_triggers = sum(len(records) - 1 for records in by_id.values())
    print(f"published again: {again_events} events, {again_triggers} triggers")
    return again_events + again_triggers


def check_against_clean(
    env: Env, group: Group, clean: Group, events: list[tuple[str, InputEvent]], seed: int
) -> None:
    """No decision and no published trigger of the clean world is missing (where decisions do
    not depend on the order of a customer's topics: ``order_robust_decisions``)."""
    robust, robust_emits = order_robust_decisions(events, group.settings.journey, seed)
    tested, reference = decisions_in(env), decisions_in(env, **clean.extra)
    compared = reference & robust
    assert len(compared) >= 0.25 * len(reference) and len(compared) >= 100, (
        len(compared),
        len(reference),
    )
    missing = compared - tested
    assert not missing, f"{len(missing)} of {len(compared)} decisions lost: {sorted(missing)[:10]}"
    clean_ids = set(trigger_records(clean.settings.topic("triggers")))
    compared_ids = clean_ids & robust_emits
    assert len(compared_ids) >= 0.25 * len(clean_ids) and compared_ids
    lost = compared_ids - set(trigger_records(group.settings.topic("triggers")))
    assert not lost, f"{len(lost)} of {len(compared_ids)} triggers never published: {sorted(lost)}"
    print(f"compared {len(compared)} of the clean world's {len(reference)} decisions and "
          f"{len(compared_ids)} of its {len(clean_ids)} triggers")  # fmt: skip


def check(env: Env, group: Group, clean: Group, seed: int) -> int:
    """Everything consumed and loaded, then the checks; returns what was published again."""
    with ThreadPoolExecutor(2) as pool:  # each world its own groups, topics and ClickHouse
        for done in [pool.submit(world.drain) for world in (group, clean)]:
            done.result()
    events, erased, kept = published(env, group)
    again = check_stored_once(env, group, kept, erased)
    (row,) = sql(env, "SELECT count() AS n FROM journey.events", **clean.extra)
    assert row["n"] == len(kept), (row, len(kept))  # the clean world is a fair reference
    check_against_clean(env, group, clean, events, seed)
    return again


def test_kills_of_workers_and_loader(env: Env, start_role: Any) -> None:
    seed = int(os.environ.get("JOURNEY_CRASH_SEED", str(time.time_ns() % 10_000)))
    rng = random.Random(seed)
    print(f"multi-worker crash test seed {seed}")
    group, clean = worlds(env, start_role)
    names = {"w1", "w2", "w3"}
    for name in sorted(names):
        group.start_worker(name)
    group.wait(lambda: group.shared_by(names), "three workers share the partitions")
    simulator = simulate(env, seed)
    try:
        group.wait(lambda: sum(group.consumed(n) for n in names) > 100, "the workers consume")
        moved: set[int] = set()
        worker_kills = loader_kills = 0
        while worker_kills < 3 or (moved != ALL and worker_kills < 5):
            time.sleep(rng.uniform(0.2, 2.0))  # a random moment of its work
            owned = group.partitions()
            victim = max(sorted(owned), key=lambda n: len(owned[n] - moved))
            held = owned[victim]
            group.kill_worker(victim)
            worker_kills += 1
            # Its partitions go to the others after the session timeout...
            group.wait(
                lambda others=names - {victim}: group.shared_by(others),
                f"{victim}'s {held} are taken over",
            )
            moved |= held
            if loader_kills < 2:  # ... while the loader is killed too, and restarted.
                assert group.loader is not None
                group.loader.kill()
                group.start_loader()
                loader_kills += 1
            # ... and come back (some) when it is restarted.
            group.start_worker(victim)
            group.wait(lambda: group.shared_by(names), f"{victim} gets partitions again")
            print(f"kill {worker_kills}: {victim} held {sorted(held)}; now {group.partitions()}")
        assert moved == ALL, f"partitions {sorted(ALL - moved)} never moved"
        assert loader_kills == 2
        stop_simulator(simulator, group)
    finally:
        if simulator.poll() is None:
            simulator.kill()
    # Killed workers left facts to publish again: the exactly-once checks had work to do.
    assert check(env, group, clean, seed) > 0


def test_worker_added_and_removed_mid_stream(env: Env, start_role: Any) -> None:
    seed = int(os.environ.get("JOURNEY_CRASH_SEED", str(time.time_ns() % 10_000)))
    print(f"worker hand-over test seed {seed}")
    group, clean = worlds(env, start_role)
    group.start_worker("w1")
    group.wait(lambda: group.shared_by({"w1"}), "w1 has every partition")
    simulator = simulate(env, seed, rate=3 * RATE)  # no session timeouts to wait for here
    try:
        group.wait(lambda: group.consumed("w1") > 300, "w1 consumes")
        group.start_worker("w2")  # joins mid-stream: w1 hands some partitions over
        group.wait(lambda: group.shared_by({"w1", "w2"}), "w2 takes partitions over")
        group.wait(lambda: group.consumed("w2") > 200, "w2 consumes")
        assert group.stop_worker("w1") == 0  # leaves mid-stream: w2 takes the rest
        group.wait(lambda: group.shared_by({"w2"}), "w2 takes every partition")
        before = group.consumed("w2")
        group.wait(lambda: group.consumed("w2") > before + 200, "w2 consumes them")
        stop_simulator(simulator, group)
    finally:
        if simulator.poll() is None:
            simulator.kill()
    check(env, group, clean, seed)
    # A graceful hand-over drops nothing it fetched, so no commit waits for a heal (session 14:
    # the agent's queue emptied by the table recovery's second resume did, in a third of runs).
    assert sum(group.heals.values()) == 0, f"commits healed after a hand-over: {group.heals}"
