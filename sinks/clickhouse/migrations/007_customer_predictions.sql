-- Predicted lifetime value per customer (BG/NBD + Gamma-Gamma, streams/clv.py), written by
-- `journey predict` and by the worker's scheduled fit. One row per customer: a refit replaces
-- the row (ReplacingMergeTree by fitted_at; read with FINAL).
CREATE TABLE IF NOT EXISTS {db}.customer_predictions
(
    customer_id                String COMMENT 'The customer (one with at least one purchase)',
    fitted_at                  DateTime64(3, 'UTC') COMMENT 'When the models were fitted (prediction_fits)',
    orders                     UInt32 COMMENT 'Purchases observed',
    probability_alive          Float64 COMMENT 'BG/NBD: probability that the customer still buys (1 - churn risk)',
    expected_orders_90d        Float64 COMMENT 'BG/NBD: expected purchases in the next 90 days',
    expected_order_value_minor Float64 COMMENT 'Gamma-Gamma: expected value of a future order, minor units',
    predicted_clv_minor        Float64 COMMENT 'Expected revenue in the next 365 days (expected orders x expected order value, undiscounted), minor units',
    expected_next_order_at     DateTime64(3, 'UTC') COMMENT 'If still a customer: the median time of the next purchase'
)
ENGINE = ReplacingMergeTree(fitted_at)
ORDER BY customer_id
SETTINGS non_replicated_deduplication_window = {dedup_window};

-- Every fit, with its parameters, so that a prediction can be traced to the model behind it.
CREATE TABLE IF NOT EXISTS {db}.prediction_fits
(
    fitted_at      DateTime64(3, 'UTC') COMMENT 'When the models were fitted',
    model          LowCardinality(String) COMMENT 'bg_nbd or gamma_gamma',
    parameters     Map(String, Float64) COMMENT 'Fitted parameters: r, alpha, a, b (BG/NBD, time in days); p, q, gamma (Gamma-Gamma, minor units)',
    log_likelihood Float64 COMMENT 'Log-likelihood at the fitted parameters',
    customers      UInt32 COMMENT 'Customers the model was fitted on'
)
ENGINE = MergeTree
ORDER BY (fitted_at, model);
