-- Customers erased (a tombstone on journey.customers), so that the loader never stores a fact
-- about them that it reads after the erasure (facts of one customer come on several topics, so
-- an event published before the erasure can be read after it). Holds ids only.
CREATE TABLE IF NOT EXISTS {db}.erasures
(
    customer_id      String COMMENT 'The erased customer',
    erased_at        DateTime64(3, 'UTC') COMMENT 'When the loader read the erasure (wall clock)',
    source_topic     LowCardinality(String) COMMENT 'Where the tombstone was read: topic',
    source_partition UInt32 COMMENT 'its partition',
    source_offset    UInt64 COMMENT 'its offset'
)
ENGINE = ReplacingMergeTree
ORDER BY customer_id
SETTINGS non_replicated_deduplication_window = {dedup_window};
