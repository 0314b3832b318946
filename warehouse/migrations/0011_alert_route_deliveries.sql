-- Delivery states per (alert, route id). `alert_deliveries` is keyed by (alert_id, route kind), so two routes of
-- one kind (two webhooks) folded into one row on merge and the budget rebuild could not tell whether both went
-- out: it re-queued such alerts on every start of the stack. Delivery records now carry `route_id` (the kind, or
-- kind:hash when a kind appears twice, as in the dispatcher's `<alert id>|<route_id>` key) and the loader writes
-- them here; a view copies each row into `alert_deliveries` (unchanged, for the displays that read it).
-- Older rows are copied in first with route_id = route (one route per kind), then the view is created.
CREATE TABLE IF NOT EXISTS alert_route_deliveries
(
    alert_id String,
    route_id String,
    route LowCardinality(String),
    target String,
    status LowCardinality(String),
    attempts UInt32,
    last_error String,
    http_status UInt16,
    at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(at)
ORDER BY (alert_id, route_id);

INSERT INTO alert_route_deliveries (alert_id, route_id, route, target, status, attempts, last_error, http_status, at)
SELECT alert_id, toString(route), route, target, status, attempts, last_error, http_status, at FROM alert_deliveries;

CREATE MATERIALIZED VIEW IF NOT EXISTS alert_deliveries_mv TO alert_deliveries AS
SELECT alert_id, route, target, status, attempts, last_error, http_status, at FROM alert_route_deliveries;
