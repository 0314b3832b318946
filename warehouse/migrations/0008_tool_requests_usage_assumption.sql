-- Server-side tool requests billed per request (their fees are cost_breakdown lines named after the kind, e.g.
-- 'web_search') and the assumption a collector made when a source format was ambiguous ('' when none).
-- Added at the end of the table: the loader inserts by column name.
ALTER TABLE priced_events ADD COLUMN IF NOT EXISTS tool_requests Map(String, UInt64);
ALTER TABLE priced_events ADD COLUMN IF NOT EXISTS usage_assumption String DEFAULT ''
