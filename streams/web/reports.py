"""The SQL analysts see, in one place: ``journey report``'s tables (``REPORT``) and the
dashboard's charts (``streams/web/server.py``). Each is a template naming the database ``{db}``
(``in_database``); the views they read are ``sinks/clickhouse/migrations/R_views.sql``.

``journey report`` runs its queries through ``query.run_query`` (the loader's ``/sql`` while one
serves this data path, else the data path itself), the dashboard on the loader's analyst session:
both read-only, both bounded by the ``JOURNEY_QUERY_*`` limits.
"""

from __future__ import annotations


def in_database(template: str, database: str) -> str:
    """A template of this module, reading ``database``."""
    return template.format(db=database)


# --- journey report: (title, query), printed in this order -------------------------------------
REPORT = (
    (
        "Funnel, last 14 days (distinct customers)",
        "SELECT * FROM {db}.funnel_daily ORDER BY day DESC LIMIT 14",
    ),
    (
        "Cart recovery, last 14 days",
        "SELECT * FROM {db}.cart_recovery_daily ORDER BY day DESC LIMIT 14",
    ),
    ("Triggers: last-touch attribution", "SELECT * FROM {db}.trigger_attribution"),
    (
        "Trigger decisions",
        "SELECT trigger_type, status, count() AS decisions FROM {db}.triggers FINAL "
        "GROUP BY trigger_type, status ORDER BY trigger_type, status",
    ),
    ("Repeat purchase by cohort", "SELECT * FROM {db}.repeat_purchase_cohorts"),
    ("NPS, last 14 days", "SELECT * FROM {db}.nps_daily ORDER BY day DESC LIMIT 14"),
    ("Deliveries, last 14 days", "SELECT * FROM {db}.delivery_daily ORDER BY day DESC LIMIT 14"),
    ("Customers by stage", "SELECT * FROM {db}.stage_counts"),
    ("Funnel over all the data (distinct customers)", "SELECT * FROM {db}.funnel_totals"),
    (
        "Engagement per trigger type",
        "SELECT trigger_type, emitted, delivered, opened, clicked, bounced, complained, "
        "unsubscribed, conversions, attributed_revenue_minor, open_rate, click_rate, "
        "unsubscribe_rate, conversion_rate FROM {db}.trigger_engagement",
    ),
    (
        "Retention and cumulative revenue per customer by cohort, first 12 months",
        "SELECT cohort_month, months_since_first AS month, cohort_customers AS customers, "
        "active_customers AS active, retention_rate, revenue_minor, "
        "cumulative_revenue_per_customer_minor AS ltv_minor "
        "FROM {db}.customer_value_cohorts WHERE months_since_first < 12",
    ),
    (
        "Lifetime value: historic and predicted",
        "SELECT count() AS buyers, round(avg(b.revenue_minor)) AS historic_ltv_minor, "
        "countIf(p.customer_id != '') AS predicted, "
        "round(avgIf(p.predicted_clv_minor, p.customer_id != '')) AS predicted_clv_1y_minor, "
        "round(avgIf(p.probability_alive, p.customer_id != ''), 3) AS avg_p_alive, "
        "round(sumIf(p.expected_orders_90d, p.customer_id != ''), 1) AS orders_next_90d "
        "FROM {db}.buyers AS b LEFT JOIN (SELECT * FROM {db}.customer_predictions FINAL) AS p "
        "ON b.customer_id = p.customer_id",
    ),
    (
        "Stage transitions, last 7 days",
        "SELECT from_stage, to_stage, sum(customers) AS transitions "
        "FROM {db}.stage_transitions_daily "
        "WHERE day > (SELECT max(day) FROM {db}.stage_transitions_daily) - 7 "
        "GROUP BY from_stage, to_stage ORDER BY transitions DESC",
    ),
)


# --- the dashboard, section by section ---------------------------------------------------------
# Live: events stored, triggers emitted, dead letters.
LIVE_TOTALS = (
    "SELECT (SELECT count() FROM {db}.events FINAL), "
    "(SELECT count() FROM {db}.triggers FINAL WHERE status = 'EMITTED'), "
    "(SELECT count() FROM {db}.deadletters FINAL)"
)

# Dead letters by reason.
DEAD_LETTERS_BY_REASON = (
    "SELECT reason_code, count() AS n FROM {db}.deadletters FINAL "
    "GROUP BY reason_code ORDER BY n DESC"
)

# Cart recovery: the last 21 days, oldest first.
CART_RECOVERY_BY_DAY = (
    "SELECT toString(day), carts_abandoned, reminders_emitted, carts_recovered "
    "FROM (SELECT * FROM {db}.cart_recovery_daily ORDER BY day DESC LIMIT 21) ORDER BY day"
)

# Repeat purchase by cohort.
REPEAT_PURCHASE_BY_COHORT = (
    "SELECT toString(cohort_month), customers, repeat_rate FROM {db}.repeat_purchase_cohorts"
)

# NPS trend: the last 30 days, oldest first.
NPS_BY_DAY = (
    "SELECT toString(day), nps, responses FROM "
    "(SELECT * FROM {db}.nps_daily ORDER BY day DESC LIMIT 30) ORDER BY day"
)

# Triggers by status over time: the last 21 days of decisions.
TRIGGERS_BY_DAY_AND_STATUS = (
    "SELECT toString(toDate(decided_at)) AS day, status, count() FROM {db}.triggers FINAL "
    "WHERE decided_at >= (SELECT max(decided_at) FROM {db}.triggers) - INTERVAL 21 DAY "
    "GROUP BY day, status ORDER BY day"
)

# Triggers per type, one column per status.
TRIGGERS_BY_TYPE_AND_STATUS = (
    "SELECT trigger_type, countIf(status = 'EMITTED'), countIf(status = 'SUPPRESSED'), "
    "countIf(status = 'EXPIRED'), countIf(status = 'CANCELLED') FROM {db}.triggers FINAL "
    "GROUP BY trigger_type ORDER BY trigger_type"
)

# Delivery time: the last 21 days with a delivery, oldest first.
DELIVERY_TIME_BY_DAY = (
    "SELECT toString(day), shipped, delivered, median_hours_to_deliver FROM "
    "(SELECT * FROM {db}.delivery_daily WHERE median_hours_to_deliver IS NOT NULL "
    "ORDER BY day DESC LIMIT 21) ORDER BY day"
)

# Funnel: distinct customers per step over the last 30 days of data.
FUNNEL_LAST_30_DAYS = (
    "SELECT uniqExactIf(customer_id, visited), uniqExactIf(customer_id, viewed_product), "
    "uniqExactIf(customer_id, added_to_cart), uniqExactIf(customer_id, started_checkout), "
    "uniqExactIf(customer_id, purchased), toString(min(day)), toString(max(day)) "
    "FROM {db}.funnel_steps "
    "WHERE day > (SELECT max(day) FROM {db}.funnel_steps) - 30"
)

# Engagement by trigger type.
ENGAGEMENT_BY_TRIGGER_TYPE = (
    "SELECT trigger_type, emitted, delivered, open_rate, click_rate, bounce_rate, "
    "unsubscribe_rate, conversion_rate, attributed_revenue_minor "
    "FROM {db}.trigger_engagement"
)

# Engagement per day: the last 21 days with something delivered.
ENGAGEMENT_BY_DAY = (
    "SELECT toString(day), sum(delivered), sum(opened), sum(clicked) "
    "FROM {db}.engagement_daily "
    "WHERE day > (SELECT max(day) FROM {db}.engagement_daily) - 21 "
    "GROUP BY day HAVING sum(delivered) > 0 ORDER BY day"
)

# Customer lifetime value: the last 12 cohorts, months 0 to 6.
VALUE_BY_COHORT_MONTH = (
    "SELECT toString(cohort_month), months_since_first, cohort_customers, retention_rate, "
    "cumulative_revenue_per_customer_minor FROM {db}.customer_value_cohorts "
    "WHERE cohort_month >= (SELECT max(cohort_month) FROM {db}.customer_value_cohorts) "
    "- INTERVAL 11 MONTH AND months_since_first <= 6"
)

# Customer lifetime value: the predictions (`journey predict`).
PREDICTED_VALUE = (
    "SELECT count(), avg(predicted_clv_minor), avg(probability_alive) "
    "FROM {db}.customer_predictions FINAL"
)

# Stage transitions over the last 7 days of data.
STAGE_TRANSITIONS_LAST_7_DAYS = (
    "SELECT if(from_stage = '', '(new)', from_stage), to_stage, sum(customers) AS n "
    "FROM {db}.stage_transitions_daily "
    "WHERE day > (SELECT max(day) FROM {db}.stage_transitions_daily) - 7 "
    "GROUP BY from_stage, to_stage ORDER BY n DESC LIMIT 12"
)
