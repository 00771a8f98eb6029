-- The funnel needs the page type of a view (product viewers), and delivery analytics the carrier.
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS page_type LowCardinality(Nullable(String)) AFTER event_type;
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS carrier LowCardinality(Nullable(String)) AFTER shipment_id;
