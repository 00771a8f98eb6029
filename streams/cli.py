"""``journey``: the command line of the pipeline."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from streams.settings import Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])


def _user_errors() -> tuple[type[BaseException], ...]:
    from sinks.clickhouse.client import ClickHouseUnavailable
    from sinks.clickhouse.migrations import MigrationError
    from streams.topics import BrokerUnavailable, TopicLayoutError

    return (BrokerUnavailable, TopicLayoutError, ClickHouseUnavailable, MigrationError)


def friendly(fn: F) -> F:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _user_errors() as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def _settings(ctx: click.Context) -> Settings:
    settings = ctx.obj
    assert isinstance(settings, Settings)
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-level", default="warning", show_default=True, help="Python log level.")
@click.pass_context
def main(ctx: click.Context, log_level: str) -> None:
    """Post-purchase customer journeys: Kafka in, triggers out, analytics in ClickHouse.

    Configuration comes from JOURNEY_* environment variables and a .env file (see README).
    """
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        ctx.obj = load_settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"JOURNEY_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise click.ClickException(f"configuration is wrong: {problems}") from exc


# --- topics ----------------------------------------------------------------------------------
@main.group()
def topics() -> None:
    """Create and inspect the contract's Kafka topics."""


@topics.command("create")
@click.option("--partitions", type=int, default=None, help="Default: JOURNEY_PARTITIONS (12).")
@click.pass_context
@friendly
def topics_create(ctx: click.Context, partitions: int | None) -> None:
    """Create every contract topic that is missing (idempotent), then check co-partitioning."""
    from streams.topics import create_topics, verify_layout

    settings = _settings(ctx)
    outcome = asyncio.run(create_topics(settings, partitions))
    for topic, state in outcome.items():
        click.echo(f"{state:>8}  {topic}")
    count = asyncio.run(verify_layout(settings))
    click.echo(f"input topics are co-partitioned with {count} partitions")


@topics.command("list")
@click.pass_context
@friendly
def topics_list(ctx: click.Context) -> None:
    """Partition count of every contract topic."""
    from streams.topics import partition_counts

    settings = _settings(ctx)
    for topic, count in asyncio.run(partition_counts(settings, settings.all_topics())).items():
        click.echo(f"{topic:<28} {'missing' if count is None else count}")


# --- ClickHouse -------------------------------------------------------------------------------
@main.command()
@click.pass_context
@friendly
def migrate(ctx: click.Context) -> None:
    """Apply the ClickHouse migrations that are missing."""
    from sinks.clickhouse.client import ClickHouse
    from sinks.clickhouse.migrations import apply_migrations

    settings = _settings(ctx)
    applied = apply_migrations(ClickHouse.shared(settings))
    for migration in applied:
        click.echo(f"applied {migration.version:03d}_{migration.name}")
    click.echo(f"ClickHouse schema is up to date ({settings.resolved_clickhouse_url()})")


# --- running ----------------------------------------------------------------------------------
@main.command()
@click.option("--loglevel", default="info", show_default=True)
@click.option("--status-every", type=float, default=None, help="Print a status block every N s.")
@click.option("--status-format", type=click.Choice(["text", "json"]), default="text")
@click.pass_context
@friendly
def worker(
    ctx: click.Context, loglevel: str, status_every: float | None, status_format: str
) -> None:
    """Run a pipeline worker until Ctrl-C."""
    from streams.runner import run_worker

    run_worker(
        _settings(ctx),
        status_every=status_every,
        status_json=status_format == "json",
        loglevel=loglevel,
    )


_READ_ONLY = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS")


@main.command()
@click.argument("query")
@click.option("--format", "fmt", type=click.Choice(["table", "tsv", "json"]), default="table")
@click.pass_context
@friendly
def sql(ctx: click.Context, query: str, fmt: str) -> None:
    """Run one read-only SQL statement against the configured ClickHouse."""
    import json

    from sinks.clickhouse.client import ClickHouse

    statement = query.strip().rstrip(";")
    first = statement.split(None, 1)[0].upper() if statement else ""
    if first not in _READ_ONLY or ";" in statement:
        raise click.UsageError(
            f"only one read-only statement is allowed ({', '.join(_READ_ONLY)}); "
            f"got {first or 'nothing'}"
        )
    settings = _settings(ctx)
    ch = ClickHouse.shared(settings)
    result = ch.call(ch.client.query, statement, settings={"readonly": 1})
    names, rows = list(result.column_names), result.result_rows
    if fmt == "json":
        click.echo(json.dumps([dict(zip(names, row, strict=True)) for row in rows], default=str))
    elif fmt == "tsv":
        click.echo("\t".join(names))
        for row in rows:
            click.echo("\t".join("" if v is None else str(v) for v in row))
    else:
        cells = [[str(v) for v in row] for row in rows]
        widths = [max([len(n), *(len(r[i]) for r in cells)]) for i, n in enumerate(names)]
        click.echo("  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True)))
        for r in cells:
            click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


def _simulation_options(fn: F) -> F:
    for option in reversed(
        [
            click.option("--seed", type=int, default=42, show_default=True),
            click.option("--customers", type=int, default=2000, show_default=True),
            click.option(
                "--rate",
                type=float,
                default=1000.0,
                show_default=True,
                help="At most this many events per second (0 = unlimited).",
            ),
            click.option(
                "--speed",
                type=float,
                default=20000.0,
                show_default=True,
                help="Simulated time runs this many times faster than the clock.",
            ),
            click.option(
                "--bad-rate",
                type=float,
                default=0.002,
                show_default=True,
                help="Fraction of malformed payloads, to show dead-lettering.",
            ),
            click.option(
                "--max-events", type=int, default=None, help="Stop after this many events."
            ),
            click.option(
                "--run-id",
                default=None,
                help="Prefix of simulated ids (default: from the start time, so that runs "
                "never reuse each other's customers).",
            ),
        ]
    ):
        fn = option(fn)
    return fn


@main.command()
@_simulation_options
@click.option("--status-every", type=float, default=5.0, show_default=True)
@click.option("--loglevel", default="warning", show_default=True)
@click.pass_context
@friendly
def run(
    ctx: click.Context,
    seed: int,
    customers: int,
    rate: float,
    speed: float,
    bad_rate: float,
    max_events: int | None,
    run_id: str | None,
    status_every: float,
    loglevel: str,
) -> None:
    """The worker, the shop simulator and a live status display, in one process (make run)."""
    from streams.runner import SimulationOptions, run_worker

    settings = _settings(ctx)
    click.echo(
        f"journey: Kafka {settings.kafka_bootstrap}, ClickHouse "
        f"{settings.resolved_clickhouse_url()}; Ctrl-C stops."
    )
    run_worker(
        settings,
        simulation=SimulationOptions(seed, customers, rate, speed, bad_rate, max_events, run_id),
        status_every=status_every,
        loglevel=loglevel,
    )


@main.command()
@_simulation_options
@click.pass_context
@friendly
def simulate(
    ctx: click.Context,
    seed: int,
    customers: int,
    rate: float,
    speed: float,
    bad_rate: float,
    max_events: int | None,
    run_id: str | None,
) -> None:
    """Publish simulated shop traffic to the input topics (needs the broker, not the worker)."""
    from streams.console import Progress
    from streams.runner import SimulationOptions, run_simulation

    settings = _settings(ctx)
    progress = Progress("simulate", total=max_events)
    started = time.monotonic()
    stats = asyncio.run(
        run_simulation(
            settings,
            SimulationOptions(seed, customers, rate, speed, bad_rate, max_events, run_id),
            progress=progress,
        )
    )
    progress.finish(stats.events, "done")
    click.echo(stats.summary())
    click.echo(f"sent in {time.monotonic() - started:,.1f}s")


if __name__ == "__main__":
    main()
