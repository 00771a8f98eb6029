-- One row per accepted input event (the contract's `journey.events`).
-- ReplacingMergeTree on (customer_id, event_id): a producer that sends the same event_id twice,
-- or a replay of a topic, collapses to one row (read with FINAL for exact counts while parts
-- are unmerged). No PARTITION BY: every insert is then a single part, so an insert is atomic,
-- which the sink's restart watermark (max source_offset per source partition) relies on.
-- source_* columns say which Kafka message a row came from.
CREATE TABLE IF NOT EXISTS {db}.events
(
    event_id         String,
    event_type       LowCardinality(String),
    customer_id      String,
    occurred_at      DateTime64(3, 'UTC'),
    session_id       Nullable(String),
    cart_id          Nullable(String),
    order_id         Nullable(String),
    shipment_id      Nullable(String),
    product_id       Nullable(String),
    category         LowCardinality(Nullable(String)),
    amount_minor     Nullable(Int64),
    currency         LowCardinality(Nullable(String)),
    score            Nullable(Int16),
    ingested_at      DateTime64(3, 'UTC'),
    source_topic     LowCardinality(String),
    source_partition UInt32,
    source_offset    UInt64
)
ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY (customer_id, event_id)
SETTINGS non_replicated_deduplication_window = {dedup_window};
