"""``journey``: the command line of the pipeline."""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import ssl
import sys
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from streams import compiled
from streams.logs import setup_logging
from streams.ops import simulator
from streams.settings import Settings, load_settings
from streams.web.query import to_json

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


def _user_errors() -> tuple[type[BaseException], ...]:
    from schemas.registry import RegistryRejected, RegistryUnavailable
    from sinks.clickhouse.client import ClickHouseUnavailable
    from sinks.clickhouse.migrations import MigrationError
    from streams.ops.topics import BrokerUnavailable, TopicLayoutError

    # Odd input the user can fix (a missing or non-PEM certificate, an over-long CSV field):
    # one line that says what, not a traceback.
    return (
        BrokerUnavailable, TopicLayoutError, ClickHouseUnavailable, MigrationError,
        RegistryUnavailable, RegistryRejected, ssl.SSLError, FileNotFoundError, csv.Error,
    )  # fmt: skip


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
@click.option(
    "--log-level",
    default="warning",
    show_default=True,
    envvar="JOURNEY_LOG_LEVEL",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    help="Log level (JOURNEY_LOG_LEVEL).",
)
@click.option(
    "--log-format",
    default="text",
    show_default=True,
    envvar="JOURNEY_LOG_FORMAT",
    type=click.Choice(["text", "json"]),
    help="Logs as text lines or one JSON object per line (JOURNEY_LOG_FORMAT).",
)
@click.pass_context
def main(ctx: click.Context, log_level: str, log_format: str) -> None:
    """Post-purchase customer journeys: Kafka in, triggers out, analytics in ClickHouse.

    Configuration comes from JOURNEY_* environment variables and a .env file (see README).
    """
    setup_logging(log_level, log_format)
    found = compiled.status()
    if found.stale and ctx.invoked_subcommand != "compile":
        log.warning("%s", found.summary())
    ctx.meta["log_format"] = log_format
    ctx.meta["log_level"] = log_level.lower()
    try:
        ctx.obj = load_settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"JOURNEY_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise click.ClickException(f"configuration is wrong: {problems}") from exc


@main.command("compile")
@click.option(
    "--optional",
    is_flag=True,
    help="If compiling fails (no C compiler), say so and exit 0: the modules run as Python.",
)
@click.option("--status", "show", is_flag=True, help="Only say what a process started now runs.")
def compile_(optional: bool, show: bool) -> None:
    """Compile the worker's hot modules with Cython (those whose source changed since).

    The same source, about a quarter less CPU per event and per fired timer (streams/compiled.py).
    A module edited since its build runs as Python until it is compiled again.
    """
    if show:
        click.echo(compiled.check()[0].summary())
        return
    try:
        done, unchanged = compiled.build()
    except compiled.BuildError as exc:
        message = f"could not compile; those modules run as Python:\n{exc}"
        if optional:
            click.echo(f"journey compile: {message}", err=True)
            return
        raise click.ClickException(message) from exc
    click.echo(f"journey compile: {len(done)} compiled, {len(unchanged)} unchanged")


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
    from streams.ops.topics import create_topics, verify_layout

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
    """Partition count of every contract topic (and of the journey table's changelog)."""
    from streams.ops.topics import partition_counts

    settings = _settings(ctx)
    wanted = [*settings.all_topics(), settings.changelog_topic()]
    for topic, count in asyncio.run(partition_counts(settings, wanted)).items():
        click.echo(f"{topic:<28} {'missing' if count is None else count}")


# --- ClickHouse -------------------------------------------------------------------------------
@main.command()
@click.pass_context
@friendly
def migrate(ctx: click.Context) -> None:
    """Apply the ClickHouse migrations that are missing."""
    from sinks.clickhouse.client import ClickHouse, redact_url
    from sinks.clickhouse.migrations import apply_migrations

    settings = _settings(ctx)
    applied = apply_migrations(ClickHouse.shared(settings))
    for migration in applied:
        click.echo(f"applied {migration.version:03d}_{migration.name}")
    click.echo(
        f"ClickHouse schema is up to date ({redact_url(settings.resolved_clickhouse_url())})"
    )


# --- running ----------------------------------------------------------------------------------
def _role_options(fn: F) -> F:
    """The options both long-running roles take."""
    fn = click.option("--status-format", type=click.Choice(["text", "json"]), default="text")(fn)
    return click.option(
        "--status-every", type=float, default=None, help="Print a status line every N s."
    )(fn)


def _run_role(ctx: click.Context, role: str, status_every: float | None, fmt: str) -> None:
    from streams.ops import runner

    run = runner.run_worker if role == "worker" else runner.run_loader
    run(
        _settings(ctx),
        status_every=status_every,
        status_json=fmt == "json",
        loglevel=ctx.meta.get("log_level", "info"),
        log_format=ctx.meta.get("log_format", "text"),
    )


@main.command()
@_role_options
@click.pass_context
@friendly
def worker(ctx: click.Context, status_every: float | None, status_format: str) -> None:
    """Run a journey worker (Kafka in, Kafka out) until Ctrl-C; run as many as you like."""
    _run_role(ctx, "worker", status_every, status_format)


@main.command()
@_role_options
@click.pass_context
@friendly
def loader(ctx: click.Context, status_every: float | None, status_format: str) -> None:
    """Run the analytics loader (the workers' fact topics into ClickHouse; dashboard, /sql)."""
    _run_role(ctx, "loader", status_every, status_format)


@main.command()
@click.argument("query")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "tsv", "csv", "json", "jsonl"]), default="table"
)
@click.pass_context
@friendly
def sql(ctx: click.Context, query: str, fmt: str) -> None:
    """Run one read-only SQL statement against the configured ClickHouse.

    While the loader runs on the embedded ClickHouse, the query goes through it. A
    trailing FORMAT clause (JSONEachRow, JSON, TSV, CSV, PrettyCompact, ...) chooses the output.
    """
    from sinks.clickhouse.client import NotReadOnly
    from streams.web.query import QueryFailed, run_query, split_format

    try:
        query, clause = split_format(query)
        fmt = clause or fmt
        result = run_query(_settings(ctx), query)
    except NotReadOnly as exc:
        raise click.UsageError(str(exc)) from exc
    except QueryFailed as exc:
        raise click.ClickException(str(exc)) from exc
    if fmt == "json":
        click.echo(
            json.dumps(
                [dict(zip(result.columns, row, strict=True)) for row in result.rows],
                default=to_json,
            )
        )
    elif fmt == "jsonl":
        for row in result.rows:
            click.echo(json.dumps(dict(zip(result.columns, row, strict=True)), default=to_json))
    elif fmt == "csv":
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows(["" if v is None else v for v in row] for row in result.rows)
    elif fmt == "tsv":
        click.echo("\t".join(result.columns))
        for row in result.rows:
            click.echo("\t".join("" if v is None else str(v) for v in row))
    else:
        click.echo(format_table(result.columns, result.rows))


def format_table(columns: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:,.4g}" if abs(value) < 1 else f"{value:,.1f}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return str(value)

    if not columns:
        return "(no rows)"
    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    numeric = [
        all(isinstance(row[i], int | float) or row[i] is None for row in rows)
        for i in range(len(columns))
    ]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for r in cells:
        lines.append(
            "  ".join(
                v.rjust(w) if numeric[i] else v.ljust(w)
                for i, (v, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    return "\n".join(lines)


@main.command()
@click.pass_context
@friendly
def report(ctx: click.Context) -> None:
    """Print the key analytics views as tables (live while a worker runs)."""
    from streams.web.query import QueryFailed, run_query
    from streams.web.reports import REPORT, in_database

    settings = _settings(ctx)
    source = ""
    for title, query in REPORT:
        try:
            result = run_query(settings, in_database(query, settings.clickhouse_database))
        except QueryFailed as exc:
            raise click.ClickException(f"{title}: {exc}") from exc
        source = result.source
        click.secho(f"\n{title}", bold=True)
        click.echo(format_table(result.columns, result.rows) if result.rows else "(no data yet)")
    click.echo(f"\n(read from {source})")


@main.command()
@click.pass_context
@friendly
def predict(ctx: click.Context) -> None:
    """Fit BG/NBD + Gamma-Gamma to every buyer's purchases and write customer_predictions."""
    import asyncio
    import time

    from sinks.clickhouse.client import ClickHouse
    from streams.clv import FitFailed
    from streams.predictions import publish_predictions, refresh_predictions

    settings = _settings(ctx)
    ch = ClickHouse.shared(settings)
    try:
        fit = asyncio.run(refresh_predictions(ch, int(time.time() * 1000)))
    except FitFailed as exc:
        raise click.ClickException(f"no prediction: {exc}") from exc
    p, v = fit.purchases, fit.order_value
    click.echo(
        f"BG/NBD (days): r={p.r:.4g} alpha={p.alpha:.4g} a={p.a:.4g} b={p.b:.4g} "
        f"log-likelihood {p.log_likelihood:.1f}"
    )
    click.echo(
        f"Gamma-Gamma (minor units): p={v.p:.4g} q={v.q:.4g} gamma={v.gamma:.4g} "
        f"log-likelihood {v.log_likelihood:.1f}"
    )
    click.echo(f"wrote predictions for {len(fit.predictions):,} customers to customer_predictions")
    try:
        sent = asyncio.run(publish_predictions(settings, fit))
    except Exception as exc:  # the table has them; the workers get them at the next fit
        click.secho(
            f"not published to {settings.topic('predictions')} ({exc}): the journey workers "
            "get them with the next fit",
            fg="yellow",
            err=True,
        )
    else:
        click.echo(f"published {sent:,} to {settings.topic('predictions')} for the journey workers")


# --- dead letters -----------------------------------------------------------------------------
@main.group()
def dlq() -> None:
    """Inspect dead letters and replay them once the cause is fixed."""


def _when(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


@dlq.command("list")
@click.option("--reason", default=None, help="Only this reason code (e.g. validation).")
@click.option("--topic", default=None, help="Only dead letters from this topic.")
@click.option("--limit", type=int, default=50, show_default=True)
@click.pass_context
@friendly
def dlq_list(ctx: click.Context, reason: str | None, topic: str | None, limit: int) -> None:
    """What failed, newest last, with the reason."""
    from collections import Counter

    from streams.ops.dlq import read_letters_sync, select

    letters = select(read_letters_sync(_settings(ctx)), reason=reason, topic=topic)
    letters.sort(key=lambda item: item.letter.failed_at)
    if not letters:
        click.echo("no dead letters" + (" matching the filter" if reason or topic else ""))
        return
    shown = letters[-limit:]
    for item in shown:
        letter = item.letter
        reason_text = letter.reason if len(letter.reason) <= 90 else letter.reason[:87] + "..."
        click.echo(
            f"{item.id:<40} {_when(letter.failed_at)}  {letter.reason_code:<20} {reason_text}"
        )
    by_reason = Counter(item.letter.reason_code for item in letters)
    click.echo(
        f"\n{len(letters)} dead letter(s)"
        + (f", showing the last {len(shown)}" if len(shown) < len(letters) else "")
        + ": "
        + ", ".join(f"{code} {n}" for code, n in by_reason.most_common())
        + ". Details: journey dlq show ID"
    )


@dlq.command("show")
@click.argument("dead_letter_id")
@click.pass_context
@friendly
def dlq_show(ctx: click.Context, dead_letter_id: str) -> None:
    """Everything about one dead letter, and what to do about it."""
    from streams.ops.dlq import ADVICE, read_letters_sync, select

    found = select(read_letters_sync(_settings(ctx)), ids=[dead_letter_id])
    if not found:
        raise click.ClickException(f"no dead letter {dead_letter_id!r} (see journey dlq list)")
    item = found[-1]
    letter = item.letter
    value = letter.value or b""
    if value[:1] == b"{":
        shown = value.decode("utf-8", "backslashreplace")
    else:
        shown = value[:256].hex(" ") + (" ..." if len(value) > 256 else "")
    click.echo(f"id            {item.id}")
    click.echo(f"failed at     {_when(letter.failed_at)} UTC")
    click.echo(f"source        {letter.topic} partition {letter.partition} offset {letter.offset}")
    click.echo(f"expected      {letter.record_type or '-'}")
    click.echo(f"reason        {letter.reason_code}: {letter.reason}")
    key = letter.key.decode("utf-8", "backslashreplace") if letter.key is not None else "(none)"
    click.echo(f"key           {key}")
    click.echo(f"value         {len(value):,} bytes{' (truncated)' if item.truncated else ''}")
    click.echo(f"              {shown}")
    click.echo(f"what to do    {ADVICE.get(letter.reason_code, 'See the reason.')}")


@dlq.command("replay")
@click.argument("dead_letter_ids", nargs=-1)
@click.option("--reason", default=None, help="Replay every dead letter with this reason code.")
@click.option("--topic", default=None, help="Replay every dead letter from this topic.")
@click.option("--all", "everything", is_flag=True, help="Replay every dead letter.")
@click.pass_context
@friendly
def dlq_replay(
    ctx: click.Context,
    dead_letter_ids: tuple[str, ...],
    reason: str | None,
    topic: str | None,
    everything: bool,
) -> None:
    """Republish chosen dead letters to their source topic (after fixing the cause)."""
    from streams.ops.console import Progress
    from streams.ops.dlq import read_letters_sync, replay, select

    if not (dead_letter_ids or reason or topic or everything):
        raise click.UsageError("say what to replay: IDs, --reason, --topic or --all")
    settings = _settings(ctx)
    chosen = select(read_letters_sync(settings), dead_letter_ids, reason, topic)
    missing = set(dead_letter_ids) - {item.id for item in chosen}
    if missing:
        raise click.ClickException(f"no such dead letter(s): {', '.join(sorted(missing))}")
    partial = [item for item in chosen if item.truncated]
    chosen = [item for item in chosen if not item.truncated]
    for item in partial:
        click.echo(f"skipped {item.id}: only part of its value was kept; the producer must resend")
    if not chosen:
        click.echo("nothing to replay")
        return
    progress = Progress("replay", total=len(chosen))
    replayed, refused = asyncio.run(replay(settings, chosen, on_progress=progress.update))
    progress.finish(replayed, "done")
    for item, problem in refused:
        click.secho(f"not replayed {item.id}: {problem}", fg="yellow", err=True)
    click.echo(
        f"replayed {replayed} dead letter(s) to their source topics; they are processed like "
        "fresh events (and dead-lettered again if the cause is not fixed)"
    )


def _simulation_options(fn: F) -> F:
    for option in reversed(
        [
            click.option("--seed", type=int, default=simulator.DEFAULT_SEED, show_default=True),
            click.option(
                "--customers", type=int, default=simulator.DEFAULT_CUSTOMERS, show_default=True
            ),
            click.option(
                "--rate",
                type=float,
                default=simulator.DEFAULT_RATE,
                show_default=True,
                help="At most this many events per second (0 = unlimited).",
            ),
            click.option(
                "--speed",
                type=float,
                default=simulator.DEFAULT_SPEED,
                show_default=True,
                help="Simulated time runs this many times faster than the clock.",
            ),
            click.option(
                "--bad-rate",
                type=float,
                default=simulator.DEFAULT_BAD_EVENT_RATE,
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
@click.option("--status-format", type=click.Choice(["text", "json"]), default="text")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Journey workers to start (default: one per core).",
)
@click.option(
    "--simulate/--no-simulate", default=True, show_default=True, help="Run the shop simulator."
)
@click.option(
    "--sender/--no-sender",
    default=True,
    show_default=True,
    help="Run the reference email sender against a local SMTP server (mails in <data dir>/mail).",
)
@click.pass_context
@friendly
def run(
    ctx: click.Context,
    sender: bool,
    seed: int,
    customers: int,
    rate: float,
    speed: float,
    bad_rate: float,
    max_events: int | None,
    run_id: str | None,
    status_every: float,
    status_format: str,
    workers: int | None,
    simulate: bool,
) -> None:
    """The loader, N journey workers, the shop simulator, the email sender and a live status
    display (make run); Ctrl-C stops them all."""
    from sinks.clickhouse.client import redact_url
    from streams.ops.runner import SimulationOptions, default_workers, run_all

    settings = _settings(ctx)
    workers = workers or default_workers()
    click.echo(
        f"journey: Kafka {settings.kafka_bootstrap}, ClickHouse "
        f"{redact_url(settings.resolved_clickhouse_url())}; Ctrl-C stops."
    )
    if settings.web_port:
        base = f"http://{settings.web_host}:{settings.web_port}"
        click.secho(f"dashboard: {base}/   metrics: {base}/metrics", bold=True)
        click.echo('analytics while it runs: journey report, journey sql "SELECT ..."')
    if speed != 1:
        click.echo(
            f"demo clock: shop and journey time run {speed:,.0f}x faster than the wall clock "
            f"(an hour every {3600 / speed:.2g} s), starting now; the status shows it as "
            "'journey clock'. An event you send by hand must carry that time, or its triggers "
            "are EXPIRED (nothing older than 24 h is sent): `journey publish` stamps it for you."
        )
    if sender:
        click.echo(
            "emails: rendered by the reference sender into .local/mail, listed on the dashboard"
        )
    click.echo(f"processes: the loader (owns ClickHouse) and {workers} journey worker(s)")
    run_all(
        settings,
        workers=workers,
        simulation=SimulationOptions(seed, customers, rate, speed, bad_rate, max_events, run_id)
        if simulate
        else None,
        status_every=status_every,
        status_json=status_format == "json",
        loglevel=ctx.meta.get("log_level", "warning"),
        local_sender=sender,
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
    from streams.ops.console import Progress
    from streams.ops.runner import SimulationOptions, run_simulation

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


# --- import -----------------------------------------------------------------------------------
@main.command("import")
@click.argument("file", type=click.Path())  # the importer says what is wrong with it
@click.option("--format", "fmt", type=click.Choice(["auto", "csv", "jsonl"]), default="auto")
@click.option("--dry-run", is_flag=True, help="Read and validate only; send nothing.")
@click.option("--errors", "errors", type=click.Path(dir_okay=False), help="Rejected rows -> JSONL.")
@click.pass_context
@friendly
def import_(ctx: click.Context, file: str, fmt: str, dry_run: bool, errors: str | None) -> None:
    """Publish history (CSV or JSON Lines, see docs/import.md) into the input topics.

    Exit code 0: every row was good; 1: some rows were rejected (the others went through);
    2: the file could not be read, or Kafka could not be used.
    """
    from pathlib import Path

    from streams.ops.console import Progress
    from streams.ops.importer import ImportFailed, run_import

    errors_path = Path(errors) if errors else None
    try:
        result = asyncio.run(
            run_import(
                _settings(ctx), Path(file), fmt, dry_run=dry_run, errors_path=errors_path,
                progress=lambda total: Progress("import", total=total),
            )
        )  # fmt: skip
    except ImportFailed as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    click.echo(result.summary())
    if result.rejected:
        click.echo(result.rejections(errors_path))
    click.secho(result.verdict(), fg="yellow" if result.rejected else "green")
    sys.exit(1 if result.rejected else 0)


# --- Schema Registry --------------------------------------------------------------------------


@main.group()
def schemas() -> None:
    """Our Avro schemas in a Confluent-compatible Schema Registry (JOURNEY_SCHEMA_REGISTRY_URL)."""


@schemas.command("register")
@click.pass_context
@friendly
def schemas_register(ctx: click.Context) -> None:
    """Register every released version of each record under `<topic>-value` (idempotent)."""
    from streams.schema_registry import register_schemas

    settings = _settings(ctx)
    if not settings.schema_registry_url:
        raise click.UsageError("set JOURNEY_SCHEMA_REGISTRY_URL to the registry's URL")
    from schemas.codec import Codec

    for item in asyncio.run(register_schemas(settings, Codec.load())):
        checked = {None: "new subject", True: "compatible", False: "NOT compatible"}
        click.echo(
            f"{item.subject:<40} {item.record} v{item.version}  id {item.schema_id}  "
            f"({checked[item.compatible]})"
        )


# --- The reference email sender ---------------------------------------------------------------


@main.command("sender")
@click.pass_context
@friendly
def sender_command(ctx: click.Context) -> None:
    """Consume journey.triggers, send one email per trigger over SMTP, report engagement back.

    Settings: JOURNEY_SENDER_* (SMTP host, port, STARTTLS, credentials, from, recipient);
    docs/consuming-triggers.md.
    """
    import signal

    from streams.sender.service import EmailSender, describe

    settings = _settings(ctx)

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        sender = EmailSender(settings)
        click.echo(
            f"journey sender: {settings.topic('triggers')} -> SMTP {settings.sender_smtp_host}:"
            f"{settings.sender_smtp_port}; engagement -> {settings.topic('engagement')}. "
            "Ctrl-C stops."
        )
        await sender.run(stop)
        click.echo(f"journey sender stopped: {describe(sender.counts)}")

    asyncio.run(go())


# --- Small tools: publish and tail ------------------------------------------------------------


@main.command("publish")
@click.argument("file", type=click.File("r"), default="-")
@click.option("--topic", default=None, help='orders, cart, ... (else each line\'s "topic" field).')
@click.option(
    "--stamp/--no-stamp",
    default=None,
    help="Set occurred_at to now on the journey clock. Default: when a demo (make run) runs.",
)
@click.pass_context
@friendly
def publish_command(ctx: click.Context, file: Any, topic: str | None, stamp: bool | None) -> None:
    """Publish JSON lines (one contract record each) to the input topics, keyed by customer_id.

    During `make run` the journey clock runs faster than the wall clock: events are stamped with
    its time, so that what they trigger is not EXPIRED.
    """
    from streams.clock import Clock
    from streams.ops.publish import PublishError, publish_lines
    from streams.ops.serving import find_serving

    settings = _settings(ctx)
    serving = find_serving(settings)
    clock = serving.clock() if serving is not None else Clock()
    if stamp is None:
        stamp = clock.speed != 1
    try:
        sent = asyncio.run(publish_lines(settings, file, topic, clock.now_ms, stamp=stamp))
    except PublishError as exc:
        raise click.ClickException(f"{exc} (nothing was sent)") from exc
    note = f" (stamped with the journey clock, {clock.speed:,.0f}x)" if stamp else ""
    for name, count in sorted(sent.items()):
        click.echo(f"{name}: {count:,} published{note}")


@main.command("tail")
@click.argument("what", type=click.Choice(["triggers", "decisions", "deadletter"]))
@click.option("--json", "json_lines", is_flag=True, help="One JSON object per line.")
@click.option("--from-beginning", is_flag=True, help="Everything so far, then follow.")
@click.option("--limit", type=int, default=None, help="Stop after this many.")
@click.option("--seconds", type=float, default=None, help="Stop after this long.")
@click.pass_context
@friendly
def tail_command(
    ctx: click.Context,
    what: str,
    json_lines: bool,
    from_beginning: bool,
    limit: int | None,
    seconds: float | None,
) -> None:
    """Follow the triggers, every decision (any status) or the dead letters, from their topics."""
    from streams.ops.tail import run_tail

    run_tail(
        _settings(ctx),
        what,
        click.echo,
        json_lines=json_lines,
        from_beginning=from_beginning,
        limit=limit,
        seconds=seconds,
    )


if __name__ == "__main__":
    main()
