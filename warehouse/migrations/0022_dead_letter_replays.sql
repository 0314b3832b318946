-- A letter about a record `tokenmeter deadletters replay` re-sent (the worker lettered it again) names the letter it
-- was re-sent from ('tokenmeter.deadletter:P:O'; '' for every other letter). Source completeness does not count it
-- as a new rejection: the record's first letter was counted. Records written before have no such field: ''.
-- ADD COLUMN IF NOT EXISTS re-applies safely; the loader inserts by column name.
ALTER TABLE dead_letters
    ADD COLUMN IF NOT EXISTS replayed_from String DEFAULT '';
