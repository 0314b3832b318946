-- Reservations (issue 15): each budget's enforcement record carries what open reservations hold, the headroom
-- left (limit - committed - held), the open holds and the holds that expired unsettled. Records written before
-- have none: held and headroom stay NULL (shown as "-"), the counts 0. ADD COLUMN IF NOT EXISTS re-applies safely.
ALTER TABLE budget_status
    ADD COLUMN IF NOT EXISTS held Nullable(Decimal(38, 12)),
    ADD COLUMN IF NOT EXISTS headroom Nullable(Decimal(38, 12)),
    ADD COLUMN IF NOT EXISTS open_reservations UInt32 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS reservations_expired UInt64 DEFAULT 0;
