-- An anomaly about a model with no price (a new_model whose calls cost nothing because none could be priced) says
-- so: `unpriced` is true, and the Anomalies page reads "unpriced (cost unknown)" instead of "$0.00/hour". Records
-- written before have no such field: false, read as before. ADD COLUMN IF NOT EXISTS re-applies safely.
ALTER TABLE anomalies
    ADD COLUMN IF NOT EXISTS unpriced Bool DEFAULT false;
