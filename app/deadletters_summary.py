"""`tokenmeter deadletters summary`: dead letters per source, stage and kind of reason, from the warehouse table
`dead_letters` (migration 0012; the loader writes it from tokenmeter.deadletter, without payloads).

Reasons carry details ("invalid event: usage.input_tokens: -5 is negative", "line 812: not JSON"), so one cause
would be thousands of rows. They are grouped by a normalised reason: quoted values become '…', hexadecimal runs
of 8 or more characters (hashes, ids) H, numbers N, cut at 160 characters; one real reason is shown per group.
A record a stage lettered again after a redelivery (same topic, partition, offset and payload hash) counts once,
as `tokenmeter completeness` counts it (warehouse/completeness.py DEAD_SQL). A record `deadletters replay` re-sent
and the worker lettered again (`replayed_from`) is a letter here (a replay that failed is what the operator looks
for), though completeness does not count it as a new rejection."""

from __future__ import annotations

import textwrap
from datetime import datetime
from typing import Any

from tokenmeter.terminal_text import for_terminal

# re2 (ClickHouse) syntax, passed as query parameters (no SQL string escaping to get wrong). The order matters:
# quotes first (they may hold digits), then words mixing digits and hex letters (hashes, ids), then numbers.
REASON_PATTERNS = {
    "quoted": "'[^']*'|\"[^\"]*\"",
    "hexid": "\\b[0-9a-fA-F]*([0-9][0-9a-fA-F]*[a-fA-F]|[a-fA-F][0-9a-fA-F]*[0-9])[0-9a-fA-F]*\\b",
    "number": "[0-9]+([.][0-9]+)?",
}
NORMALISED_REASON = (
    "substringUTF8(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(reason, {quoted:String}, '\\'…\\''),"
    " {hexid:String}, 'H'), {number:String}, 'N'), 1, 160)"
)
# One letter per Kafka position (redeliveries), then groups. Letters without a position (HTTP ingest, files) are
# distinct by their own time: two requests are two rejections.
SUMMARY_SQL = (
    "SELECT source, stage, kind, count() AS letters, any(one_reason) AS example, min(lettered) AS first_at,"
    " max(lettered) AS last_at FROM ("
    " SELECT toString(source) AS source, toString(stage) AS stage, " + NORMALISED_REASON + " AS kind,"
    " any(reason) AS one_reason, min(at) AS lettered FROM dead_letters FINAL"
    " WHERE at >= {since:DateTime64(3, 'UTC')} AND at < {until:DateTime64(3, 'UTC')}{filters}"
    " GROUP BY source, stage, kind, topic, partition, offset, payload_sha256,"
    " if(topic != '' AND offset >= 0, toDateTime64(0, 3, 'UTC'), at))"
    " GROUP BY source, stage, kind ORDER BY letters DESC, source, stage, kind LIMIT {limit:UInt32}"
)
MAX_GROUPS = 500  # a hostile source can invent reasons without end; the table says when it is cut


def summary_rows(wh: Any, since: datetime, until: datetime, source: str | None = None, stage: str | None = None,
                 limit: int = MAX_GROUPS) -> list[dict[str, Any]]:
    """Groups of dead letters in [since, until), most letters first (at most `limit` + 1: one more says "cut")."""
    filters, params = "", {"since": since, "until": until, "limit": limit + 1, **REASON_PATTERNS}
    if source:
        filters += " AND source = {source:String}"
        params["source"] = source
    if stage:
        filters += " AND stage = {stage:String}"
        params["stage"] = stage
    frame = wh.query(SUMMARY_SQL.replace("{filters}", filters), params)
    return list(frame.iter_rows(named=True))


# The table is one line per group within the terminal's width: the reason is cut to what is left beside the other
# columns (until walk36 lines were ~300 characters: reason and example side by side); `--full` prints each group's
# whole reason and one real example, wrapped. Names from gateways are cut too (stored up to 200 characters).
NAME_CHARS = 24
MIN_REASON_CHARS = 20
TIME_FORMAT = "%m-%d %H:%M"  # the year is in the line under the table ("since 2026-12-07T..."), and in --full


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:max(limit - 1, 0)] + "…"


def summary_table(rows: list[dict[str, Any]], columns: int) -> tuple[str, bool]:
    """The groups as a table at most `columns` wide (when the other columns leave the reason MIN_REASON_CHARS),
    and whether a reason was cut."""
    import polars as pl

    from warehouse.report import render_report

    people = [{"source": _cut(for_terminal(r["source"]), NAME_CHARS), "stage": _cut(for_terminal(r["stage"]),
               NAME_CHARS), "letters": r["letters"], "first (UTC)": r["first_at"].strftime(TIME_FORMAT),
               "last (UTC)": r["last_at"].strftime(TIME_FORMAT), "reason": for_terminal(r["kind"])} for r in rows]
    others = [max(len(name), *(len(str(p[name])) for p in people)) for name in list(people[0])[:-1]]
    room = max(MIN_REASON_CHARS, columns - sum(others) - 2 * len(others))
    cut = any(len(p["reason"]) > room for p in people)
    for p in people:
        p["reason"] = _cut(p["reason"], room)
    return render_report(pl.DataFrame(people, infer_schema_length=None), "table"), cut


def summary_blocks(rows: list[dict[str, Any]], columns: int) -> str:
    """Each group as a few lines wrapped to `columns`: who, how many and when, the whole (normalised) reason and
    one real reason as it was lettered."""
    width = max(columns, 40)
    out = []
    for r in rows:
        out.append(_cut(f"{for_terminal(r['source'])} / {for_terminal(r['stage'])}: {r['letters']} letter(s), "
                        f"{r['first_at']:%Y-%m-%d %H:%M:%S} .. {r['last_at']:%Y-%m-%d %H:%M:%S} UTC", width))
        for label, text in (("reason:  ", r["kind"]), ("example: ", r["example"])):
            out.append(textwrap.fill(for_terminal(text), width, initial_indent="  " + label,
                                     subsequent_indent=" " * (2 + len(label))))
    return "\n".join(out) + "\n"
