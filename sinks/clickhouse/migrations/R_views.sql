-- The analysts' views. Re-created on every `journey migrate` (CREATE OR REPLACE), so that a
-- changed setting such as the attribution window takes effect.
--
-- Correct under replays: every view reads the base tables deduplicated (FINAL: one row per
-- event_id, per trigger_id, per customer), so an event delivered twice, a replayed topic or an
-- import of history already seen never counts twice. Cancelled and refunded orders are neither
-- purchases nor revenue: `orders` says which orders count.

-- One row per order: what happened to it, and whether it is a purchase. THE definition of a
-- purchase, shared by every view and by the journey model's customer snapshot (`customers`):
-- an order PLACED and not cancelled or fully refunded, whatever its amount. A free order (total
-- 0) is a purchase with revenue 0, until a refund of it arrives; fully refunded means refunds
-- were made and add up to at least the total. Partial refunds reduce revenue.
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
    countIf(event_type = 'order.refunded') > 0 AS refunded,
    toInt64(sumIf(ifNull(amount_minor, 0), event_type = 'order.refunded')) AS refunded_minor,
    refunded AND refunded_minor >= ifNull(total_minor, 0) AS fully_refunded,
    placed AND NOT cancelled AND NOT fully_refunded AS counts,
    if(counts, ifNull(total_minor, 0) - refunded_minor, 0) AS revenue_minor
FROM {db}.events FINAL
WHERE event_type IN ('order.placed', 'order.cancelled', 'order.refunded') AND order_id IS NOT NULL
GROUP BY order_id;
ALTER TABLE {db}.orders
    COMMENT COLUMN order_id 'The order',
    COMMENT COLUMN customer_id 'Who placed it',
    COMMENT COLUMN placed 'A PLACED event was received',
    COMMENT COLUMN placed_at 'When it was placed (the first PLACED)',
    COMMENT COLUMN total_minor 'Its total in minor units (0 for a free order)',
    COMMENT COLUMN currency 'ISO-4217 currency',
    COMMENT COLUMN cart_id 'The cart it was placed from, if any',
    COMMENT COLUMN cancelled 'A CANCELLED event was received',
    COMMENT COLUMN refunded 'At least one REFUNDED event was received',
    COMMENT COLUMN refunded_minor 'Sum of the refunds, in minor units',
    COMMENT COLUMN fully_refunded 'Refunded, and the refunds add up to at least the total',
    COMMENT COLUMN counts 'A purchase: placed, not cancelled, not fully refunded (whatever its amount)',
    COMMENT COLUMN revenue_minor 'Revenue: total less refunds if a purchase, else 0';

-- One row per customer with at least one purchase: what `customers` says of them (orders_count,
-- revenue_minor, first_order_at, last_order_at), from the orders. Historic lifetime value.
CREATE OR REPLACE VIEW {db}.buyers AS
SELECT
    customer_id,
    count() AS orders,
    toInt64(sum(revenue_minor)) AS revenue_minor,
    min(placed_at) AS first_order_at,
    if(orders >= 2, arraySort(groupArray(placed_at))[2], NULL) AS second_order_at,
    max(placed_at) AS last_order_at
FROM {db}.orders
WHERE counts
GROUP BY customer_id;
ALTER TABLE {db}.buyers
    COMMENT COLUMN customer_id 'The customer',
    COMMENT COLUMN orders 'Purchases (equals customers.orders_count)',
    COMMENT COLUMN revenue_minor 'Historic lifetime value: revenue of the purchases less refunds (equals customers.revenue_minor)',
    COMMENT COLUMN first_order_at 'First purchase (equals customers.first_order_at)',
    COMMENT COLUMN second_order_at 'Second purchase, if any',
    COMMENT COLUMN last_order_at 'Latest purchase (equals customers.last_order_at)';

-- Every purchase with its last touch: the customer's latest emitted MARKETING trigger before the
-- order, if that is at most the attribution window older. The one definition of a conversion,
-- used by trigger_attribution and by the engagement views.
CREATE OR REPLACE VIEW {db}.order_attribution AS
SELECT
    o.order_id AS order_id,
    o.customer_id AS customer_id,
    o.placed_at AS placed_at,
    o.revenue_minor AS revenue_minor,
    t.trigger_id != ''
        AND dateDiff('millisecond', t.decided_at, o.placed_at) <= {attribution_window_ms}
        AS attributed,
    if(attributed, t.trigger_id, NULL) AS trigger_id,
    if(attributed, t.trigger_type, NULL) AS trigger_type
FROM (SELECT order_id, customer_id, placed_at, revenue_minor FROM {db}.orders WHERE counts) AS o
ASOF LEFT JOIN
(
    SELECT customer_id, decided_at, trigger_id, trigger_type
    FROM {db}.triggers FINAL
    WHERE status = 'EMITTED' AND category = 'MARKETING'
) AS t
ON o.customer_id = t.customer_id AND o.placed_at >= t.decided_at;
ALTER TABLE {db}.order_attribution
    COMMENT COLUMN order_id 'A purchase',
    COMMENT COLUMN customer_id 'Who placed it',
    COMMENT COLUMN placed_at 'When',
    COMMENT COLUMN revenue_minor 'Its revenue (total less refunds)',
    COMMENT COLUMN attributed 'A marketing trigger was emitted to the customer at most the attribution window before it (last touch)',
    COMMENT COLUMN trigger_id 'That trigger (the latest one), if attributed',
    COMMENT COLUMN trigger_type 'Its type, if attributed';

-- One row per customer and day: which funnel steps they took that day. A purchase is one of
-- `orders` that counts, on the day it was placed. Distinct customers over a period come from
-- here (funnel_totals, the dashboard): summing funnel_daily over days counts a customer once
-- per day, not once.
CREATE OR REPLACE VIEW {db}.funnel_steps AS
SELECT
    day,
    customer_id,
    max(step = 'visit') AS visited,
    max(step = 'product') AS viewed_product,
    max(step = 'cart') AS added_to_cart,
    max(step = 'checkout') AS started_checkout,
    max(step = 'purchase') AS purchased
FROM
(
    SELECT
        toDate(occurred_at) AS day,
        customer_id,
        arrayJoin(multiIf(
            event_type = 'page_view' AND page_type = 'PRODUCT', ['visit', 'product'],
            event_type = 'page_view', ['visit'],
            event_type = 'cart.product_added', ['cart'],
            ['checkout'])) AS step
    FROM {db}.events FINAL
    WHERE event_type IN ('page_view', 'cart.product_added', 'cart.checkout_started')
    UNION ALL
    SELECT toDate(placed_at), customer_id, 'purchase' FROM {db}.orders WHERE counts
)
GROUP BY day, customer_id;
ALTER TABLE {db}.funnel_steps
    COMMENT COLUMN day 'UTC day',
    COMMENT COLUMN customer_id 'The customer',
    COMMENT COLUMN visited 'Viewed a page that day',
    COMMENT COLUMN viewed_product 'Viewed a product page that day',
    COMMENT COLUMN added_to_cart 'Added a product to a cart that day',
    COMMENT COLUMN started_checkout 'Started a checkout that day',
    COMMENT COLUMN purchased 'Placed a purchase (an order that counts) that day';

-- Distinct customers per funnel step and day.
CREATE OR REPLACE VIEW {db}.funnel_daily AS
SELECT
    day,
    countIf(visited) AS visitors,
    countIf(viewed_product) AS product_viewers,
    countIf(added_to_cart) AS cart_adders,
    countIf(started_checkout) AS checkout_starters,
    countIf(purchased) AS purchasers
FROM {db}.funnel_steps
GROUP BY day
ORDER BY day;
ALTER TABLE {db}.funnel_daily
    COMMENT COLUMN day 'UTC day',
    COMMENT COLUMN visitors 'Distinct customers who viewed a page that day',
    COMMENT COLUMN product_viewers 'Distinct customers who viewed a product page that day',
    COMMENT COLUMN cart_adders 'Distinct customers who added to a cart that day',
    COMMENT COLUMN checkout_starters 'Distinct customers who started a checkout that day',
    COMMENT COLUMN purchasers 'Distinct customers who placed a purchase that day';

-- The funnel over all the data: distinct customers who ever took each step (a customer who
-- bought on two days is one purchaser; purchasers equals the customers with orders_count > 0).
CREATE OR REPLACE VIEW {db}.funnel_totals AS
SELECT
    minOrNull(day) AS first_day,
    maxOrNull(day) AS last_day,
    uniqExactIf(customer_id, visited) AS visitors,
    uniqExactIf(customer_id, viewed_product) AS product_viewers,
    uniqExactIf(customer_id, added_to_cart) AS cart_adders,
    uniqExactIf(customer_id, started_checkout) AS checkout_starters,
    uniqExactIf(customer_id, purchased) AS purchasers
FROM {db}.funnel_steps;
ALTER TABLE {db}.funnel_totals
    COMMENT COLUMN first_day 'First day with funnel activity',
    COMMENT COLUMN last_day 'Last day with funnel activity',
    COMMENT COLUMN visitors 'Distinct customers who ever viewed a page',
    COMMENT COLUMN product_viewers 'Distinct customers who ever viewed a product page',
    COMMENT COLUMN cart_adders 'Distinct customers who ever added to a cart',
    COMMENT COLUMN checkout_starters 'Distinct customers who ever started a checkout',
    COMMENT COLUMN purchasers 'Distinct customers with at least one purchase';

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
ALTER TABLE {db}.cart_recovery_daily
    COMMENT COLUMN day 'UTC day',
    COMMENT COLUMN carts_abandoned 'Carts whose first reminder (not cancelled) became due that day',
    COMMENT COLUMN reminders_emitted 'ABANDONED_CART reminders sent that day',
    COMMENT COLUMN carts_recovered 'Carts recovered that day: their first order placed after one of their reminders, within the attribution window',
    COMMENT COLUMN recovered_revenue_minor 'Revenue of all recovering orders of those carts';

-- Customers by month of their first purchase; how many bought again, and how soon.
-- Medians are true medians (quantileExactInclusive: the mean of the two middle values of an
-- even count); medianExact would give the upper one of the two.
CREATE OR REPLACE VIEW {db}.repeat_purchase_cohorts AS
SELECT
    toStartOfMonth(first_order_at) AS cohort_month,
    count() AS customers,
    countIf(orders >= 2) AS repeat_customers,
    round(repeat_customers / customers, 4) AS repeat_rate,
    if(repeat_customers > 0,
       round(quantileExactInclusiveIf(0.5)(
           dateDiff('second', first_order_at, assumeNotNull(second_order_at)) / 86400,
           orders >= 2), 1),
       NULL) AS median_days_to_second_order
FROM {db}.buyers
GROUP BY cohort_month
ORDER BY cohort_month;
ALTER TABLE {db}.repeat_purchase_cohorts
    COMMENT COLUMN cohort_month 'Month (UTC) of the customers'' first purchase',
    COMMENT COLUMN customers 'Customers whose first purchase was in that month',
    COMMENT COLUMN repeat_customers 'Of those, customers with two purchases or more',
    COMMENT COLUMN repeat_rate 'repeat_customers / customers',
    COMMENT COLUMN median_days_to_second_order 'Median days from first to second purchase of the repeat customers';

-- Historic lifetime value and retention: per cohort (month of the first purchase) and month
-- since it (0 = the cohort month; calendar months), the cohort's customers who purchased in that
-- month, their revenue, and the revenue so far per cohort customer. Months in which nobody of
-- the cohort bought have no row.
CREATE OR REPLACE VIEW {db}.customer_value_cohorts AS
WITH cohort AS (SELECT customer_id, toStartOfMonth(first_order_at) AS cohort_month FROM {db}.buyers)
SELECT
    cohort_month,
    months_since_first,
    cohort_customers,
    active_customers,
    round(active_customers / cohort_customers, 4) AS retention_rate,
    orders,
    revenue_minor,
    toInt64(sum(revenue_minor) OVER (PARTITION BY cohort_month ORDER BY months_since_first
        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)) AS cumulative_revenue_minor,
    round(cumulative_revenue_minor / cohort_customers, 1) AS cumulative_revenue_per_customer_minor
FROM
(
    SELECT
        c.cohort_month AS cohort_month,
        toUInt32(dateDiff('month', c.cohort_month, toStartOfMonth(o.placed_at))) AS months_since_first,
        uniqExact(o.customer_id) AS active_customers,
        count() AS orders,
        toInt64(sum(o.revenue_minor)) AS revenue_minor
    FROM {db}.orders AS o
    INNER JOIN cohort AS c ON o.customer_id = c.customer_id
    WHERE o.counts
    GROUP BY cohort_month, months_since_first
) AS a
INNER JOIN (SELECT cohort_month, count() AS cohort_customers FROM cohort GROUP BY cohort_month) AS s
    USING cohort_month
ORDER BY cohort_month, months_since_first;
ALTER TABLE {db}.customer_value_cohorts
    COMMENT COLUMN cohort_month 'Month (UTC) of the customers'' first purchase',
    COMMENT COLUMN months_since_first 'Calendar months since the cohort month (0 = the cohort month)',
    COMMENT COLUMN cohort_customers 'Customers in the cohort',
    COMMENT COLUMN active_customers 'Cohort customers who purchased in that month',
    COMMENT COLUMN retention_rate 'active_customers / cohort_customers',
    COMMENT COLUMN orders 'Purchases of the cohort in that month',
    COMMENT COLUMN revenue_minor 'Their revenue (less refunds), minor units',
    COMMENT COLUMN cumulative_revenue_minor 'Revenue of the cohort from its first month up to this one',
    COMMENT COLUMN cumulative_revenue_per_customer_minor 'Historic lifetime value so far: cumulative revenue per cohort customer';

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
ALTER TABLE {db}.nps_daily
    COMMENT COLUMN day 'UTC day',
    COMMENT COLUMN responses 'NPS answers that day',
    COMMENT COLUMN promoters 'Answers 9-10',
    COMMENT COLUMN passives 'Answers 7-8',
    COMMENT COLUMN detractors 'Answers 0-6',
    COMMENT COLUMN nps 'Net Promoter Score: % promoters - % detractors';

-- Last-touch attribution per trigger type (order_attribution says which order goes to which
-- trigger).
CREATE OR REPLACE VIEW {db}.trigger_attribution AS
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
    SELECT trigger_type, uniqExact(trigger_id) AS converted, toInt64(sum(revenue_minor)) AS revenue
    FROM {db}.order_attribution WHERE attributed GROUP BY trigger_type
) AS a ON e.trigger_type = a.trigger_type
ORDER BY trigger_type;
ALTER TABLE {db}.trigger_attribution
    COMMENT COLUMN trigger_type 'Trigger type',
    COMMENT COLUMN emitted 'Triggers of the type emitted (sent)',
    COMMENT COLUMN converted 'Of those, triggers with at least one purchase attributed (last touch within the attribution window)',
    COMMENT COLUMN conversion_rate 'converted / emitted',
    COMMENT COLUMN attributed_revenue_minor 'Revenue of the purchases attributed to them';

-- One row per emitted trigger (message): what the sender reported about it (engagement events
-- carrying its trigger_id; an action reported several times counts once) and the purchases
-- attributed to it (order_attribution).
CREATE OR REPLACE VIEW {db}.message_engagement AS
SELECT
    t.trigger_id AS trigger_id,
    t.trigger_type AS trigger_type,
    t.category AS category,
    t.customer_id AS customer_id,
    t.decided_at AS emitted_at,
    e.delivered AS was_delivered,
    e.opened AS was_opened,
    e.clicked AS was_clicked,
    e.bounced AS was_bounced,
    e.complained AS was_complained,
    e.unsubscribed AS was_unsubscribed,
    c.orders > 0 AS converted,
    c.orders AS attributed_orders,
    c.revenue AS attributed_revenue_minor
FROM (SELECT * FROM {db}.triggers FINAL WHERE status = 'EMITTED') AS t
LEFT JOIN
(
    SELECT
        customer_id,
        assumeNotNull(trigger_id) AS trigger_id,
        max(event_type = 'engagement.delivered') AS delivered,
        max(event_type = 'engagement.opened') AS opened,
        max(event_type = 'engagement.clicked') AS clicked,
        max(event_type = 'engagement.bounced') AS bounced,
        max(event_type = 'engagement.complained') AS complained,
        max(event_type = 'engagement.unsubscribed') AS unsubscribed
    FROM {db}.events FINAL
    WHERE startsWith(event_type, 'engagement.') AND trigger_id IS NOT NULL
    GROUP BY customer_id, trigger_id
) AS e ON t.customer_id = e.customer_id AND t.trigger_id = e.trigger_id
LEFT JOIN
(
    SELECT customer_id, assumeNotNull(trigger_id) AS trigger_id, count() AS orders,
        toInt64(sum(revenue_minor)) AS revenue
    FROM {db}.order_attribution
    WHERE attributed
    GROUP BY customer_id, trigger_id
) AS c ON t.customer_id = c.customer_id AND t.trigger_id = c.trigger_id;
ALTER TABLE {db}.message_engagement
    COMMENT COLUMN trigger_id 'The emitted trigger (message)',
    COMMENT COLUMN trigger_type 'Its type',
    COMMENT COLUMN category 'TRANSACTIONAL or MARKETING',
    COMMENT COLUMN customer_id 'Its customer',
    COMMENT COLUMN emitted_at 'When it was sent',
    COMMENT COLUMN was_delivered 'The sender reported DELIVERED',
    COMMENT COLUMN was_opened 'The sender reported OPENED',
    COMMENT COLUMN was_clicked 'The sender reported CLICKED',
    COMMENT COLUMN was_bounced 'The sender reported BOUNCED',
    COMMENT COLUMN was_complained 'The sender reported COMPLAINED (marked as spam)',
    COMMENT COLUMN was_unsubscribed 'The customer unsubscribed from it',
    COMMENT COLUMN converted 'At least one purchase is attributed to it (last touch within the attribution window; marketing only)',
    COMMENT COLUMN attributed_orders 'Purchases attributed to it',
    COMMENT COLUMN attributed_revenue_minor 'Their revenue';

-- Engagement per trigger type and UTC day of sending. Delivered-based rates (opened, clicked,
-- complained, unsubscribed per delivered message) are NULL when nothing was reported delivered.
CREATE OR REPLACE VIEW {db}.engagement_daily AS
SELECT
    toDate(emitted_at) AS day,
    trigger_type,
    count() AS emitted,
    countIf(was_delivered) AS delivered,
    countIf(was_opened) AS opened,
    countIf(was_clicked) AS clicked,
    countIf(was_bounced) AS bounced,
    countIf(was_complained) AS complained,
    countIf(was_unsubscribed) AS unsubscribed,
    countIf(converted) AS conversions,
    toInt64(sum(attributed_revenue_minor)) AS attributed_revenue_minor,
    round(delivered / emitted, 4) AS delivery_rate,
    if(delivered > 0, round(opened / delivered, 4), NULL) AS open_rate,
    if(delivered > 0, round(clicked / delivered, 4), NULL) AS click_rate,
    round(bounced / emitted, 4) AS bounce_rate,
    if(delivered > 0, round(complained / delivered, 4), NULL) AS complaint_rate,
    if(delivered > 0, round(unsubscribed / delivered, 4), NULL) AS unsubscribe_rate,
    round(conversions / emitted, 4) AS conversion_rate
FROM {db}.message_engagement
GROUP BY day, trigger_type
ORDER BY day, trigger_type;

-- The same per trigger type over all the data.
CREATE OR REPLACE VIEW {db}.trigger_engagement AS
SELECT
    trigger_type,
    count() AS emitted,
    countIf(was_delivered) AS delivered,
    countIf(was_opened) AS opened,
    countIf(was_clicked) AS clicked,
    countIf(was_bounced) AS bounced,
    countIf(was_complained) AS complained,
    countIf(was_unsubscribed) AS unsubscribed,
    countIf(converted) AS conversions,
    toInt64(sum(attributed_revenue_minor)) AS attributed_revenue_minor,
    round(delivered / emitted, 4) AS delivery_rate,
    if(delivered > 0, round(opened / delivered, 4), NULL) AS open_rate,
    if(delivered > 0, round(clicked / delivered, 4), NULL) AS click_rate,
    round(bounced / emitted, 4) AS bounce_rate,
    if(delivered > 0, round(complained / delivered, 4), NULL) AS complaint_rate,
    if(delivered > 0, round(unsubscribed / delivered, 4), NULL) AS unsubscribe_rate,
    round(conversions / emitted, 4) AS conversion_rate
FROM {db}.message_engagement
GROUP BY trigger_type
ORDER BY trigger_type;
ALTER TABLE {db}.engagement_daily
    COMMENT COLUMN day 'UTC day the messages were sent',
    COMMENT COLUMN trigger_type 'Trigger type',
    COMMENT COLUMN emitted 'Triggers (messages) sent',
    COMMENT COLUMN delivered 'Of those, reported DELIVERED',
    COMMENT COLUMN opened 'Reported OPENED (once per message)',
    COMMENT COLUMN clicked 'Reported CLICKED (once per message)',
    COMMENT COLUMN bounced 'Reported BOUNCED',
    COMMENT COLUMN complained 'Reported COMPLAINED',
    COMMENT COLUMN unsubscribed 'Reported UNSUBSCRIBED',
    COMMENT COLUMN conversions 'Messages with at least one purchase attributed (last touch within the attribution window)',
    COMMENT COLUMN attributed_revenue_minor 'Revenue of the purchases attributed to them',
    COMMENT COLUMN delivery_rate 'delivered / emitted',
    COMMENT COLUMN open_rate 'opened / delivered',
    COMMENT COLUMN click_rate 'clicked / delivered',
    COMMENT COLUMN bounce_rate 'bounced / emitted',
    COMMENT COLUMN complaint_rate 'complained / delivered',
    COMMENT COLUMN unsubscribe_rate 'unsubscribed / delivered',
    COMMENT COLUMN conversion_rate 'conversions / emitted';
ALTER TABLE {db}.trigger_engagement
    COMMENT COLUMN trigger_type 'Trigger type',
    COMMENT COLUMN emitted 'Triggers (messages) sent',
    COMMENT COLUMN delivered 'Of those, reported DELIVERED',
    COMMENT COLUMN opened 'Reported OPENED (once per message)',
    COMMENT COLUMN clicked 'Reported CLICKED (once per message)',
    COMMENT COLUMN bounced 'Reported BOUNCED',
    COMMENT COLUMN complained 'Reported COMPLAINED',
    COMMENT COLUMN unsubscribed 'Reported UNSUBSCRIBED',
    COMMENT COLUMN conversions 'Messages with at least one purchase attributed (last touch within the attribution window)',
    COMMENT COLUMN attributed_revenue_minor 'Revenue of the purchases attributed to them',
    COMMENT COLUMN delivery_rate 'delivered / emitted',
    COMMENT COLUMN open_rate 'opened / delivered',
    COMMENT COLUMN click_rate 'clicked / delivered',
    COMMENT COLUMN bounce_rate 'bounced / emitted',
    COMMENT COLUMN complaint_rate 'complained / delivered',
    COMMENT COLUMN unsubscribe_rate 'unsubscribed / delivered',
    COMMENT COLUMN conversion_rate 'conversions / emitted';

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
ALTER TABLE {db}.shipments
    COMMENT COLUMN shipment_id 'The shipment',
    COMMENT COLUMN order_id 'Its order',
    COMMENT COLUMN customer_id 'Its customer',
    COMMENT COLUMN carrier 'The carrier',
    COMMENT COLUMN shipped_at 'First SHIPPED',
    COMMENT COLUMN shipped 'A SHIPPED event was received',
    COMMENT COLUMN delivered_at 'First DELIVERED',
    COMMENT COLUMN delivered 'A DELIVERED event was received',
    COMMENT COLUMN failed_attempts 'DELIVERY_FAILED events',
    COMMENT COLUMN hours_to_deliver 'Hours from SHIPPED to DELIVERED';

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
ALTER TABLE {db}.delivery_daily
    COMMENT COLUMN day 'UTC day',
    COMMENT COLUMN shipped 'Shipments first SHIPPED that day',
    COMMENT COLUMN delivered 'Shipments first DELIVERED that day',
    COMMENT COLUMN failed 'Delivery attempts that failed that day',
    COMMENT COLUMN median_hours_to_deliver 'Median hours from SHIPPED to DELIVERED of the shipments delivered that day';

-- Customers per journey stage, now.
CREATE OR REPLACE VIEW {db}.stage_counts AS
SELECT stage, count() AS customers
FROM {db}.customers FINAL
GROUP BY stage
ORDER BY indexOf(['AWARENESS', 'CONSIDERATION', 'PURCHASE', 'SERVICE', 'ADVOCACY'], stage);
ALTER TABLE {db}.stage_counts
    COMMENT COLUMN stage 'Journey stage',
    COMMENT COLUMN customers 'Customers in that stage now';

-- Stage transitions per day: consecutive snapshots of a customer (customer_stages) whose stages
-- differ. from_stage is empty for a customer's first snapshot (they entered the journey). Days
-- are of the pipeline's clock (when the snapshot was written). For every stage, transitions into
-- it less transitions out of it equals stage_counts.
CREATE OR REPLACE VIEW {db}.stage_transitions_daily AS
SELECT
    toDate(at) AS day,
    from_stage,
    to_stage,
    count() AS customers
FROM
(
    SELECT
        customer_id,
        at,
        stage AS to_stage,
        lagInFrame(stage, 1, '') OVER (PARTITION BY customer_id ORDER BY at
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS from_stage
    FROM {db}.customer_stages FINAL
)
WHERE from_stage != to_stage
GROUP BY day, from_stage, to_stage
ORDER BY day, from_stage, to_stage;
ALTER TABLE {db}.stage_transitions_daily
    COMMENT COLUMN day 'UTC day (pipeline clock) of the transition',
    COMMENT COLUMN from_stage 'Stage before (empty: the customer entered the journey)',
    COMMENT COLUMN to_stage 'Stage after',
    COMMENT COLUMN customers 'Transitions that day (a customer who moves twice the same way counts twice)';
