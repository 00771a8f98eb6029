"""All configuration in one frozen object, read once at start from the environment.

Every variable has the prefix ``JOURNEY_`` (``JOURNEY_KAFKA_BOOTSTRAP``, ...). A ``.env`` file in
the working directory is read too; real environment variables win over it. Durations accept
``250ms``, ``45s``, ``30m``, ``16h``, ``3d`` or a plain number of seconds, and are held in
milliseconds because the whole pipeline counts time in epoch milliseconds.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources import PydanticBaseEnvSettingsSource

from streams.clock import Clock
from streams.durations import DurationMs
from streams.durations import parse_duration_ms as parse_duration_ms  # moved there; re-exported
from streams.journey.config import JourneyConfig

ENV_PREFIX = "JOURNEY_"


def duration(text: str) -> Any:
    """A duration default written as people say it (``"16h"``), validated like the environment."""
    return Field(default=text, validate_default=True)


# The worker's Faust table of journeys (one state per customer); Faust names its changelog
# topic after the app id and it: ``Settings.changelog_topic()``.
JOURNEY_TABLE = "journeys"
# The contract's input topics, by the short name used throughout the code.
INPUT_TOPICS = ("page_views", "cart", "orders", "shipments", "feedback", "engagement", "customers")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    # --- Kafka -------------------------------------------------------------------------------
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_password: SecretStr | None = None

    app_id: str = "journey"
    # Offsets of stored messages are committed this often, or after this many messages.
    commit_interval: DurationMs = duration("2s")
    commit_every: int = Field(default=10_000, ge=1)
    # How long the group waits for a silent worker before giving its partitions to another.
    consumer_session_timeout: DurationMs = duration("45s")
    # Static group membership (KIP-345): a restarted worker with the same id gets its partitions
    # back at once instead of after the session timeout. Empty or "none": dynamic membership.
    # Opt-in for `journey worker` (a static member that stops for good keeps its partitions
    # until its session times out); `journey run` gives each of its workers an id unless "none"
    # (streams/ops/runner.py, worker_instance_ids).
    group_instance_id: str = ""
    topic_prefix: str = ""
    partitions: int = Field(default=12, ge=1)
    replication_factor: int = Field(default=1, ge=1)

    # --- Input topics (names after the prefix) ----------------------------------------------
    topic_page_views: str = "shop.page_views"
    topic_cart: str = "shop.cart"
    topic_orders: str = "shop.orders"
    topic_shipments: str = "shop.shipments"
    topic_feedback: str = "shop.feedback"
    topic_engagement: str = "shop.engagement"
    topic_customers: str = "shop.customers"
    # --- Output topics ------------------------------------------------------------------------
    topic_triggers: str = "journey.triggers"
    topic_deadletter: str = "journey.deadletter"
    # What the journey workers decide and know, for the loader and any other consumer
    # (docs/topics.md): every trigger decision, every accepted event in canonical form, and the
    # customer snapshot (compacted; a tombstone on erasure).
    topic_decisions: str = "journey.decisions"
    topic_journey_events: str = "journey.events"
    topic_snapshots: str = "journey.customers"
    # Lifetime-value predictions the loader publishes for the workers (co-partitioned with the
    # inputs): WIN_BACK / CROSS_SELL triggers and snapshots carry the newest per customer.
    topic_predictions: str = "journey.predictions"
    # Events keyed by something other than their customer_id are re-keyed through this topic.
    topic_repartition: str = "journey.repartition"
    # The worker's own clock ticks, one per partition, so timers fire inside the agent.
    topic_ticks: str = "journey.ticks"
    timer_tick_interval: DurationMs = duration("250ms")
    # Event-time merge (streams/runtime/ordering.py): how long a partition number waits for an empty
    # input topic-partition that is behind its end offset, and how many messages it buffers.
    ordering_wait: DurationMs = duration("200ms")
    # Measured (make bench, 300k-event catch-up): 100,000 instead of 10,000 gave up order for
    # 69k events instead of 169k, cost 12 % less CPU (more coalescing) and 30 MB more memory.
    # Since a topic-partition's fetching pauses at its share of it (and polls are bounded below),
    # order is no longer given up in that catch-up.
    ordering_buffer: int = Field(default=100_000, ge=1)
    # Records one poll of the consumer hands over at most (Faust's broker_max_poll_records;
    # unbounded there). Bounds what still arrives after the merge pauses a topic-partition:
    # unbounded, a 300k-event catch-up released 74k events for lack of room despite the pauses;
    # at 500, none (make bench; 72k without the pauses).
    consumer_max_poll_records: int = Field(default=500, ge=1)
    # How long the broker may hold a fetch of the worker's consumer that finds nothing new
    # (aiokafka's fetch_max_wait_ms; Faust's 1500 ms). Faust's consumer sends its other requests
    # to the broker on the fetch's connection, behind it: at the end of a table's recovery the
    # earliest offsets and the seek to the committed offsets each waited out a whole empty fetch
    # (1.3 and 1.5 s of a 6 s restore, bench/README.md "Session 7: recovery").
    consumer_fetch_max_wait: DurationMs = duration("200ms")
    # While records keep coming, how long the broker may hold the worker's next fetch to gather
    # more (``fetching.FetchPacing``): at a moderate rate one fetch per this interval brings
    # many records, instead of one round trip per handful (measured at 1,000 orders/s: 1,450 ->
    # 1,770 orders per worker CPU-second at 10 ms, 2,250 at 20 ms). It adds at most this much
    # to a record's latency while records flow; after a fetch that brought nothing, the next one
    # is the long poll above and returns at the first record. 0: off.
    consumer_fetch_gather: DurationMs = duration("10ms")

    # --- Schema Registry (Confluent wire format: 0x00 + 4-byte schema id; docs/producing.md) ----
    schema_registry_url: str = ""  # empty: no registry; such values are dead letters (no_registry)
    schema_registry_username: str | None = None
    schema_registry_password: SecretStr | None = None
    # How journey.triggers and journey.deadletter are written: Avro single-object encoding, or the
    # registry framing with our schemas' ids (looked up; registered if auto_register is on).
    output_framing: Literal["single-object", "confluent"] = "single-object"
    schema_registry_auto_register: bool = False

    # --- The reference email sender (journey sender; docs/consuming-triggers.md) ---------------
    sender_smtp_host: str = "127.0.0.1"
    sender_smtp_port: int = Field(default=587, ge=1, le=65535)
    sender_smtp_starttls: bool = True
    sender_smtp_username: str | None = None
    sender_smtp_password: SecretStr | None = None
    sender_smtp_cafile: Path | None = None  # CA of the SMTP server's certificate (else system)
    sender_from: str = "Example Shop <shop@example.com>"
    # The shop's own customer directory is what knows addresses; this maps an id to one.
    sender_recipient: str = "{customer_id}@customers.example.com"
    sender_default_locale: Literal["en", "nl"] = "en"
    sender_shop_name: str = "Example Shop"
    sender_shop_url: str = "https://shop.example.com"

    # --- Bad input ------------------------------------------------------------------------------
    max_value_bytes: int = Field(default=1_048_576, ge=1024)

    # --- ClickHouse ---------------------------------------------------------------------------
    # chdb:///abs/path (embedded, the default under .local/) or http(s)://user:pass@host:port
    clickhouse_url: str = ""
    clickhouse_database: str = "journey"
    clickhouse_username: str | None = None
    clickhouse_password: SecretStr | None = None
    sink_batch_rows: int = Field(default=20_000, ge=1)
    sink_flush_interval: DurationMs = duration("1s")
    sink_dedup_window: int = Field(default=1_000, ge=1)
    sink_retry_backoff: DurationMs = duration("500ms")
    sink_retry_backoff_max: DurationMs = duration("30s")
    # How often the loader refits the lifetime-value predictions (customer_predictions); 0: never
    # (then only `journey predict` writes them). Wall-clock time.
    prediction_interval: DurationMs = duration("6h")

    # --- The journey worker (journey worker): Kafka in, Kafka out ------------------------------
    # A consumed message is acknowledged once the broker has every record it caused; the worker
    # checks this often, and stops reading while this many records wait for the broker. Each
    # check also writes the customers' states changed since the last (once per customer): a
    # longer interval coalesces more (measured: 1 s instead of 50 ms cut the changelog from
    # 330k to 179k records for 300k events, and the CPU per event by 13 %); offsets are only
    # committed every JOURNEY_COMMIT_INTERVAL anyway. Triggers are sent at once either way.
    ack_interval: DurationMs = duration("1s")
    max_pending_records: int = Field(default=20_000, ge=1)
    # The worker's own HTTP endpoint: /health, /ready, /metrics, /status (JSON). 0: none.
    worker_web_port: int = Field(default=6067, ge=0, le=65535)
    # Several workers on one machine each need their own local state: data_dir/faust/<name>.
    worker_name: str = Field(default="worker", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # The workers' /status URLs (comma-separated) whose figures the dashboard shows per worker;
    # `journey run` sets it for the workers it starts.
    worker_urls: str = ""

    # --- The loader's HTTP endpoint (journey loader): /health, /ready, /metrics, read-only /sql,
    # the dashboard
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=0, le=65535)  # 0: no HTTP endpoint

    # --- Who may use the HTTP endpoint, and how much an analyst query may take (docs/security.md)
    # Bearer token for /sql and the dashboard; without one they answer on a loopback bind only.
    web_token: SecretStr | None = None
    # Host names (besides loopback and web_host) that /sql and the dashboard answer to; a name
    # starting with "." matches every subdomain. Guards against DNS rebinding.
    web_allowed_hosts: str = ""
    # A connection that has not sent a whole request head (request line and headers) this long
    # after it opened or after its previous response is closed: slowloris and idle connections.
    web_header_timeout: DurationMs = duration("10s")
    # A request body (POST /sql) that takes longer than this to arrive is refused (408).
    web_request_timeout: DurationMs = duration("30s")
    # Analyst SQL (/sql, journey sql, journey report, the dashboard) runs on its own read-only
    # ClickHouse session with these limits, enforced by ClickHouse.
    query_max_execution_time: DurationMs = duration("30s")
    query_max_result_rows: int = Field(default=100_000, ge=1)
    query_max_result_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    query_max_memory_usage: int = Field(default=1024 * 1024 * 1024, ge=1024 * 1024)
    query_max_threads: int = Field(default=1, ge=1)
    query_concurrency: int = Field(default=2, ge=1)  # analyst queries running at once
    # A ClickHouse server user for analyst queries (read-only grants); default: the sink's user.
    clickhouse_query_username: str | None = None
    clickhouse_query_password: SecretStr | None = None

    # --- Local state --------------------------------------------------------------------------
    data_dir: Path = Path(".local")
    table_store: str = "rocksdb://"
    # The journeys table's changelog topic, when `journey topics create` or a start creates it
    # (an existing topic is left as it is): a worker restoring the table reads every record the
    # cleaner has not compacted yet. Kafka never compacts the active segment (7 days or 1 GiB
    # by default) and cleans only once half the log is dirty: a recovery read 3.6 records per
    # customer. A segment rolls after changelog_segment_ms, and is cleaned once
    # changelog_dirty_ratio of the log is.
    changelog_segment_ms: DurationMs = duration("10s")
    changelog_dirty_ratio: float = Field(default=0.1, gt=0, le=1)

    # --- The journey: trigger timing, windows and delivery rules (streams/journey/config.py).
    # Each is read from JOURNEY_<NAME> (JOURNEY_FREQUENCY_CAP, ...), see _JourneyEnvironment.
    journey: JourneyConfig = JourneyConfig()

    # --- Clock: 1 = real time; the simulator and demos run it faster ---------------------------
    clock_speed: float = Field(default=1.0, gt=0)
    # Where a faster clock starts (epoch ms; 0: when the process starts). Processes that must
    # agree on the time (`journey run`'s workers, loader and simulator) are given the same one.
    clock_epoch_ms: int = Field(default=0, ge=0)

    def clock(self) -> Clock:
        return Clock(self.clock_speed, self.clock_epoch_ms or None)

    @model_validator(mode="before")
    @classmethod
    def _flat_journey_names(cls, data: Any) -> Any:
        """The journey settings go by their flat names (``JOURNEY_FREQUENCY_CAP`` or the keyword
        ``frequency_cap``) into ``journey``; a ``journey`` given whole wins over them."""
        if isinstance(data, dict):
            flat = {k: data.pop(k) for k in list(data) if k in _JourneyEnvironment.NAMES}
            if flat:
                nested = data.get("journey") or {}
                if isinstance(nested, JourneyConfig):
                    nested = asdict(nested)
                data["journey"] = {**flat, **nested}
        return data

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        journey = _JourneyEnvironment(settings_cls, env_settings, dotenv_settings)
        return init_settings, env_settings, journey, dotenv_settings, file_secret_settings

    @field_validator(
        "timer_tick_interval",
        "web_header_timeout",
        "web_request_timeout",
        "query_max_execution_time",
    )
    @classmethod
    def _positive_duration(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("must be longer than 0 (e.g. 250ms)")
        return value

    @field_validator("clickhouse_url")
    @classmethod
    def _clickhouse_scheme(cls, url: str) -> str:
        if url and not url.startswith(("chdb://", "http://", "https://")):
            raise ValueError(
                "must start with chdb:// (embedded, e.g. chdb:///var/lib/journey/chdb), "
                "http:// or https:// (a ClickHouse server)"
            )
        return url

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, servers: str) -> str:
        for server in servers.split(","):
            host, colon, port = server.strip().rpartition(":")
            if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(
                    f"{server.strip()!r} is not host:port; use a comma-separated list such as "
                    "kafka-1:9092,kafka-2:9092"
                )
        return servers

    # --- Derived -----------------------------------------------------------------------------
    def topic(self, name: str) -> str:
        """Full topic name for a short name: ``topic("orders")`` -> ``shop.orders``."""
        return self.topic_prefix + str(getattr(self, f"topic_{name}"))

    def input_topics(self) -> dict[str, str]:
        """Short name -> full topic name of every input topic of the contract."""
        return {name: self.topic(name) for name in INPUT_TOPICS}

    def all_topics(self) -> list[str]:
        return [
            *self.input_topics().values(),
            self.topic("repartition"),
            self.topic("ticks"),
            self.topic("triggers"),
            self.topic("deadletter"),
            self.topic("predictions"),
            *self.fact_topics(),
        ]

    def fact_topics(self) -> list[str]:
        """The workers' outputs the loader stores in ClickHouse (dead letters are one of them)."""
        return [
            self.topic("journey_events"),
            self.topic("decisions"),
            self.topic("snapshots"),
            self.topic("deadletter"),
        ]

    def changelog_topic(self) -> str:
        """The journey table's changelog (what Faust names it): ``journey topics create`` and
        every start create it before a worker joins its group, see ``streams/ops/topics.py``."""
        return f"{self.app_id}-{JOURNEY_TABLE}-changelog"

    def changelog_config(self) -> dict[str, str]:
        """The changelog topic's compaction (see ``changelog_segment_ms``): fewer records for a
        restoring worker to read. (Faust adds ``cleanup.policy=compact`` itself.)"""
        return {
            "segment.ms": str(self.changelog_segment_ms),
            "min.cleanable.dirty.ratio": str(self.changelog_dirty_ratio),
        }

    def copartitioned_topics(self) -> list[str]:
        """Topics the journey agent reads together: they must have the same partition count."""
        return [
            *self.input_topics().values(),
            self.topic("predictions"),
            self.topic("repartition"),
            self.topic("ticks"),
        ]

    def resolved_clickhouse_url(self) -> str:
        if self.clickhouse_url:
            return self.clickhouse_url
        return f"chdb://{(self.data_dir / 'chdb').resolve()}"

    def kafka_client_options(self) -> dict[str, Any]:
        """Security options in aiokafka's spelling, for every client we create."""
        options: dict[str, Any] = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol.startswith("SASL"):
            options["sasl_mechanism"] = self.kafka_sasl_mechanism
            options["sasl_plain_username"] = self.kafka_sasl_username
            options["sasl_plain_password"] = (
                self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else None
            )
        if self.kafka_security_protocol.endswith("SSL"):
            import ssl

            context = ssl.create_default_context(
                cafile=str(self.kafka_ssl_cafile) if self.kafka_ssl_cafile else None
            )
            if self.kafka_ssl_certfile:
                context.load_cert_chain(
                    str(self.kafka_ssl_certfile),
                    str(self.kafka_ssl_keyfile) if self.kafka_ssl_keyfile else None,
                    self.kafka_ssl_password.get_secret_value() if self.kafka_ssl_password else None,
                )
            options["ssl_context"] = context
        return options


class _JourneyEnvironment(PydanticBaseSettingsSource):
    """The nested journey settings keep their flat variable names (``JOURNEY_FREQUENCY_CAP``,
    not ``JOURNEY_JOURNEY__FREQUENCY_CAP``): deploy files and operators use them. The
    environment wins over ``.env``, and keywords over both, as for every other setting."""

    NAMES = tuple(f.name for f in fields(JourneyConfig))

    def __init__(
        self, settings_cls: type[BaseSettings], *sources: PydanticBaseSettingsSource
    ) -> None:
        super().__init__(settings_cls)
        self.sources = [s for s in sources if isinstance(s, PydanticBaseEnvSettingsSource)]

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads the variables itself

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for source in reversed(self.sources):  # the first source (the environment) wins
            variables = getattr(source, "env_vars", {})
            for name in self.NAMES:
                value = variables.get((ENV_PREFIX + name).lower())
                if value is not None:
                    values[name] = value
        return values  # flat: _flat_journey_names nests them, after the sources' precedence


def variable_names() -> set[str]:
    """Every environment variable the settings read."""
    flat = [name for name in Settings.model_fields if name != "journey"]
    return {ENV_PREFIX + name.upper() for name in (*flat, *_JourneyEnvironment.NAMES)}


def load_settings(**overrides: Any) -> Settings:
    """Read the environment (and ``.env``) once; keyword overrides win, for tests and the CLI."""
    return Settings(**overrides)
