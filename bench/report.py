"""``latest.md``: each figure, its target and whether it is met, and the machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _num(value: Any, unit: str = "", digits: int = 0) -> str:
    if value is None:
        return "n/a"
    text = f"{value:,.{digits}f}" if isinstance(value, float | int) else str(value)
    return f"{text} {unit}".strip()


def _cores(cpu: Any, first: str = "worker") -> str:
    if not isinstance(cpu, dict) or not cpu:
        return "n/a"
    return (
        f"{first} {_num(cpu.get('worker'), digits=2)}, broker {_num(cpu.get('broker'), digits=2)}"
        f", everything else {_num(cpu.get('everything_else'), digits=2)} (machine busy "
        f"{_num(cpu.get('machine_busy'), digits=2)} of {{cpus}})"
    )


def _met(value: Any, ok: bool | None) -> str:
    if value is None or ok is None:
        return "n/a"
    return "yes" if ok else "**no**"


def _get(results: dict[str, Any], *path: str) -> Any:
    node: Any = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def figures(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, value, target, met) rows."""
    e2e = _get(r, "e2e", "events_per_s")
    raw = _get(r, "raw", "events_per_s")
    ratio = r.get("e2e_over_raw")
    p50 = _get(r, "latency", "p50_ms")
    p99 = _get(r, "latency", "p99_ms")
    t50 = _get(r, "timers", "lateness_at_tick_p50_ms")
    t99 = _get(r, "timers", "lateness_at_tick_p99_ms")
    t99_end = _get(r, "timers", "lateness_end_of_tick_p99_ms")
    tps = _get(r, "timers", "timers_fired_per_s")
    cap = _get(r, "timers", "capacity_timers_per_s")
    w99 = _get(r, "latency", "worker_timer_lateness_p99_ms")
    sb = r.get("state_bytes") or {}
    rec = r.get("recovery") or {}
    customers = _get(r, "workload", "customers")
    restored = _num(_get(rec, "restore", "customers"))
    restore_s = _num(_get(rec, "restore", "start_to_ready_s"), "s", 1)
    baseline_s = _num(_get(rec, "baseline", "start_to_ready_s"), "s", 1)
    timer_customers = _get(r, "timers", "customers")
    partial = ""
    if _get(r, "e2e", "partial"):
        partial = f"; **partial: time limit reached after {_num(_get(r, 'e2e', 'events'))} events**"
    rows = [
        (
            f"1. End-to-end events/s, one worker, Kafka to Kafka ({_num(customers)} customers, "
            f"{_num(_get(r, 'workload', 'events'))} events{partial})",
            _num(e2e, "/s"),
            ">= 30,000/s",
            _met(e2e, e2e is not None and e2e >= 30_000),
        ),
        (
            "1. ... per CPU-second of the worker process (robust to other load)",
            _num(_get(r, "e2e", "events_per_worker_cpu_s"), "/s"),
            "-",
            "-",
        ),
        ("2. Raw ceiling: aiokafka + fastavro decode", _num(raw, "/s"), "-", "-"),
        (
            "2. ... per CPU-second of the consumer process",
            _num(_get(r, "raw", "events_per_cpu_s"), "/s"),
            "-",
            "-",
        ),
        (
            "2. e2e / raw",
            _num(ratio, digits=3),
            ">= 0.5",
            _met(ratio, ratio is not None and ratio >= 0.5),
        ),
        (
            f"3. Order appended -> ORDER_CONFIRMATION appended, p50 (at "
            f"{_num(_get(r, 'latency', 'orders_per_s'))} orders/s)",
            _num(p50, "ms"),
            "-",
            "-",
        ),
        ("3. ... p99", _num(p99, "ms"), "<= 200 ms", _met(p99, p99 is not None and p99 <= 200)),
        (
            f"3. ... p50 / p99 at {_num(_get(r, 'args', 'latency_floor_rate'))} orders/s "
            "(idle worker, for comparison)",
            f"{_num(_get(r, 'latency', 'unloaded', 'p50_ms'), 'ms')} / "
            f"{_num(_get(r, 'latency', 'unloaded', 'p99_ms'), 'ms')}",
            "-",
            "-",
        ),
        (
            f"4. Timer lateness p50, {_num(timer_customers)} pending timers (in-process, "
            "no Kafka tick round trip)",
            _num(t50, "ms"),
            "-",
            "-",
        ),
        ("4. ... p99", _num(t99, "ms"), "<= 1,000 ms", _met(t99, t99 is not None and t99 <= 1000)),
        ("4. ... p99 at the end of the tick's work", _num(t99_end, "ms"), "-", "-"),
        (
            f"4. ... p99, the same timers split over {_num(_get(r, 'timers_split', 'processes'))}"
            " processes at once (as that many workers on as many cores; the largest p99)",
            _num(_get(r, "timers_split", "lateness_at_tick_p99_ms"), "ms"),
            "-",
            "-",
        ),
        (
            "4. Timers fired/s (capacity: timers per CPU-second of ticks)",
            f"{_num(tps, '/s')} ({_num(cap, '/s')})",
            "-",
            "-",
        ),
        ("4. Worker's own timer_lateness_p99_ms during step 3", _num(w99, "ms"), "-", "-"),
        ("5. State bytes per customer, mean", _num(sb.get("mean_bytes"), "B"), "-", "-"),
        ("5. ... p99", _num(sb.get("p99_bytes"), "B"), "-", "-"),
        (
            f"5. ... mean of customers that ordered ({_num(sb.get('customers_that_ordered'))})",
            _num(sb.get("mean_bytes_ordered"), "B"),
            "-",
            "-",
        ),
        (
            f"6. Recovery from the changelog, customers/s ({restored} customers, ready after "
            f"{restore_s})",
            _num(rec.get("customers_per_s"), "/s"),
            "-",
            "-",
        ),
        (
            f"6. ... net of an empty-table start ({baseline_s})",
            _num(rec.get("net_customers_per_s"), "/s"),
            "-",
            "-",
        ),
    ]
    return rows


def contest_section(r: dict[str, Any]) -> list[str]:
    """Issue 13: the worker beside Quix Streams and the floors, then the targets."""
    from bench.contest import LABELS, ORDER

    summary = _get(r, "contest", "summary") or {}
    rounds = _get(r, "contest", "rounds") or {}
    w = r.get("workload") or {}
    lines = [
        f"## Side by side: the same {_num(w.get('events'))} events, each contestant reading the "
        "pre-filled topics from offset 0 in its own process",
        "",
        "CPU s / 1k events = user + system CPU seconds of the consumer process (all its threads) "
        "from its first event to the N-th, per 1,000 events: the figure least moved by other "
        "load on this shared machine. Median of the rounds (two rounds: their mean); each "
        "round's value in brackets.",
        "",
        "**x Quix** compares with `quix-facts`, the Quix Streams application that produces the "
        'same outputs as the worker (issue 13: "produces the same outputs"): since issue 12 the '
        "worker publishes, for every event, its canonical event, every decision (emitted and "
        "dropped), the triggers and the customer's snapshot (records produced per event: below). "
        "**x Quix (triggers only)** compares with `quix`, the same application "
        "producing the triggers only (the comparison of the runs before `quix-facts`): both "
        "figures stay visible.",
        "",
        "| contestant | CPU s / 1k events | x Quix | x Quix (triggers only) | events/s | x Quix | "
        "x Quix (triggers only) | cores | triggers | records produced per event | "
        "changelog records |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for name in ORDER:
        s = summary.get(name)
        if not s and name.startswith("faust-"):
            continue  # prototypes: with --prototypes only
        if not s:
            lines.append(f"| {LABELS[name]} | not measured this run | | | | | | | | | |")
            continue
        each = " / ".join(_num(v, digits=3) for v in s["cpu_s_per_1k_rounds"])
        each_rate = " / ".join(_num(v) for v in s["events_per_s_rounds"])
        partial = any(x.get("partial") for x in rounds.get(name, []))
        per_event = s.get("produced_per_event") or []
        lines.append(
            f"| {LABELS[name]} | **{_num(s['cpu_s_per_1k'], digits=3)}** ({each}) | "
            f"{_num(s.get('cpu_vs_peer'), digits=2)} | {_num(s.get('cpu_vs_quix'), digits=2)} | "
            f"{_num(s['events_per_s'])} ({each_rate}){' partial' if partial else ''} | "
            f"{_num(s.get('rate_vs_peer'), digits=2)} | {_num(s.get('rate_vs_quix'), digits=2)} | "
            f"{' / '.join(_num(c, digits=2) for c in s['cores'])} | "
            f"{' / '.join(_num(t) for t in s['triggers'])} | "
            + (
                " / ".join(_num(v, digits=2) for v in per_event)
                if any(v is not None for v in per_event)
                else "triggers only"
                if name in ("quix", "dict")
                else "-"
            )
            + " | "
            f"{' / '.join(_num(c) for c in s['changelog_records']) if name != 'decode' else '-'}"
            " |"
        )
    lines += produced_table(summary, rounds)
    lines += [
        "",
        "Triggers differ by design: the worker fires due timers on its per-partition ticks, the "
        "contestants have no timer wheel and run `fire_due` for the customer of each event, so "
        "timers of customers with no later event stay pending there. The order matters too: "
        "Quix's `concat` hands over the seven topics' events in timestamp order (the same "
        "triggers every round), while aiokafka (the worker, `dict`) hands over whole per-topic "
        "batches, so a customer's events can be applied out of order and the triggers vary from "
        "round to round. The worker, `quix-facts` and `dict-facts` publish every canonical event, "
        "decision and customer snapshot (records per topic above); `quix` and `dict` the "
        "triggers only. None of them stores the facts: the loader's cost of storing them comes "
        "on top (step 9). Snapshots: the worker sends the newest per customer per "
        "acknowledgement flush (1 s), `dict-facts` per `getmany` batch, `quix-facts` one per "
        "event (a Quix dataframe has no per-checkpoint hook to coalesce them in), so it produces "
        "more records than the worker; the worker and `quix-facts` build and encode a snapshot "
        "per event alike. Decisions per event differ for the same reasons as triggers: the "
        "contestants decide a customer's due timers right after each of its events (at "
        "wall-clock time, hours after the events' shop time), the worker on its ticks, after a "
        "batch of the customer's events may have cancelled them. Where a facts contestant "
        "produces more records than the worker, the comparison errs in the worker's favour. "
        "The worker also keeps every decision in the customer's state until the broker "
        "acknowledged it (the outbox), which the contestants do not. "
        "Changelog records: what the state store's changelog topic holds after the round (the "
        "worker and Faust: one per table write; Quix: one per key changed per checkpoint).",
        "",
    ]
    lines += targets_section(r)
    return lines


def produced_table(summary: dict[str, Any], rounds: dict[str, list[Any]]) -> list[str]:
    """What each contestant producing facts produced, per kind, each round; with what the
    contestants' output topics held after the round."""
    from bench.contest import produced_per_event

    names = [n for n in ("worker", "quix-facts", "dict-facts") if summary.get(n)]
    if not any(any(summary[n].get("produced") or ()) for n in names):
        return []
    lines = [
        "",
        "Records produced, per round (the worker: its `sent` counts at the end of the run; the "
        "contestants: what they handed to the producer, and in brackets what their output "
        "topics held after the round):",
        "",
        "| | canonical events | decisions | triggers | snapshots | tombstones | per event |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    held_kind = {"events": "events", "decisions": "decisions", "triggers": "triggers",
                 "snapshots": "customers"}  # fmt: skip
    for name in names:
        for no, run in enumerate(rounds.get(name) or [], 1):
            produced = run.get("produced") or {}
            held = run.get("topic_records") or {}
            cells = []
            for kind in ("events", "decisions", "triggers", "snapshots", "tombstones"):
                cell = _num(produced.get(kind))
                if kind in held_kind and held_kind[kind] in held:
                    cell += f" ({_num(held[held_kind[kind]])})"
                cells.append(cell)
            lines.append(
                f"| `{name}` round {no} | {' | '.join(cells)} | "
                f"{_num(produced_per_event(run), digits=2)} |"
            )
    return lines


def targets_section(r: dict[str, Any]) -> list[str]:
    """Issue 13's targets with the measured value beside each; never invented."""
    from bench.contest import PEER, TRIGGERS_ONLY

    summary = _get(r, "contest", "summary") or {}
    worker = summary.get("worker") or {}
    # Issue 13's peer produces the same outputs as the worker (quix-facts); a run without it
    # (or an older latest.json) falls back to the triggers-only quix, and says so.
    peer_name = PEER if (summary.get(PEER) or {}).get("cpu_s_per_1k") else TRIGGERS_ONLY
    quix = summary.get(peer_name) or {}
    trig = summary.get(TRIGGERS_ONLY) or {}
    wc, qc, tc = worker.get("cpu_s_per_1k"), quix.get("cpu_s_per_1k"), trig.get("cpu_s_per_1k")
    which = (
        "`quix-facts`: the same outputs as the worker"
        if peer_name == PEER
        else "`quix`, triggers only: `quix-facts` not measured"
    )
    e2e = worker.get("events_per_s") or _get(r, "e2e", "events_per_s")
    p99 = _get(r, "latency", "p99_ms")
    t99 = _get(r, "timers", "lateness_at_tick_p99_ms")
    rec = _get(r, "recovery", "net_customers_per_s") or _get(r, "recovery", "customers_per_s")
    scale = _get(r, "roles", "workers", "scaling", "rate_over_n_x_one")
    not_measured = "not measured this run"

    def by(value: float | None, target: float, higher: bool) -> str:
        if value is None:
            return "n/a"
        if higher:
            return "yes" if value >= target else f"**no**: {value / target:.2f} x the target"
        return "yes" if value <= target else f"**no**: {value / target:.1f} x the target"

    rows = [
        (
            f"Journey worker CPU per event <= the Quix Streams contestant's (same run; {which})",
            f"{_num(wc, digits=3)} vs {_num(qc, digits=3)} CPU s / 1k"
            + (f" ({wc / qc:.1f} x)" if wc and qc else ""),
            by(wc / qc if wc and qc else None, 1.0, higher=False),
        ),
        (
            "... stretch: half of Quix's",
            _num(wc / qc if wc and qc else None, "x Quix", 2),
            by(wc / qc if wc and qc else None, 0.5, higher=False),
        ),
    ]
    if peer_name == PEER:
        rows.append(
            (
                "(for comparison, not the target: against `quix`, which produces the triggers "
                "only, not the worker's outputs since issue 12)",
                f"{_num(wc, digits=3)} vs {_num(tc, digits=3)} CPU s / 1k"
                + (f" ({wc / tc:.1f} x)" if wc and tc else ""),
                "not the target; " + by(wc / tc if wc and tc else None, 1.0, higher=False),
            )
        )
    most = _get(r, "latency_half_max", "max_rate", "maximum")
    rows += [
        (
            ">= 10,000 events/s end to end, one worker process (median of the rounds)",
            _num(e2e, "/s"),
            by(e2e, 10_000, higher=True),
        ),
        (
            f"N worker processes on N cores >= 0.8 x N x one worker (N = "
            f"{_num(_get(r, 'roles', 'workers', 'workers'))}, step 9; {_get(r, 'machine', 'cpus')}"
            " cores shared with the broker)",
            (_num(scale, "x N x one", 2) if scale is not None else not_measured)
            + (" (partial: see step 9)" if _get(r, "roles", "workers", "partial") else ""),
            by(scale, 0.8, higher=True),
        ),
        (
            f"p99 append-to-append trigger latency <= 100 ms at half the maximum rate "
            f"({_num(_get(r, 'latency', 'orders_per_s'))} orders/s = "
            f"{_get(r, 'args', 'latency_fraction')} x the e2e rate"
            + (
                f" = {_num(_get(r, 'latency', 'orders_per_s') / most, digits=2)} x the maximum "
                "rate of this workload, below"
                if most and _get(r, "latency", "orders_per_s")
                else ""
            )
            + ")",
            _num(p99, "ms"),
            by(p99, 100, higher=False),
        ),
    ]
    half = r.get("latency_half_max")
    if half:
        found = half.get("max_rate") or {}
        how = (
            f"{_num(found.get('maximum'))} {found.get('how')} (orders of new customers, each a "
            "trigger, a decision, a snapshot and a state: dearer than the e2e mix)"
        )
        rows.append(
            (
                f"... at half the maximum rate of the probe's own workload: "
                f"{_num(half.get('orders_per_s'))} orders/s = 0.5 x {how}",
                _num(half.get("p99_ms"), "ms"),
                by(half.get("p99_ms"), 100, higher=False),
            )
        )
    split = r.get("timers_split") or {}
    rows += [
        (
            f"Timer lateness p99 <= 1 s with {_num(_get(r, 'timers', 'customers'))} pending "
            "timers (in-process, step 4, one process)",
            _num(t99, "ms"),
            by(t99, 1000, higher=False),
        ),
    ]
    if split:
        rows.append(
            (
                f"... not the target, for sizing: the same timers split over "
                f"{_num(split.get('processes'))} processes at once, each with its share of the "
                "partitions (as that many workers on as many cores)",
                f"{_num(split.get('lateness_at_tick_p99_ms'), 'ms')} (the largest p99)",
                "-",
            )
        )
    rows += [
        (
            f"Recovery >= 20,000 customers/s ({_num(_get(r, 'recovery', 'restore', 'customers'))}"
            " customers restored, net of an empty-table start)",
            _num(rec, "/s"),
            by(rec, 20_000, higher=True),
        ),
    ]
    lines = [
        "## Issue 13 targets",
        "",
        "| target | measured | met |",
        "|---|---:|---|",
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    if rec:
        lines += [
            "",
            f"Recovery, extrapolated (not measured): one million customers at {_num(rec, '/s')} "
            f"would take {1e6 / rec / 60:.1f} min.",
        ]
    return [*lines, ""]


def roles_section(r: dict[str, Any]) -> list[str]:
    """Step 9 (issue 12): one worker, N workers and the loader, each in its own processes."""
    roles = r.get("roles")
    if not roles:
        return []
    one = roles.get("one_worker") or {}
    group = roles.get("workers") or {}
    loader = roles.get("loader") or {}
    n = group.get("workers")
    events = one.get("events")
    cpus = _get(r, "machine", "cpus")

    def each(values: list[Any], digits: int = 0) -> str:
        return f" ({' / '.join(_num(v, digits=digits) for v in values)})" if len(values) > 1 else ""

    def per_1k(per_cpu_s: Any) -> str:
        return _num(1000 / per_cpu_s, digits=3) if per_cpu_s else "n/a"

    busy = group.get("all_busy") or {}
    lines = [
        "## Per role (step 9)",
        "",
        f"Issue 12's two roles measured apart, each in its own processes, on the same "
        f"{_num(events)} pre-filled input events from offset 0 (a new app id or loader group "
        "each). CPU = user + system seconds of the role's processes (all threads, from "
        "`/proc`); per input event, so the roles add up to the pipeline's cost. "
        f"The machine has {cpus} cores, shared with the broker and with other work: "
        "events/s moves with that load, CPU per event much less.",
        "",
        "| role | processes | input events/s | CPU s / 1k input events | input events per "
        "CPU-second | cores used |",
        "|---|---:|---:|---:|---:|---:|",
        f"| journey worker (step 1; median of {_num(one.get('rounds'))} rounds) | 1 | "
        f"**{_num(one.get('events_per_s'))}**{each(one.get('events_per_s_rounds') or [])}"
        f"{' partial' if one.get('partial') else ''} | "
        f"**{_num(one.get('cpu_s_per_1k'), digits=3)}** | "
        f"**{_num(one.get('events_per_cpu_s'))}**{each(one.get('events_per_cpu_s_rounds') or [])}"
        f" | {' / '.join(_num(c, digits=2) for c in one.get('cores') or []) or 'n/a'} |",
    ]
    if group:
        lines += [
            f"| journey workers, one group, from the first event handled | {_num(n)} | "
            f"**{_num(group.get('events_per_s'))}**{' partial' if group.get('partial') else ''} "
            f"| **{_num(group.get('cpu_s_per_1k'), digits=3)}** | "
            f"**{_num(group.get('events_per_cpu_s'))}** | {_num(group.get('cores'), digits=2)} |",
            f"| ... once every one of them had handled an event | {_num(n)} | "
            f"{_num(busy.get('events_per_s'))} | {_num(busy.get('cpu_s_per_1k'), digits=3)} | "
            f"{_num(busy.get('events_per_cpu_s'))} | {_num(busy.get('cores'), digits=2)} |",
        ]
    if loader:
        lines.append(
            f"| the loader alone, the facts of step 1's first run | 1 | "
            f"{_num(events / loader['seconds'] if events and loader.get('seconds') else None)}"
            f"{' partial' if loader.get('partial') else ''} | "
            f"**{per_1k(loader.get('input_events_per_cpu_s'))}** | "
            f"**{_num(loader.get('input_events_per_cpu_s'))}** | "
            f"{_num((loader.get('cores') or {}).get('worker'), digits=2)} |"
        )
    lines.append("")
    scaling = group.get("scaling") or {}
    if group:
        per_worker = "; ".join(
            f"{w.get('name')}: {_num(w.get('consumed'))} events, partitions {w.get('partitions')}"
            if w.get("consumed") is not None
            else f"{w.get('name')}: no status line (it had not started when the input was done)"
            for w in group.get("per_worker") or []
        )
        machine = group.get("machine") or {}
        over_one = _num(scaling.get("rate_over_one"), digits=2)
        if group.get("stalled_s") is not None:
            lines += [
                f"**The group's run stopped early: no worker handled an event for "
                f"{_num(group['stalled_s'])} s** (after {_num(group.get('consumed'))} of "
                f"{_num(events)} events), so its figures are partial. Seen while writing this "
                "step: a worker that had handled events when another joined waited forever in "
                "Faust's rebalance (`wait_empty`) for the messages the event-time merge held.",
                "",
            ]
        lines += [
            f"**{_num(n)} workers** (`journey worker` x {_num(n)}, one consumer group, own names "
            f"and data dirs, started together): events/s = **{over_one} x one worker's** "
            f"({_num(scaling.get('rate_over_n_x_one'), digits=2)} x "
            f"N x one worker's; issue 13's target is 0.8), CPU per event "
            f"{_num(scaling.get('cpu_per_event_over_one'), digits=2)} x one worker's. Timed from "
            "the status line before the first event handled by any of them to the moment the "
            "sum of their `consumed` reached the input (each worker's `consumed` and CPU "
            "interpolated between its own status lines), so the first rebalances are in it; "
            "events redelivered by a rebalance count twice in `consumed`. Meanwhile the broker "
            f"used {_num(machine.get('broker'), digits=2)} cores and the whole machine "
            f"{_num(machine.get('machine_busy'), digits=2)} of {cpus}. With N workers on a "
            f"{cpus}-core machine that also runs the broker and other work, the ratio says as "
            "much about the load during each run as about the workers (step 1's cores used, "
            "above, show how much of a core one worker got): compare the CPU per event. "
            f"Per worker: {per_worker}.",
            "",
        ]
    if loader:
        stored = loader.get("stored_final") or {}
        stored_text = (
            ", ".join(f"{k} {_num(v)}" for k, v in stored.items())
            if "error" not in stored
            else f"not read ({stored['error'][-200:]})"
        )
        facts_read = ", ".join(
            f"{_short(k)} {_num(v)}" for k, v in (loader.get("facts_per_topic") or {}).items()
        )
        rows = ", ".join(f"{k} {_num(v)}" for k, v in (loader.get("rows_per_table") or {}).items())
        lines += [
            f"**The loader** (`journey loader`, a new group and embedded ClickHouse, the fact "
            f"topics of step 1's first worker run from offset 0): "
            f"{_num(loader.get('facts'))} facts read of {_num(loader.get('facts_expected'))} "
            f"({facts_read}), **{_num(loader.get('rows'))} rows stored** ({rows}), "
            f"{_num(loader.get('duplicate_rows'))} duplicates dropped, in "
            f"{_num(loader.get('seconds'), 's', 1)}: **{_num(loader.get('rows_per_cpu_s'))} rows "
            f"per CPU-second** ({_num(loader.get('cpu_s_per_1k_rows'), digits=3)} CPU s per 1k "
            f"rows; {_num(loader.get('facts_per_cpu_s'))} facts per CPU-second), "
            f"{_num(loader.get('rows_per_s'))} rows/s. Timed from its last sample before the "
            "first fact read to the first showing every row stored (`/metrics` read every "
            "0.25 s; its `--status-every` lines are not used, as each runs four FINAL counts "
            f"in the loader). Ready {_num(loader.get('start_to_ready_s'), 's', 1)} after start "
            f"(not counted). ClickHouse holds (FINAL): {stored_text}.",
            "",
        ]
    lines += published_table(one, group, events)
    return lines


def _short(topic: str) -> str:
    """``bench-x-main.journey.events`` -> ``journey.events``."""
    return topic[topic.find("journey.") :] if "journey." in topic else topic


PUBLISHED_ROWS = (
    ("triggers", "journey.triggers (`Trigger`, to send)"),
    ("decisions", "journey.decisions (every decision)"),
    ("journey_events", "journey.events (canonical events)"),
    ("snapshots", "journey.customers (snapshots, compacted)"),
    ("deadletter", "journey.deadletter"),
    ("repartition", "journey.repartition"),
    ("ticks", "journey.ticks (the workers' timer ticks)"),
    ("changelog", "the journeys table's changelog (Faust)"),
)


def published_table(one: dict[str, Any], group: dict[str, Any], events: Any) -> list[str]:
    """Records each worker run produced, per topic, counted on the broker."""
    published = one.get("published") or {}
    if not published:
        return []
    theirs = group.get("published") or {}
    n = group.get("workers")

    def ratio(value: Any) -> str:
        return _num(value / events, digits=3) if events and value is not None else "n/a"

    lines = [
        "What a worker publishes, counted on the broker (each run writes output topics of its "
        "own): records per topic and per input event. The facts are what the loader reads; "
        "with the changelog they are the cost of the Kafka-to-Kafka worker beyond its "
        "triggers.",
        "",
        f"| topic | one worker | per input event | {_num(n)} workers | per input event |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, label in PUBLISHED_ROWS:
        lines.append(
            f"| {label} | {_num(published.get(key))} | {ratio(published.get(key))} | "
            f"{_num(theirs.get(key)) if theirs else 'n/a'} | "
            f"{ratio(theirs.get(key)) if theirs else 'n/a'} |"
        )
    from bench.roles import FACTS

    for label, keys in (
        ("**facts** (events, decisions, snapshots, dead letters)", FACTS),
        ("**all**", tuple(k for k, _ in PUBLISHED_ROWS)),
    ):
        mine = sum(published.get(k, 0) for k in keys)
        other = sum(theirs.get(k, 0) for k in keys) if theirs else None
        lines.append(
            f"| {label} | {_num(mine)} | **{ratio(mine)}** | {_num(other)} | {ratio(other)} |"
        )
    lines += [
        "",
        "`journey.events` holds one record per delivery of an input event: more than the "
        "input are redeliveries (after a rebalance; published again with the same ids, the "
        "loader stores them once). The other counts depend on time as well as on the input: "
        "timers fire and ticks are sent as the clock moves (a longer run has more), and "
        "snapshots are coalesced per acknowledgement flush, so they differ from run to run.",
        "",
    ]
    return lines


def merge_section(r: dict[str, Any]) -> list[str]:
    """Step 8 (issue 11): the event-time merge's cost in throughput and in live latency."""
    merge = r.get("merge")
    if not merge:
        return []
    summary = merge.get("summary") or {}
    rounds = merge.get("rounds") or []
    w = r.get("workload") or {}
    lines = [
        "## Cost of the event-time merge (step 8)",
        "",
    ]
    if summary:
        buffer = merge.get("with_ordering_buffer")
        wait = merge.get("with_ordering_wait_ms")
        order = "; ".join(f"round {p['round']}: {', '.join(p['order'])}" for p in rounds)
        lines += [
            f"The e2e worker over the same {_num(w.get('events'))} pre-filled events from offset "
            "0, a new app id each run, with the merge (default: `JOURNEY_ORDERING_BUFFER` "
            f"{_num(buffer)}, `JOURNEY_ORDERING_WAIT` {_num(wait)} ms) and without it "
            f"(`JOURNEY_ORDERING_BUFFER=1`: a pass-through), alternating ({order}). Timed from "
            "the worker's `ready` to the last event handled (so the merge's holding of the "
            "backlog's start counts). Median of the rounds; each round's value in brackets.",
            "",
            "| worker | CPU s / 1k events | events/s | triggers | merge gave up order "
            "(wait / capacity) |",
            "|---|---:|---:|---|---|",
        ]
        for side, label in (
            ("with", "with the merge (default)"),
            ("without", "without (`JOURNEY_ORDERING_BUFFER=1`)"),
        ):
            s = summary.get(side) or {}
            runs = [p[side] for p in rounds if p.get(side)]
            gave_up = ", ".join(
                f"{_num(x['gave_up'].get('wait', 0))} / {_num(x['gave_up'].get('capacity', 0))}"
                if x.get("gave_up") is not None
                else "n/a"
                for x in runs
            )
            lines.append(
                f"| {label} | **{_num(s.get('cpu_s_per_1k'), digits=3)}** "
                f"({' / '.join(_num(v, digits=3) for v in s.get('cpu_s_per_1k_rounds', []))}) | "
                f"**{_num(s.get('events_per_s'))}** "
                f"({' / '.join(_num(v) for v in s.get('events_per_s_rounds', []))})"
                f"{' partial' if s.get('partial') else ''} | "
                f"{' / '.join(_num(t) for t in s.get('triggers', []))} | {gave_up} |"
            )
        lines.append(
            f"| with / without | **{_num(summary.get('cpu_ratio'), digits=3)}** ("
            f"{' / '.join(_num(v, digits=3) for v in summary.get('cpu_ratio_rounds', []))}) | "
            f"**{_num(summary.get('rate_ratio'), digits=3)}** ("
            f"{' / '.join(_num(v, digits=3) for v in summary.get('rate_ratio_rounds', []))}) "
            "| | |"
        )
        added = summary.get("cpu_ms_per_event_added")
        decode = _get(r, "contest", "summary", "decode", "cpu_s_per_1k")
        lines += [
            "",
            f"The merge adds {_num(added, digits=4)} ms of worker CPU per event (median with - "
            "median without; negative: within the noise). Without the merge the worker still "
            "reads each message's `occurred_at` (the agent decodes it before the buffer), so "
            "that second decode is in both figures, not in the difference: a whole decode "
            f"costs {_num(decode, digits=4)} ms per event (the decode contestant of step 7). "
            "Triggers: with the merge a customer's events are applied in event-time order, so "
            "the counts should be the same every round (unless it gave up order, next column); "
            "without it they depend on how the fetches interleaved the topics. "
            "`gave up order`: the worker's `journey_ordering_gave_up_total` at the end of the "
            "run (with the pass-through, "
            "`capacity` counts each message that was handed over while an input partition of "
            "its partition number was still behind: during a catch-up, nearly every one).",
            "",
        ]
    lat = merge.get("latency")
    if lat:
        with_, without = lat["with"], lat["without"]
        lines += [
            "Live: step 3's probe (orders -> ORDER_CONFIRMATION, broker append times) on a "
            "worker with the merge (step 3's) and on one without it (a fresh prefix, the same "
            "rates, run after it). Added = with - without (negative: the run with the merge "
            "was faster; one probe each, so the difference includes the run-to-run noise).",
            "",
            "| orders/s | p50 with | p50 without | p50 added | p99 with | p99 without | "
            "p99 added |",
            "|---|---:|---:|---:|---:|---:|---:|",
            f"| {_num(with_.get('orders_per_s'))} / {_num(without.get('orders_per_s'))} | "
            f"{_num(with_.get('p50_ms'), 'ms')} | {_num(without.get('p50_ms'), 'ms')} | "
            f"**{_num(lat.get('added_p50_ms'), 'ms')}** | {_num(with_.get('p99_ms'), 'ms')} | "
            f"{_num(without.get('p99_ms'), 'ms')} | **{_num(lat.get('added_p99_ms'), 'ms')}** |",
        ]
        wu, wou = with_.get("unloaded") or {}, without.get("unloaded") or {}
        if wu.get("p50_ms") is not None or wou.get("p50_ms") is not None:
            lines.append(
                f"| {_num(wu.get('orders_per_s'))} / {_num(wou.get('orders_per_s'))} (idle) | "
                f"{_num(wu.get('p50_ms'), 'ms')} | {_num(wou.get('p50_ms'), 'ms')} | "
                f"**{_num(lat.get('added_unloaded_p50_ms'), 'ms')}** | "
                f"{_num(wu.get('p99_ms'), 'ms')} | {_num(wou.get('p99_ms'), 'ms')} | "
                f"**{_num(lat.get('added_unloaded_p99_ms'), 'ms')}** |"
            )
        lines += [
            "",
            f"Triggers matched with / without: {_num(with_.get('triggers_matched'))} / "
            f"{_num(without.get('triggers_matched'))} (missing "
            f"{_num(with_.get('triggers_missing'))} / {_num(without.get('triggers_missing'))}).",
            "",
        ]
    elif summary:
        lines += ["Live latency with and without the merge: not measured this run.", ""]
    return lines


def profile_section(r: dict[str, Any]) -> list[str]:
    """Step 10: what the profiles show, for the targets the figures miss (issue 13: "where a
    target is missed, the file says by how much and what the profile shows")."""
    p = r.get("profile")
    if not p:
        return []
    lines = [
        "## Where the time goes: the profiles behind the missed targets (step 10)",
        "",
        f"py-spy (`record --nonblocking --rate 200`, nothing paused) for {_num(p.get('seconds'))} "
        "s, samples of the busiest thread (the event loop's). The events/s and latency targets "
        "follow the worker's CPU per event: the first profile is of a worker of its own over the "
        f"same events ({_num(p.get('worker_events_per_cpu_s'))} events per CPU-second in that "
        "run). The timers target follows the CPU per fired timer: the second is of "
        f"{_num(p.get('timers_customers'))} timers firing over 20 s in-process, as step 4 "
        f"({_num(p.get('timers_process_cpu_us_per_timer'), 'us', 1)} of process CPU per timer). "
        "Layer: that of the innermost Python frame (C code, RocksDB, fastavro, sockets, counts "
        "for the Python frame that called it). Self: the innermost function. Inclusive: anywhere "
        "in the stack (the entry point's and the event loop's own frames left out). Both run "
        "the modules as Python (`JOURNEY_COMPILED=0`): py-spy sees no frames of compiled code, "
        "whose time would count for the Python function that called it; the measured steps "
        "run them compiled, about a quarter less CPU in those modules; as Python the codec "
        "reads with fastavro and writes with generated code (the `Codec._read_body` and "
        "`write (<string>)` frames), compiled it reads in about a third and writes in about a "
        "fifth of that time (`schemas/codec/binary.py`). Neither run's figures count for any "
        "target.",
        "",
    ]
    for key, title in (("worker", "The worker over the backlog"), ("timers", "Timers firing")):
        prof = p.get(key) or {}
        if not prof.get("samples"):
            error = str(prof.get("error") or "no samples").strip().splitlines()
            lines += [f"**{title}**: not profiled ({error[-1] if error else ''}).", ""]
            continue
        layers = prof.get("main_thread_by_layer_pct") or []
        own = prof.get("main_thread_self_top_pct") or []
        inclusive = prof.get("main_thread_inclusive_top_pct") or []
        lines += [
            f"**{title}** ({_num(prof.get('samples'))} samples):",
            "",
            "| layer | % | top functions, self | % | top functions, inclusive | % |",
            "|---|---:|---|---:|---|---:|",
        ]
        for i in range(12):
            cells: list[str] = []
            for column in (layers, own, inclusive):
                name, pct = column[i] if i < len(column) else ("", "")
                cells += [f"`{name}`".replace("|", "\\|") if name else "", str(pct)]
            if any(cells):
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def write_markdown(r: dict[str, Any], path: Path) -> None:
    m = r.get("machine", {})
    lines = [
        "# journey benchmark",
        "",
        f"{m.get('date')} · {m.get('cpus')} CPUs ({m.get('cpu_model') or '?'}), "
        f"{m.get('memory_gb')} GB · Python {m.get('python')} · Kafka {m.get('kafka')} "
        f"(`{m.get('kafka_jar')}`, single local KRaft broker) · commit "
        f"{_get(m, 'git', 'commit')} · load average {m.get('load_average_at_start')} at the "
        f"start, {m.get('load_average_at_end')} at the end · `make bench` took "
        f"{_num(r.get('bench_seconds'), 's')} · "
        f"{_get(m, 'compiled', 'summary') or 'compiled modules: not recorded'}",
        "",
    ]
    lines += contest_section(r)
    lines += profile_section(r)
    lines += roles_section(r)
    lines += merge_section(r)
    lines += [
        "## All figures",
        "",
        "| figure | value | target | met |",
        "|---|---:|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in figures(r)]
    lines += ["", "How each figure was measured:", ""]
    lines += [f"- {note}" for note in notes(r)]
    if r.get("error"):
        lines += ["", f"**The run stopped early:** `{r['error'].strip().splitlines()[-1]}`"]
    lines += [
        "",
        "Numbers are as measured on a shared machine: other processes' load shows in the load "
        "average above. Details, every status line's summary and the workers' settings are in "
        "`latest.json`.",
    ]
    path.write_text("\n".join(lines) + "\n")


def notes(r: dict[str, Any]) -> list[str]:
    w = r.get("workload") or {}
    e2e = r.get("e2e") or {}
    lat = r.get("latency") or {}
    tim = r.get("timers") or {}
    rec = r.get("recovery") or {}
    args = r.get("args") or {}
    cpus = (r.get("machine") or {}).get("cpus")

    def cores(cpu: Any, first: str = "worker") -> str:
        return _cores(cpu, first).replace("{cpus}", str(cpus))

    out = [
        f"Workload: the simulator (seed {args.get('seed')}, no malformed events), "
        f"{w.get('customers', 0):,} customers arriving over {args.get('arrival_window')} of shop "
        f"time that ended when publishing started; the first {w.get('events', 0):,} events "
        f"({w.get('shop_time_span_h')} h of shop time), published before any timing in "
        f"{w.get('publish_seconds')} s to {args.get('partitions')}-partition topics under a "
        "unique prefix. Mix: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted((w.get("by_topic") or {}).items())),
        f"1: one `journey worker` subprocess (status every {args.get('status_every')} s, JSON), "
        "default settings except the bench's prefix, app id, data dir and chdb path (see "
        "`worker_settings` in latest.json). Timed from the first consumed event to consumed == "
        f"N, from the worker's status lines (start and end interpolated inside 1 s intervals); "
        f"steady rate over whole intervals {_num(e2e.get('steady_events_per_s'), '/s')}. "
        f"Cores used meanwhile: {cores(e2e.get('cpu_cores'))}. "
        f"Worker start to ready {e2e.get('worker_start_to_ready_s')} s (not counted). The "
        "worker holds no ClickHouse connection: it publishes triggers, decisions, canonical "
        "events and snapshots (records per topic in step 9), and the loader, measured on its "
        "own in step 9, stores them.",
        "2: " + str((r.get("raw") or {}).get("how", "not run")) + ".",
        "3: on a running worker of a fresh prefix (the baseline worker of step 6: empty table, "
        "ready; not the restored main-world worker, whose timer lateness would also count the "
        "timers that came due while no worker ran), OrderChanged PLACED for new customers at "
        f"{lat.get('target_rate')}/s ({args.get('latency_fraction')} x the e2e rate) for "
        f"{args.get('latency_seconds')} s; latency = broker append time of the ORDER_CONFIRMATION"
        " on journey.triggers - broker append time of the order (the bench creates its topics "
        "with message.timestamp.type=LogAppendTime; timestamps seen: "
        f"{lat.get('timestamp_types')}), matched by source_event_id; "
        f"{lat.get('triggers_matched', 0):,} matched, {lat.get('triggers_missing', 0):,} "
        f"missing. Alongside, {lat.get('carts_sent', 0):,} cart events of other new customers "
        "dated so that their first abandoned-cart timer came due 2-12 s later, so that the "
        "worker's own `timer_lateness_p99_ms` (tick handled - fire_at, which includes the tick's "
        "Kafka round trip) has samples from this run. Then the maximum rate of that workload: "
        f"{_num(_get(r, 'latency_backlog', 'orders_sent'))} orders sent at once (a backlog), "
        "and the rate at which the worker appended their triggers, from the first to the last: "
        f"{_num(_get(r, 'latency_backlog', 'triggers_per_s'), '/s')} "
        f"({_num(_get(r, 'latency_backlog', 'orders_per_worker_cpu_s'))} orders per worker "
        "CPU-second). The probe again at half that rate (the target's reading of 'half the "
        "maximum rate'): p50 "
        f"{_num(_get(r, 'latency_half_max', 'p50_ms'), 'ms')}, p99 "
        f"{_num(_get(r, 'latency_half_max', 'p99_ms'), 'ms')}; p99 per second of that probe: "
        f"{_get(r, 'latency_half_max', 'p99_ms_by_second')}.",
        f"4: in-process, no Kafka: `JourneyEngine` over a dict, the worker's `Outputs` and "
        "`Acks` over a broker that acknowledges each record at once (records encoded, outbox "
        f"and acknowledgements included), the real clock; {tim.get('customers', 0):,} "
        "customers built with `step` (consent, then "
        "a cart: an abandoned-cart timer each) due over "
        f"{tim.get('due_spread_s')} s; `on_tick` for each of {tim.get('partitions')} partitions "
        "every 250 ms. Lateness = tick time - fire_at (the worker's definition); every timer "
        f"EMITTED (time zone {tim.get('time_zone')} keeps quiet hours out). **Excludes the Kafka "
        "round trip of the tick message** and Faust table (RocksDB, changelog) costs; the "
        "worker's own figure from step 3 includes them.",
        "5: the same events replayed through `step` (now = publish time, as the worker's clock "
        "sees them), then `fire_due(now)` as the worker's ticks would; "
        "`len(pack(partition, state))` per customer.",
        "6: after step 1 the worker was stopped (SIGTERM); a fresh worker with the same app id "
        "and prefix but an empty JOURNEY_DATA_DIR restored the journeys table from its changelog "
        f"topic ({_num(e2e.get('changelog_records'))} records: one per stored state change, "
        "as written by the e2e worker; "
        f"{_num((rec.get('restore') or {}).get('restored_records'))} read by the restoring "
        "worker, the rest compacted away by the broker); start of the process to the first "
        "status with ready: true (status every "
        f"{min(float(args.get('status_every') or 1), 0.25)} s). Customers = its "
        "index_rebuild.customers. Baseline: the same on another prefix whose table is empty "
        f"(a first worker created its topics and changelog, then a second one started empty): "
        f"{_num((rec.get('baseline') or {}).get('start_to_ready_s'), 's', 2)}. Cores used "
        f"while restoring: {cores((rec.get('restore') or {}).get('cpu_cores'))}.",
    ]
    return out
