-- The analysts' views. Re-created on every `journey migrate` (CREATE OR REPLACE), so that a
-- changed setting such as the attribution window takes effect.
--
-- Correct under replays: every view reads the base tables deduplicated (FINAL: one row per
-- event_id, per trigger_id, per customer), so an event delivered twice, a replayed topic or an
-- import of history already seen never counts twice. Cancelled and refunded orders are neither
-- purchases nor revenue: `orders` says which orders count.

-- One row per order: what happened to it, and whether it counts as a purchase.
CREATE OR REPLACE VIEW {db}.orders AS
SELECT
    order_id,
    any(customer_id) AS customer_id,
    countIf(event_type = 'order.placed') > 0 AS placed,
    minIf(occurred_at, event_type = 'order.placed') AS placed_at,
    anyIf(amount_minor, event_type = 'order.placed') AS total_minor,
    anyIf(currency, event_type = 'order.placed') AS currency,
    anyIf(cart_id, event_type = 'order.placed') AS cart_id,
    countIf(event_type = 'order.cancelled') > 0 AS cancelled,
    toInt64(sumIf(ifNull(amount_minor, 0), event_type = 'order.refunded')) AS refunded_minor,
    placed AND NOT cancelled AND refunded_minor < ifNull(total_minor, 0) AS counts,
    if(counts, ifNull(total_minor, 0) - refunded_minor, 0) AS revenue_minor
FROM {db}.events FINAL
WHERE event_type IN ('order.placed', 'order.cancelled', 'order.refunded') AND order_id IS NOT NULL
GROUP BY order_id;

-- Distinct customers per funnel step and day.
CREATE OR REPLACE VIEW {db}.funnel_daily AS
SELECT
    toDate(occurred_at) AS day,
    uniqExactIf(customer_id, event_type = 'page_view') AS visitors,
    uniqExactIf(customer_id, event_type = 'page_view' AND page_type = 'PRODUCT') AS product_viewers,
    uniqExactIf(customer_id, event_type = 'cart.product_added') AS cart_adders,
    uniqExactIf(customer_id, event_type = 'cart.checkout_started') AS checkout_starters,
    uniqExactIf(
        customer_id,
        event_type = 'order.placed' AND order_id IN (SELECT order_id FROM {db}.orders WHERE counts)
    ) AS purchasers
FROM {db}.events FINAL
GROUP BY day
ORDER BY day;

-- Abandoned carts (a first reminder became due: it was left an hour), reminders sent, and carts
-- recovered: an order from the cart placed after one of its emitted reminders, within the
-- attribution window of that reminder. A cart counts once, on the day of its first recovering
-- order, with the revenue of all its recovering orders.
CREATE OR REPLACE VIEW {db}.cart_recovery_daily AS
WITH
    reminders AS (
        SELECT cart_id, status, due_at, decided_at
        FROM {db}.triggers FINAL
        WHERE trigger_type = 'ABANDONED_CART' AND cart_id IS NOT NULL
    ),
    recovering_orders AS (
        SELECT DISTINCT o.order_id AS order_id, o.cart_id AS cart_id, o.placed_at AS placed_at,
            o.revenue_minor AS revenue_minor
        FROM {db}.orders AS o
        INNER JOIN (SELECT cart_id, decided_at AS sent_at FROM reminders WHERE status = 'EMITTED')
            AS s ON o.cart_id = s.cart_id
        WHERE o.counts AND o.placed_at >= s.sent_at
          AND dateDiff('millisecond', s.sent_at, o.placed_at) <= {attribution_window_ms}
    )
SELECT
    day,
    toUInt64(sum(abandoned)) AS carts_abandoned,
    toUInt64(sum(reminded)) AS reminders_emitted,
    toUInt64(sum(recovered)) AS carts_recovered,
    toInt64(sum(revenue)) AS recovered_revenue_minor
FROM
(
    SELECT toDate(min(due_at)) AS day, 1 AS abandoned, 0 AS reminded, 0 AS recovered, 0 AS revenue
    FROM reminders WHERE status != 'CANCELLED' GROUP BY cart_id
    UNION ALL
    SELECT toDate(decided_at), 0, 1, 0, 0 FROM reminders WHERE status = 'EMITTED'
    UNION ALL
    SELECT toDate(min(placed_at)), 0, 0, 1, sum(revenue_minor)
    FROM recovering_orders GROUP BY cart_id
)
GROUP BY day
ORDER BY day;

-- Customers by month of their first order that counts; how many bought again, and how soon.
-- Medians are true medians (quantileExactInclusive: the mean of the two middle values of an
-- even count); medianExact would give the upper one of the two.
CREATE OR REPLACE VIEW {db}.repeat_purchase_cohorts AS
SELECT
    toStartOfMonth(first_at) AS cohort_month,
    count() AS customers,
    countIf(orders >= 2) AS repeat_customers,
    round(repeat_customers / customers, 4) AS repeat_rate,
    if(repeat_customers > 0,
       round(quantileExactInclusiveIf(0.5)(
           dateDiff('second', first_at, second_at) / 86400, orders >= 2), 1),
       NULL) AS median_days_to_second_order
FROM
(
    SELECT
        customer_id,
        count() AS orders,
        min(placed_at) AS first_at,
        arraySort(groupArray(placed_at))[2] AS second_at
    FROM {db}.orders
    WHERE counts
    GROUP BY customer_id
)
GROUP BY cohort_month
ORDER BY cohort_month;

-- Net Promoter Score per day: % promoters (9-10) minus % detractors (0-6).
CREATE OR REPLACE VIEW {db}.nps_daily AS
SELECT
    toDate(occurred_at) AS day,
    count() AS responses,
    countIf(score >= 9) AS promoters,
    countIf(score BETWEEN 7 AND 8) AS passives,
    countIf(score <= 6) AS detractors,
    round(100 * (promoters - detractors) / responses, 1) AS nps
FROM {db}.events FINAL
WHERE event_type = 'feedback.nps'
GROUP BY day
ORDER BY day;

-- Last-touch attribution: each order that counts goes to the customer's latest emitted
-- marketing trigger before it, if that is at most the attribution window older.
CREATE OR REPLACE VIEW {db}.trigger_attribution AS
WITH attributed AS (
    SELECT t.trigger_id AS trigger_id, t.trigger_type AS trigger_type, o.revenue_minor AS revenue
    FROM (SELECT customer_id, placed_at, revenue_minor FROM {db}.orders WHERE counts) AS o
    ASOF INNER JOIN
    (
        SELECT customer_id, decided_at, trigger_id, trigger_type
        FROM {db}.triggers FINAL
        WHERE status = 'EMITTED' AND category = 'MARKETING'
    ) AS t
    ON o.customer_id = t.customer_id AND o.placed_at >= t.decided_at
    WHERE dateDiff('millisecond', t.decided_at, o.placed_at) <= {attribution_window_ms}
)
SELECT
    e.trigger_type AS trigger_type,
    e.emitted AS emitted,
    ifNull(a.converted, 0) AS converted,
    round(converted / emitted, 4) AS conversion_rate,
    ifNull(a.revenue, 0) AS attributed_revenue_minor
FROM
(
    SELECT trigger_type, count() AS emitted FROM {db}.triggers FINAL WHERE status = 'EMITTED'
    GROUP BY trigger_type
) AS e
LEFT JOIN
(
    SELECT trigger_type, uniqExact(trigger_id) AS converted, toInt64(sum(revenue)) AS revenue
    FROM attributed GROUP BY trigger_type
) AS a ON e.trigger_type = a.trigger_type
ORDER BY trigger_type;

-- Shipments per day, and how long delivery took (from SHIPPED to DELIVERED).
CREATE OR REPLACE VIEW {db}.shipments AS
SELECT
    shipment_id,
    any(order_id) AS order_id,
    any(customer_id) AS customer_id,
    anyIf(carrier, carrier IS NOT NULL) AS carrier,
    minIf(occurred_at, event_type = 'shipment.shipped') AS shipped_at,
    countIf(event_type = 'shipment.shipped') > 0 AS shipped,
    minIf(occurred_at, event_type = 'shipment.delivered') AS delivered_at,
    countIf(event_type = 'shipment.delivered') > 0 AS delivered,
    countIf(event_type = 'shipment.delivery_failed') AS failed_attempts,
    if(shipped AND delivered, dateDiff('second', shipped_at, delivered_at) / 3600, NULL)
        AS hours_to_deliver
FROM {db}.events FINAL
WHERE event_type LIKE 'shipment.%' AND shipment_id IS NOT NULL
GROUP BY shipment_id;

-- The median is a true median, as in repeat_purchase_cohorts.
CREATE OR REPLACE VIEW {db}.delivery_daily AS
SELECT
    day,
    toUInt64(sum(kind = 'shipped')) AS shipped,
    toUInt64(sum(kind = 'delivered')) AS delivered,
    toUInt64(sum(kind = 'failed')) AS failed,
    round(quantileExactInclusiveIf(0.5)(hours, kind = 'delivered' AND hours IS NOT NULL), 1)
        AS median_hours_to_deliver
FROM
(
    SELECT toDate(shipped_at) AS day, 'shipped' AS kind, CAST(NULL, 'Nullable(Float64)') AS hours
    FROM {db}.shipments WHERE shipped
    UNION ALL
    SELECT toDate(delivered_at), 'delivered', hours_to_deliver FROM {db}.shipments WHERE delivered
    UNION ALL
    SELECT toDate(occurred_at), 'failed', NULL
    FROM {db}.events FINAL WHERE event_type = 'shipment.delivery_failed'
)
GROUP BY day
ORDER BY day;

-- Customers per journey stage, now.
CREATE OR REPLACE VIEW {db}.stage_counts AS
SELECT stage, count() AS customers
FROM {db}.customers FINAL
GROUP BY stage
ORDER BY indexOf(['AWARENESS', 'CONSIDERATION', 'PURCHASE', 'SERVICE', 'ADVOCACY'], stage);
