-- Every trigger decision (the contract's `journey.triggers`): EMITTED, SUPPRESSED, EXPIRED or
-- CANCELLED with its reason. trigger_id is deterministic, and a trigger is decided once, so a
-- decision re-made after a crash collapses into the same row (read with FINAL).
CREATE TABLE IF NOT EXISTS {db}.triggers
(
    trigger_id       String,
    trigger_type     LowCardinality(String),
    category         LowCardinality(String),
    customer_id      String,
    status           LowCardinality(String),
    reason           LowCardinality(String),
    due_at           DateTime64(3, 'UTC'),
    decided_at       DateTime64(3, 'UTC'),
    order_id         Nullable(String),
    cart_id          Nullable(String),
    shipment_id      Nullable(String),
    stage            LowCardinality(String),
    source_event_id  String,
    attributes       Map(String, String),
    source_topic     LowCardinality(String),
    source_partition UInt32,
    source_offset    UInt64
)
ENGINE = ReplacingMergeTree(decided_at)
ORDER BY (customer_id, trigger_id)
SETTINGS non_replicated_deduplication_window = {dedup_window};

-- The latest snapshot of every customer's journey (read with FINAL or argMax by updated_at).
CREATE TABLE IF NOT EXISTS {db}.customers
(
    customer_id       String,
    stage             LowCardinality(String),
    segment           LowCardinality(String),
    first_seen_at     DateTime64(3, 'UTC'),
    first_order_at    Nullable(DateTime64(3, 'UTC')),
    last_order_at     Nullable(DateTime64(3, 'UTC')),
    orders_count      UInt32,
    revenue_minor     Int64,
    last_nps          Nullable(Int8),
    marketing_consent Bool,
    time_zone         Nullable(String),
    updated_at        DateTime64(3, 'UTC'),
    source_topic      LowCardinality(String),
    source_partition  UInt32,
    source_offset     UInt64
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY customer_id
SETTINGS non_replicated_deduplication_window = {dedup_window};
