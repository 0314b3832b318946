-- Reservation holds (issue 15), one row per step of a hold's life, loaded from tokenmeter.budget-hold-log:
-- `held` when admitted (amount = the worst case held), then `settled` (settled_amount = the real amount the
-- call's usage committed), `released` or `expired`. The holds themselves live on the broker (compacted topic
-- tokenmeter.budget-holds); this is their durable copy: after a broker loss, `tokenmeter budget rebuild` holds
-- again every hold admitted in the budget's current period whose usage never reached priced_events, so spend the
-- broker took is not admitted a second time. Redelivered rows are identical; readers take one row per
-- (reservation, budget, status). Amounts: USD, or tokens for token budgets.
CREATE TABLE IF NOT EXISTS budget_holds
(
    reservation_id String,
    budget String,
    request_id String,
    status LowCardinality(String),
    metric LowCardinality(String),
    amount Decimal(38, 12),
    settled_amount Nullable(Decimal(38, 12)),
    created_at DateTime64(3, 'UTC'),
    expires_at DateTime64(3, 'UTC'),
    at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(at)
PARTITION BY toYYYYMM(created_at)
ORDER BY (budget, reservation_id, status);
