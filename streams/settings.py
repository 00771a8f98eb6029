"""All configuration in one frozen object, read once at start from the environment.

Every variable has the prefix ``JOURNEY_`` (``JOURNEY_KAFKA_BOOTSTRAP``, ...). A ``.env`` file in
the working directory is read too; real environment variables win over it. Durations accept
``250ms``, ``45s``, ``30m``, ``16h``, ``3d`` or a plain number of seconds, and are held in
milliseconds because the whole pipeline counts time in epoch milliseconds.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "JOURNEY_"

_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration_ms(value: Any) -> int:
    """``"16h"`` -> 57_600_000. A bare number means seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration cannot be a boolean")
    if isinstance(value, int | float):
        return int(value * 1000)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(
            f"{value!r} is not a duration: use a number with ms, s, m, h or d (e.g. 16h, 3d)"
        )
    number, unit = match.groups()
    return int(float(number) * _UNITS_MS[unit or "s"])


DurationMs = Annotated[int, BeforeValidator(parse_duration_ms)]


def duration(text: str) -> Any:
    """A duration default written as people say it (``"16h"``), validated like the environment."""
    return Field(default=text, validate_default=True)


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
    # Static group membership (KIP-345), opt-in: a restarted worker with the same id gets its
    # partitions back at once instead of after the session timeout. Empty: dynamic membership.
    # Not the default: see README (Operating it) for what the crash test saw with it.
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
    # Events keyed by something other than their customer_id are re-keyed through this topic.
    topic_repartition: str = "journey.repartition"
    # The worker's own clock ticks, one per partition, so timers fire inside the agent.
    topic_ticks: str = "journey.ticks"
    timer_tick_interval: DurationMs = duration("250ms")

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

    # --- The worker's HTTP endpoint: /health, /ready, /metrics, read-only /sql, the dashboard --
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=0, le=65535)  # 0: no HTTP endpoint

    # --- Local state --------------------------------------------------------------------------
    data_dir: Path = Path(".local")
    table_store: str = "rocksdb://"

    # --- Journey timing (the contract's defaults) ---------------------------------------------
    abandoned_cart_first_delay: DurationMs = duration("1h")
    abandoned_cart_second_delay: DurationMs = duration("24h")
    browse_abandonment_delay: DurationMs = duration("2h")
    browse_abandonment_window: DurationMs = duration("7d")
    delivery_check_in_delay: DurationMs = duration("3d")
    review_request_delay: DurationMs = duration("14d")
    nps_survey_delay: DurationMs = duration("7d")
    nps_survey_window: DurationMs = duration("90d")
    cross_sell_delay: DurationMs = duration("21d")
    win_back_delay: DurationMs = duration("90d")
    referral_window: DurationMs = duration("180d")
    frequency_cap: DurationMs = duration("16h")
    frequency_cap_drop_after: DurationMs = duration("72h")
    quiet_hours_start: int = Field(default=21, ge=0, le=23)
    quiet_hours_end: int = Field(default=8, ge=0, le=23)
    default_time_zone: str = "Europe/Amsterdam"
    sunset_after: int = Field(default=5, ge=1)
    replay_guard: DurationMs = duration("24h")
    attribution_window: DurationMs = duration("5d")
    marketing_consent_default: bool = False
    seen_event_ids_per_customer: int = Field(default=64, ge=1)

    # --- Clock: 1 = real time; the simulator and demos run it faster ---------------------------
    clock_speed: float = Field(default=1.0, gt=0)

    @field_validator("default_time_zone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {zone!r}") from exc
        return zone

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
        ]

    def copartitioned_topics(self) -> list[str]:
        """Topics the journey agent reads together: they must have the same partition count."""
        return [*self.input_topics().values(), self.topic("repartition"), self.topic("ticks")]

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


def load_settings(**overrides: Any) -> Settings:
    """Read the environment (and ``.env``) once; keyword overrides win, for tests and the CLI."""
    return Settings(**overrides)
