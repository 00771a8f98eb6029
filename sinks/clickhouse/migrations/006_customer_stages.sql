-- The journey stage of every customer snapshot, kept: `customers` keeps only the latest
-- snapshot (ReplacingMergeTree merges the older ones away), so stage transitions over time need
-- their own history. Filled by a materialized view on every insert into `customers`, so no
-- writer changes; a snapshot inserted twice collapses on (customer_id, at). A snapshot is written
-- once per sink batch, so two stage changes inside one batch show as one transition.
CREATE TABLE IF NOT EXISTS {db}.customer_stages
(
    customer_id String COMMENT 'The customer',
    stage       LowCardinality(String) COMMENT 'The journey stage in this snapshot',
    at          DateTime64(3, 'UTC') COMMENT 'When the snapshot was written (customers.updated_at, pipeline clock)'
)
ENGINE = ReplacingMergeTree
ORDER BY (customer_id, at)
SETTINGS non_replicated_deduplication_window = {dedup_window};

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.customer_stages_mv TO {db}.customer_stages
(
    customer_id String COMMENT 'The customer',
    stage       LowCardinality(String) COMMENT 'The journey stage in this snapshot',
    at          DateTime64(3, 'UTC') COMMENT 'When the snapshot was written'
)
AS SELECT customer_id, stage, updated_at AS at FROM {db}.customers;

-- Snapshots written before this migration: their latest stage, as the start of the history.
INSERT INTO {db}.customer_stages (customer_id, stage, at)
SELECT customer_id, stage, updated_at FROM {db}.customers FINAL;
