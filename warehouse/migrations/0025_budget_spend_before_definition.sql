-- Whether a budget's spend holds its period's spend from before the budget was defined (walk33): `pending` until
-- the owner took it from the warehouse (seed32), `counted`, or `unknown` for a state written before seed32 (a
-- budget defined mid-period then counted from its definition on; `tokenmeter budget rebuild --all` counts it).
-- The Budgets page and /api/v1/budgets show it; records written before have '' (not recorded).
ALTER TABLE budget_status
    ADD COLUMN IF NOT EXISTS spend_before_definition LowCardinality(String) DEFAULT '';
