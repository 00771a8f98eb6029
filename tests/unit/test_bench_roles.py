"""Step 9 of ``make bench`` (one worker, N workers and the loader measured apart): its arithmetic,
how it reads the loader's counters, the topics each run writes, and its report.

The processes themselves only run in ``make bench``; what can be wrong without a broker is here."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from bench.common import CpuSample, Status, World, loader_figures
from bench.report import roles_section, targets_section
from bench.roles import (
    group_figures,
    loader_window,
    one_worker,
    per_input_event,
    scaling,
    value_at,
)
from streams.web.metrics import _LoaderCollector


def line(at: float, consumed: int, cpu: float, **data: Any) -> Status:
    return Status(at, {"consumed": consumed, **data}, CpuSample(at, cpu, 0.0, (at, 2 * at)))


def test_a_workers_figures_are_interpolated_between_its_status_lines() -> None:
    history = [line(10.0, 0, 1.0), line(11.0, 100, 1.5), line(12.0, 300, 2.5)]
    assert value_at(history, 11.5, "consumed") == 200
    assert value_at(history, 11.5, "cpu") == 2.0
    assert value_at(history, 5.0, "consumed") == 0  # before the first line: the first
    assert value_at(history, 99.0, "cpu") == 2.5  # after the last: the last


def test_a_group_sums_its_workers_events_and_cpu_from_the_line_before_the_first_event() -> None:
    # Worker a starts at 10.5 (its first event between 10.0 and 11.0); b joins a second later.
    a = [line(10.0, 0, 1.0), line(11.0, 100, 2.0), line(12.0, 200, 3.0), line(13.0, 300, 4.0)]
    b = [line(10.2, 0, 0.5), line(11.2, 0, 0.6), line(12.2, 100, 1.6), line(13.2, 200, 2.6)]
    figures = group_figures([a, b], total=500)
    # Start: the last line before the first one showing an event (a's 10.0); end: the first
    # line at which the summed, interpolated `consumed` reached 500 (b's 13.2: a 300 + b 200).
    assert figures["partial"] is False
    assert figures["seconds"] == 3.2
    assert figures["events"] == 500
    # CPU: a 4.0 - 1.0, b 2.6 - 0.5 (clamped to its first line before it existed).
    assert figures["cpu_s"] == 5.1
    assert figures["events_per_cpu_s"] == round(500 / 5.1, 1)
    assert figures["cpu_s_per_1k"] == round(1000 * 5.1 / 500, 4)
    # Once both had handled an event (b at 12.2) to the end.
    busy = figures["all_busy"]
    assert busy["seconds"] == 1.0
    assert busy["events"] == ((300 - 220) + (200 - 100))


def test_a_group_that_never_reached_the_total_is_partial() -> None:
    a = [line(10.0, 0, 1.0), line(11.0, 100, 2.0)]
    figures = group_figures([a], total=1_000)
    assert figures["partial"] is True
    assert figures["events"] == 100


def loader_sample(at: float, loaded: int, rows: int, cpu: float) -> Status:
    data = {"loaded": loaded, "sink_rows": rows, "ready": True}
    return Status(at, data, CpuSample(at, cpu, 0.0, (at, 2 * at)))


def test_the_loader_is_timed_to_the_first_sample_with_every_row_stored() -> None:
    history = [
        loader_sample(1.0, 0, 0, 3.0),
        loader_sample(1.25, 0, 0, 3.1),  # start: the last sample before the first fact read
        loader_sample(1.5, 400, 0, 3.4),
        loader_sample(1.75, 900, 700, 3.9),
        loader_sample(2.0, 1000, 950, 4.1),  # end: every row it ends with
        loader_sample(2.25, 1000, 950, 4.15),
        loader_sample(5.0, 1000, 950, 4.3),
    ]
    out = loader_window(history, facts=1000)
    assert out["seconds"] == 0.75
    assert out["cpu_s"] == 1.0
    assert out["rows_per_cpu_s"] == 950.0
    assert out["facts_per_cpu_s"] == 1000.0
    assert out["partial"] is False
    assert loader_window(history, facts=2000)["partial"] is True


def test_the_loader_figures_are_read_from_what_the_loader_exports() -> None:
    loader = SimpleNamespace(
        sink=SimpleNamespace(
            stats=SimpleNamespace(
                rows_per_table={"events": 70, "triggers": 20},
                duplicate_rows=4,
                batches=3,
                failures=1,
            ),
        ),
        stats=SimpleNamespace(
            consumed={"x.journey.events": 74, "x.journey.decisions": 20}, undecodable=2
        ),
        lag=lambda: {("x.journey.events", 0): 5, ("x.journey.events", 1): 1},
    )
    registry = CollectorRegistry()
    registry.register(_LoaderCollector(loader))  # type: ignore[arg-type]
    figures = loader_figures(generate_latest(registry).decode())
    assert figures == {
        "loaded": 94,
        "loaded_per_topic": {"x.journey.events": 74, "x.journey.decisions": 20},
        "sink_rows": 90,
        "sink_rows_per_table": {"events": 70, "triggers": 20},
        "duplicate_rows": 4,
        "sink_batches": 3,
        "sink_failures": 1,
        "undecodable_facts": 2,
        "loader_lag": 6.0,
    }


def test_each_worker_run_writes_output_topics_of_its_own_and_a_loader_reads_one_runs() -> None:
    main = World("main", "127.0.0.1:1", Path("/tmp/x"), 12)
    round2 = replace(main, app_suffix="-r2")
    loader = replace(round2, app_suffix="-r2-load", outputs=round2.output_tag)
    m, r, lo = main.settings(), round2.settings(), loader.settings()
    assert m.topic("triggers") == f"{main.prefix}journey.triggers"
    assert r.topic("triggers") == f"{main.prefix}r2.journey.triggers"
    assert r.topic("ticks") == f"{main.prefix}r2.journey.ticks"
    assert r.input_topics() == m.input_topics()  # the same pre-filled input
    assert lo.fact_topics() == r.fact_topics()
    assert lo.app_id != r.app_id
    assert loader.chdb_path != round2.chdb_path
    every = [*m.fact_topics(), m.topic("triggers"), m.topic("repartition"), m.topic("ticks")]
    assert not set(every) & set(r.all_topics())


def test_records_per_input_event_and_scaling() -> None:
    published = {"triggers": 10, "decisions": 30, "journey_events": 1000, "snapshots": 200,
                 "deadletter": 0, "repartition": 0, "ticks": 40, "changelog": 1100}  # fmt: skip
    ratios = per_input_event(published, 1000)
    assert ratios["journey_events"] == 1.0
    assert ratios["facts"] == 1.23
    assert ratios["all"] == 2.38
    rounds = [
        {"events_per_s": 1000.0, "events_per_worker_cpu_s": 2000.0, "published": published},
        {"events_per_s": 3000.0, "events_per_worker_cpu_s": 4000.0, "published": {}},
    ]
    one = one_worker(rounds, 1000)
    assert one["events_per_s"] == 2000.0
    assert one["cpu_s_per_1k"] == round(1000 / 3000, 4)
    assert one["published"] == published  # the first round's
    group = {"workers": 2, "events_per_s": 3000.0, "cpu_s_per_1k": 0.4}
    assert scaling(one, group) == {
        "rate_over_n_x_one": 0.75,
        "rate_over_one": 1.5,
        "cpu_per_event_over_one": 1.2,
    }


def test_the_report_shows_each_role_and_the_n_workers_target() -> None:
    published = {"triggers": 10, "decisions": 30, "journey_events": 1000, "snapshots": 200,
                 "deadletter": 0, "repartition": 0, "ticks": 40, "changelog": 1100}  # fmt: skip
    one = one_worker([{"events_per_s": 2000.0, "events_per_worker_cpu_s": 2500.0,
                       "published": published}], 1000)  # fmt: skip
    group = {"workers": 2, "events_per_s": 3000.0, "cpu_s_per_1k": 0.5, "events_per_cpu_s": 2000,
             "cores": 1.5, "published": {**published, "journey_events": 1010}}  # fmt: skip
    group["scaling"] = scaling(one, group)
    loader = {"facts": 1230, "facts_expected": 1230, "rows": 1230, "seconds": 2.0,
              "cpu_s": 1.0, "rows_per_cpu_s": 1230.0, "input_events_per_cpu_s": 1000.0,
              "stored_final": {"events": 1000}}  # fmt: skip
    r = {"machine": {"cpus": 2}, "roles": {"one_worker": one, "workers": group, "loader": loader}}
    text = "\n".join(roles_section(r))
    assert "| journey worker (step 1; median of 1 rounds) | 1 | **2,000** | **0.400** |" in text
    assert "from the first event handled | 2 | **3,000** | **0.500** | **2,000** |" in text
    assert "| the loader alone, the facts of step 1's first run | 1 | 500 | **1.000** |" in text
    assert "**1,230 rows stored**" in text
    assert "| journey.events (canonical events) | 1,000 | 1.000 | 1,010 | 1.010 |" in text
    assert "| **facts** (events, decisions, snapshots, dead letters) | 1,230 | **1.230** |" in text
    targets = "\n".join(targets_section(r))
    assert "| 0.75 x N x one | **no**: 0.94 x the target |" in targets
    assert roles_section({}) == []


def test_a_worker_that_never_printed_a_status_line_is_left_out_not_the_group() -> None:
    a = [line(10.0, 0, 1.0), line(11.0, 1000, 2.0)]
    figures = group_figures([a, []], total=1000)
    assert figures["events"] == 1000
    assert figures["cpu_s"] == 1.0
    assert figures["workers_that_handled_events"] == 1
    assert "all_busy" not in figures


def test_a_stalled_group_run_is_reported_as_partial() -> None:
    group = {"workers": 3, "consumed": 2833, "stalled_s": 91.0, "events_per_s": 396.0}
    one = one_worker([{"events_per_s": 2000.0, "events_per_worker_cpu_s": 2500.0}], 30_000)
    r = {"machine": {"cpus": 2}, "roles": {"one_worker": one, "workers": group}}
    text = "\n".join(roles_section(r))
    assert "no worker handled an event for 91 s** (after 2,833 of 30,000 events)" in text


def test_a_stalled_group_is_timed_to_where_its_count_stopped_not_the_idle_tail() -> None:
    a = [line(10.0, 0, 1.0), line(11.0, 100, 2.0), line(12.0, 200, 3.0)]
    a += [line(12.0 + n, 200, 3.0 + n / 100) for n in range(1, 90)]  # stuck, barely busy
    figures = group_figures([a], total=1_000)
    assert figures["partial"] is True
    assert figures["seconds"] == 2.0
    assert figures["events"] == 200
