-- Every input the pipeline could not use, mirrored from the journey.deadletter topic so that
-- analysts and operators can query failures next to the data.
CREATE TABLE IF NOT EXISTS {db}.deadletters
(
    dead_letter_id   String,
    topic            LowCardinality(String),
    partition        UInt32,
    offset           UInt64,
    reason_code      LowCardinality(String),
    reason           String,
    record_type      LowCardinality(Nullable(String)),
    key              Nullable(String),
    value_size       UInt32,
    value_head       String,
    failed_at        DateTime64(3, 'UTC'),
    source_topic     LowCardinality(String),
    source_partition UInt32,
    source_offset    UInt64
)
ENGINE = ReplacingMergeTree(failed_at)
ORDER BY (topic, partition, offset)
SETTINGS non_replicated_deduplication_window = {dedup_window};
