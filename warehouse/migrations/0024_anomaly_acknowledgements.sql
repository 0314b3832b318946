-- The newest acknowledgement per anomaly. anomaly_acks keeps one row per anomaly id (its newest record of any action),
-- so a mute or unmute written after an ack replaced it: the Anomalies page read "open" for an anomaly someone had
-- acknowledged and nobody had taken back (anom32: ack, mute, unmute from the command line). This table keeps the acks.
CREATE TABLE IF NOT EXISTS anomaly_acknowledgements
(
    anomaly_id String,
    by String,
    note String,
    at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(at)
ORDER BY anomaly_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS anomaly_acknowledgements_mv TO anomaly_acknowledgements AS
SELECT anomaly_id, by, note, at
FROM anomaly_acks
WHERE action = 'ack';

-- What the acks table still holds from before (an ack followed by a mute or unmute of its anomaly is lost there).
INSERT INTO anomaly_acknowledgements (anomaly_id, by, note, at)
SELECT anomaly_id, by, note, at
FROM anomaly_acks FINAL
WHERE action = 'ack';
