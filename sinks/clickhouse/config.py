"""What the ClickHouse side needs to know, and nothing else: ``streams.settings.Settings``
provides it (structurally), and so would any other configuration object. ``sinks/`` imports
nothing from ``streams/``."""

from __future__ import annotations

from typing import Any, Protocol


class ClickHouseConfig(Protocol):
    # Where and who.
    @property
    def clickhouse_database(self) -> str: ...
    @property
    def clickhouse_username(self) -> str | None: ...
    @property
    def clickhouse_password(self) -> Any: ...  # a pydantic SecretStr, or None
    @property
    def clickhouse_query_username(self) -> str | None: ...
    @property
    def clickhouse_query_password(self) -> Any: ...
    def resolved_clickhouse_url(self) -> str: ...

    # The sink: batches, retries, the tables' deduplication window.
    @property
    def sink_batch_rows(self) -> int: ...
    @property
    def sink_flush_interval(self) -> int: ...  # ms
    @property
    def sink_dedup_window(self) -> int: ...
    @property
    def sink_retry_backoff(self) -> int: ...  # ms
    @property
    def sink_retry_backoff_max(self) -> int: ...  # ms

    # Analyst queries: their limits and concurrency.
    @property
    def query_max_execution_time(self) -> int: ...  # ms
    @property
    def query_max_result_rows(self) -> int: ...
    @property
    def query_max_result_bytes(self) -> int: ...
    @property
    def query_max_memory_usage(self) -> int: ...
    @property
    def query_max_threads(self) -> int: ...
    @property
    def query_concurrency(self) -> int: ...

    # The views' attribution window (``journey.attribution_window``, ms).
    @property
    def journey(self) -> Any: ...
