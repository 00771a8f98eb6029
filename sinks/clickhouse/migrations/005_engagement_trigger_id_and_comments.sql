-- An engagement event (delivered, opened, clicked, ...) names the message it is about by its
-- trigger_id: stored, every touchpoint can be measured per message and per trigger type. It is
-- a column of events, so an engagement reported twice still collapses to one row (FINAL).
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS trigger_id Nullable(String) AFTER score;

-- What every column means, for analysts and BI tools (system.columns.comment).
ALTER TABLE {db}.events
    COMMENT COLUMN event_id 'The producer''s unique id of the event; a repeated id is one event (read with FINAL)',
    COMMENT COLUMN event_type 'What happened: page_view, cart.product_added, order.placed, order.refunded, shipment.delivered, feedback.nps, engagement.opened, customer.updated, ...',
    COMMENT COLUMN page_type 'Page views: HOME, CATEGORY, PRODUCT, SEARCH, CART, CHECKOUT or OTHER',
    COMMENT COLUMN customer_id 'Stable id of the person (customer id or the shop''s first-party visitor id)',
    COMMENT COLUMN occurred_at 'When it happened at the shop (UTC), not when it was published',
    COMMENT COLUMN session_id 'Page views: the browsing session',
    COMMENT COLUMN cart_id 'Cart events, and orders placed from a cart',
    COMMENT COLUMN order_id 'Order, shipment and feedback events: the order',
    COMMENT COLUMN shipment_id 'Shipment events: the shipment',
    COMMENT COLUMN carrier 'Shipment events: the carrier',
    COMMENT COLUMN product_id 'Page views, cart changes and reviews: the product',
    COMMENT COLUMN category 'The product''s category, when the producer sent it',
    COMMENT COLUMN amount_minor 'Money in minor units (cents): order total for PLACED/CANCELLED, the amount refunded for REFUNDED, unit price x quantity for cart changes',
    COMMENT COLUMN currency 'ISO-4217 currency of amount_minor',
    COMMENT COLUMN score 'Feedback: NPS 0-10 or review stars 1-5',
    COMMENT COLUMN trigger_id 'Engagement events: the trigger (message) the sender reports about, when it said',
    COMMENT COLUMN ingested_at 'When the pipeline processed the event (its clock)',
    COMMENT COLUMN source_topic 'Lineage: the Kafka topic the row came from',
    COMMENT COLUMN source_partition 'Lineage: the Kafka partition the row came from',
    COMMENT COLUMN source_offset 'Lineage: the Kafka offset the row came from';

ALTER TABLE {db}.deadletters
    COMMENT COLUMN dead_letter_id 'Unique id of the dead letter',
    COMMENT COLUMN topic 'The topic of the input that could not be used',
    COMMENT COLUMN partition 'Its partition',
    COMMENT COLUMN offset 'Its offset',
    COMMENT COLUMN reason_code 'Why, as a code: bad_header, bad_avro, unknown_fingerprint, wrong_record, bad_json, validation, bad_key, too_large, empty',
    COMMENT COLUMN reason 'Why, readable',
    COMMENT COLUMN record_type 'The record the input claimed to be, when known',
    COMMENT COLUMN key 'The original Kafka key (UTF-8, invalid bytes escaped)',
    COMMENT COLUMN value_size 'Size of the original value in bytes',
    COMMENT COLUMN value_head 'The first 256 bytes of the original value (escaped); the whole value is on the dead-letter topic',
    COMMENT COLUMN failed_at 'When the pipeline rejected it',
    COMMENT COLUMN source_topic 'Lineage: the Kafka topic the row came from (the dead-letter topic)',
    COMMENT COLUMN source_partition 'Lineage: the Kafka partition the row came from',
    COMMENT COLUMN source_offset 'Lineage: the Kafka offset the row came from';

ALTER TABLE {db}.triggers
    COMMENT COLUMN trigger_id 'Deterministic id of the trigger (message): the same history gives the same id',
    COMMENT COLUMN trigger_type 'ORDER_CONFIRMATION, ABANDONED_CART, WIN_BACK, ... (the contract''s trigger types)',
    COMMENT COLUMN category 'TRANSACTIONAL or MARKETING (marketing obeys consent, caps, quiet hours, sunset)',
    COMMENT COLUMN customer_id 'The customer it is for',
    COMMENT COLUMN status 'EMITTED (sent to the email sender), SUPPRESSED, EXPIRED or CANCELLED',
    COMMENT COLUMN reason 'Why it was not emitted (empty when EMITTED): consent, frequency_cap, unengaged, order_cancelled, ...',
    COMMENT COLUMN due_at 'When it was meant to go out',
    COMMENT COLUMN decided_at 'When the pipeline decided (for EMITTED: when it was sent)',
    COMMENT COLUMN order_id 'The order it is about, if any',
    COMMENT COLUMN cart_id 'The cart it is about, if any',
    COMMENT COLUMN shipment_id 'The shipment it is about, if any',
    COMMENT COLUMN stage 'The customer''s journey stage when it was decided',
    COMMENT COLUMN source_event_id 'The event that caused it',
    COMMENT COLUMN attributes 'What the message template needs (tracking link, cart lines, first_order, ...)',
    COMMENT COLUMN source_topic 'Lineage: the Kafka topic of the message being handled when decided',
    COMMENT COLUMN source_partition 'Lineage: its partition',
    COMMENT COLUMN source_offset 'Lineage: its offset';

ALTER TABLE {db}.customers
    COMMENT COLUMN customer_id 'The customer',
    COMMENT COLUMN stage 'Journey stage now: AWARENESS, CONSIDERATION, PURCHASE, SERVICE, ADVOCACY',
    COMMENT COLUMN segment 'PROSPECT (no purchase), NEW (one), REPEAT (two or more), LAPSED (no purchase for the win-back period)',
    COMMENT COLUMN first_seen_at 'The customer''s first event',
    COMMENT COLUMN first_order_at 'When the first purchase was placed (a purchase: placed, not cancelled, not fully refunded, whatever its amount)',
    COMMENT COLUMN last_order_at 'When the latest purchase was placed',
    COMMENT COLUMN orders_count 'Purchases (same definition as the view buyers)',
    COMMENT COLUMN revenue_minor 'Revenue of the purchases less partial refunds, in minor units',
    COMMENT COLUMN last_nps 'The latest NPS answer (0-10)',
    COMMENT COLUMN marketing_consent 'May receive marketing now (consent, and no bounce or complaint)',
    COMMENT COLUMN time_zone 'IANA time zone, when known',
    COMMENT COLUMN updated_at 'When this snapshot was written (pipeline clock); the newest row per customer is the state',
    COMMENT COLUMN source_topic 'Lineage: the Kafka topic of the message that produced this snapshot',
    COMMENT COLUMN source_partition 'Lineage: its partition',
    COMMENT COLUMN source_offset 'Lineage: its offset';

ALTER TABLE {db}.schema_migrations
    COMMENT COLUMN version 'Number of the applied migration file (NNN_name.sql)',
    COMMENT COLUMN name 'Its name',
    COMMENT COLUMN checksum 'Checksum of the file as applied; an edited applied file stops the runner',
    COMMENT COLUMN applied_at 'When it was applied';
