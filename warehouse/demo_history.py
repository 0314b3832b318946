"""`tokenmeter demo-history`: 30 days of back-filled history for `tokenmeter up --demo`, so every page has a
month of content at first start. Written straight into the warehouse (before the loader starts), seeded, so two
runs give the same month.

- Traffic of the live demo's callers and models (collectors/demo.py), priced by the worker's own code, with
  weekday and hour-of-day seasonality (quiet nights and weekends, a lunch dip), a nightly embeddings batch job on
  its own service key, and a support bot (a service key on a small model, busy all day).
- One injected anomaly of each kind the detector knows, each shaped to be that kind only: a runaway agent loop
  (spend_rate), a bulk job on a cheap model (token_rate), the bot's summary template asking for three times the
  text (tokens_per_request), a leaked key firing tiny calls (request_burst), a user trying a model nobody used
  (new_model), a provider outage the bot retries into (error_rate), the bot's prompts sent to a pricier model for
  half an hour (model_shift) and a model missing from the catalog (unpriced_usage). The detector reading the
  history alerts once per kind (tests/warehouse/test_demo_history.py counts them); the unpriced model is a new
  model too. The shapes that made it noisy before (31 alerts in a live demo): the batch job on a person's key (her
  usual output per call ~10 tokens, so her chats were "jumps"), every caller drawing every model at random (a rare
  model's first cluster weeks in was a "new model"), injections too thin or at night to be seen.
- Provider cost and usage reports (what `tokenmeter collect openai-usage` / `anthropic-usage` store) per day
  and model with a small drift: most days within 0.8 %, one model billed 25 % more for three days (a price
  change) and one day with 1.50 USD of calls no collector saw (a missing source).
- Calls seen twice (a gateway log and an OTel span with the same response id) during an OTel pilot in the first
  three weeks: cross-source dedup counts them once.
- The previous month closed (`tokenmeter close`), when it ended inside the history.
"""

from __future__ import annotations

import logging
import math
import random
import zlib
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import click

log = logging.getLogger("tokenmeter.demo")

DAYS = 30
BASE_PER_HOUR = 36  # calls per weekday peak hour across all callers
SEED = 16


def _season(ts: datetime) -> float:
    """Relative traffic at this hour: working hours high, a lunch dip, nights and weekends low."""
    hour = ts.hour + ts.minute / 60
    day = 0.15 + 0.85 * math.exp(-((hour - 14.5) / 4.2) ** 2)
    if 12 <= hour < 13:
        day *= 0.7
    return day * (0.3 if ts.weekday() >= 5 else 1.0)


# The generator's calendar: a reference week grid, not the start minute. The month is drawn on weeks that begin on
# a Monday 00:00 UTC (`_reference_monday`): each hour's traffic is drawn from its own random stream, seeded by the
# hour's place on that grid, so the same weekday and hour always get the same calls, and the injections sit on
# fixed weekdays and hours of it. Before, the month was drawn from its first hour on with one stream: every start
# time drew other calls and moved the injections to other hours of the week (9-10 alerts over 8 start times, once
# the model shift missed). Now a start time only decides where the 30 days begin on the grid (0-7 days into it).
ANCHOR_MONDAY = datetime(2024, 1, 1, tzinfo=timezone.utc)  # a Monday


def _reference_monday(start: datetime) -> datetime:
    """The Monday 00:00 UTC at or before `start`: day 0 of the generator's calendar."""
    return ANCHOR_MONDAY + timedelta(weeks=(start - ANCHOR_MONDAY) // timedelta(weeks=1))


def _injections(monday: datetime) -> list[dict[str, Any]]:
    """One injection of each kind the detector knows, on fixed weekday afternoons (UTC) of the calendar that begins
    on `monday`: days 14-28, so inside the month whatever its start (it begins 0-7 days after `monday`) and after at
    least a week of usual traffic; the bot's three at least three days apart; the loop on claude-sonnet at least 13
    days before the end (before the provider's price change of that model, days -9 to -7: its 25 % would make the
    loop's day a big drift). Each is shaped so that it is *only* that kind: a loop repeats the usual calls (more
    spend, same calls), a model shift sends the same prompts to a pricier model the team already uses now and then
    (not a new model), a new model gets prompts of the usual size (not longer answers)."""
    def at(day: int, hour: int) -> datetime:
        return monday + timedelta(days=day, hours=hour)

    return [
        {"kind": "unpriced_usage", "from": at(14, 14), "hours": 2, "team": "platform", "user": "lu", "extra": 36,
         "model": "acme-internal-llm-v2", "feature": "classify"},  # Monday
        {"kind": "new_model", "from": at(15, 13), "hours": 2, "team": "search", "user": "chen", "extra": 8,
         "model": "gpt-4.1", "feature": "rag-answer"},  # Tuesday
        {"kind": "model_shift", "from": at(16, 13), "hours": 0.5, "caller": "bot", "shift_to": SHIFT_MODEL},
        {"kind": "spend_rate", "from": at(17, 14), "hours": 2, "team": "growth", "user": "hal", "extra": 300,
         "model": SHIFT_MODEL, "feature": "agent-loop", "sizes_of": "loop"},  # Thursday
        {"kind": "tokens_per_request", "from": at(21, 13), "hours": 4, "caller": "bot", "output_mult": 3},  # Monday
        {"kind": "token_rate", "from": at(22, 10), "hours": 1, "team": "data-science", "user": "fay", "extra": 480,
         "model": "gpt-4o-mini", "feature": "classify"},  # Tuesday
        {"kind": "error_rate", "from": at(24, 14), "hours": 1, "provider": "openai", "error_share": 0.9,
         "retries": 2},  # Thursday
        {"kind": "request_burst", "from": at(28, 15), "hours": 1, "team": "platform", "user": "kai", "extra": 700,
         "model": "gpt-4o-mini", "tiny": True},  # Monday
    ]


# The support bot: a service key answering customers all day on a small model, summarizing tickets; a hard
# ticket now and then (1 %) goes to a bigger model. The tokens_per_request and model_shift injections happen to its traffic.
BOT_MODEL = ("openai", "gpt-4o-mini", 0, 900, 200, 0.0)
SHIFT_MODEL = "claude-sonnet-4-5-20250929"
BOT_PER_HOUR = 36
BOT_FEATURE = "ticket-summary"  # the bot's alone: its scope is the bot's traffic, so one alert per bot anomaly
# The loop's calls (on claude-sonnet, a model the caller uses): short prompts, answers of the caller's usual
# length (~320 tokens): more spend, the same tokens per call, fewer tokens per hour than a token_rate anomaly.
LOOP_SIZES = (400, 300, 0.0)


def _model(name: str) -> tuple:
    from collectors.demo import MODELS

    extra = {"gpt-4.1": ("openai", "gpt-4.1", 0, 1800, 350, 0.0)}  # the new model: prompts of the usual size
    return extra.get(name) or next(m for m in MODELS if m[1] == name)


def history_events(now: datetime | None = None, days: int = DAYS, seed: int = SEED) -> list[dict[str, Any]]:
    """UsageEvent dicts of the back-filled month (not yet priced), in time order."""
    from collectors.demo import FEATURES, MODELS, Caller, callers

    rng = random.Random(seed)  # the first day's calls; each hour of the calendar then draws from its own stream
    # The nightly batch job runs under a service key of its own, as batch jobs do. On a person's key (it was
    # fay's) its thousands of embedding calls (no output tokens) made her usual output per request ~10 tokens,
    # so each of her daytime chats was a tokens_per_request anomaly: 7 alerts of the demo's month, and noise.
    batch_job = Caller("acme", "data-science", "etl", "sk-acm-data-batch", "embeddings-nightly")
    bot = Caller("acme", "support-bot", "bot", "sk-acm-supp-bot", "support-bot-service")
    now = (now or datetime.now(timezone.utc)).replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(days=days)
    people = callers()
    monday = _reference_monday(start)
    injections = _injections(monday)
    events: list[dict[str, Any]] = []
    ids = {"prefix": "w", "first": 0}  # an event's id: its hour on the calendar and its place in that hour

    def event(ts: datetime, caller: Any, model: tuple, *, feature: str | None = None, key: str | None = None,
              input_mult: float = 1, output_mult: float = 1, tiny: bool = False, error: bool = False) -> dict:
        provider, name, _, typical_in, typical_out, reasoning = model
        embeddings = name.startswith("text-embedding")
        tin = 20 if tiny else max(1, int(rng.lognormvariate(0, 0.6) * typical_in * input_mult))
        tout = 0 if embeddings else (5 if tiny else max(1, int(rng.lognormvariate(0, 0.5) * typical_out * output_mult)))
        usage: dict[str, int] = {"input_tokens": tin, "output_tokens": tout}
        if error:
            usage = {"input_tokens": 0, "output_tokens": 0}
        elif rng.random() < 0.35:
            usage["cached_input_tokens"] = int(tin * rng.uniform(0.3, 0.9))
        if reasoning and not error:
            usage["reasoning_tokens"] = int(tout * reasoning)
        n = len(events) - ids["first"]
        return {"event_id": f"hist-{seed}-{ids['prefix']}-{n}", "ts": ts.isoformat(), "source": "demo", "provider": provider,
                "model": name, "operation": "embeddings" if embeddings else "chat",
                "status": "error" if error else "ok",
                "attribution": {"org": caller.org, "team": caller.team, "project": caller.project,
                                "user": caller.user, "api_key": key or caller.api_key,
                                "feature": feature or rng.choice(FEATURES), "tags": {"env": "prod"}},
                "usage": usage, "latency_ms": round(rng.uniform(200, 4000), 1)}

    weights = [m[2] for m in MODELS if m[0] != "acme-hosted"]
    priced_models = [m for m in MODELS if m[0] != "acme-hosted"]
    # A scope's usual models are the ones it used before (the detector learns them in its first days). Drawn at
    # random, a caller's rare models (3-4 % of its calls) first came in a cluster weeks later: a new_model
    # alert for a model the caller had merely not drawn yet. So on the first day every caller uses every model
    # of the month once, on every feature in turn, as a longer past would have shown (~170 calls).
    first_day = start + timedelta(hours=1)
    for i, caller in enumerate(people):
        for j, model in enumerate(priced_models):  # every model on every feature too: (i + j) covers them
            ts = first_day + timedelta(seconds=rng.randrange(20 * 3600))
            events.append(event(ts, caller, model, feature=FEATURES[(i + j) % len(FEATURES)]))
    for model in (BOT_MODEL, _model(SHIFT_MODEL)):
        events.append(event(first_day + timedelta(seconds=rng.randrange(20 * 3600)), bot, model, feature=BOT_FEATURE))
    hour = start
    while hour < now:
        grid_hour = (hour - monday) // timedelta(hours=1)
        rng = random.Random(seed * 1_000_003 + grid_hour)  # this weekday and hour of the calendar: the same calls
        ids["prefix"], ids["first"] = f"{monday:%Y%m%d}h{grid_hour}", len(events)
        live = [i for i in injections if i["from"] <= hour < i["from"] + timedelta(hours=i["hours"])]
        outage = next((i for i in live if i["kind"] == "error_rate"), None)
        count = int(rng.gauss(BASE_PER_HOUR * _season(hour), 2) + 0.5)
        if hour.hour == 2:  # the nightly batch job of data-science: every day, 02:00-03:00 UTC
            count += 25
        for _ in range(max(count, 0)):
            ts = hour + timedelta(seconds=rng.randrange(3600))
            caller, feature = rng.choice(people), None
            model = rng.choices(priced_models, weights)[0]
            if hour.hour == 2 and rng.random() < 0.5:
                caller, model, feature = batch_job, _model("text-embedding-3-small"), "embed-batch"
            error = rng.random() < (outage["error_share"] if outage and model[0] == outage["provider"] else 0.02)
            events.append(event(ts, caller, model, feature=feature, error=error))
        for _ in range(max(0, int(rng.gauss(BOT_PER_HOUR * (0.1 + 0.9 * _season(hour)), 1.5) + 0.5))):
            ts = hour + timedelta(seconds=rng.randrange(3600))
            model, output_mult = BOT_MODEL, 1.0
            if rng.random() < 0.01:
                model = _model(SHIFT_MODEL)
            for inj in live:
                if inj["kind"] == "model_shift" and ts < inj["from"] + timedelta(hours=inj["hours"]):
                    # the same prompts, sent to the pricier model; half an hour: longer, and the detector learns
                    # the new model's share as the scope's mix, closes and opens again (two alerts for one shift)
                    model = (*_model(inj["shift_to"])[:3], *BOT_MODEL[3:])
                if inj["kind"] == "tokens_per_request" and model == BOT_MODEL:  # its template now asks for 3x
                    output_mult = inj["output_mult"]
            error = rng.random() < (outage["error_share"] if outage and model[0] == outage["provider"] else 0.01)
            events.append(event(ts, bot, model, feature=BOT_FEATURE, output_mult=output_mult, error=error))
            for retry in range(outage["retries"] if outage and error else 0):  # the bot retries a failed call
                events.append(event(ts + timedelta(seconds=2 + 3 * retry), bot, model, feature=BOT_FEATURE,
                                    error=rng.random() < outage["error_share"]))
        for inj in live:  # extra traffic of the injections that add calls
            if "extra" not in inj:
                continue
            caller = next(c for c in people if c.team == inj["team"] and c.user == inj["user"])
            for _ in range(inj["extra"]):
                ts = hour + timedelta(seconds=rng.randrange(3600))
                model = _model(inj["model"])
                if inj.get("sizes_of") == "loop":
                    model = (*model[:3], *LOOP_SIZES)
                events.append(event(ts, caller, model, feature=inj.get("feature"), key=inj.get("api_key"),
                                    input_mult=inj.get("input_mult", 1), tiny=inj.get("tiny", False)))
        hour += timedelta(hours=1)
    events.sort(key=lambda e: e["ts"])
    spans_until = (now - timedelta(days=9)).isoformat()  # an OTel pilot that ended: not a stale source today
    for item in events:  # one call in 40 (by its id, not its place in the month) also arrives as an OTel span
        if zlib.crc32(item["event_id"].encode()) % 40 == 0 and item["status"] == "ok" and item["ts"] < spans_until:
            item["correlation"] = {"response_id": f"chatcmpl-{item['event_id']}"}
    return events


def priced_history(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Priced by the worker's code with the shipped catalog, in the worker's default (columnar) batch step, 5,000
    events a batch; the OTel copies of correlated calls added after their gateway log. The columnar step gives
    what `streams.enrich.price_event` per event gives (the same dicts, keys in the same order: issue 14's
    equivalence) for about a third of the CPU (~0.8 against ~2.0 CPU-s a month of 21,562 calls here), and every
    demo start, history test and live-demo test prices a month or more. A history event that cannot be priced is
    a bug of the generator: it raises, as `UsageEvent.model_validate` did."""
    import orjson

    from streams.batch import RawRecord
    from streams.columnar import process_batch_columnar
    from streams.pricing import load_price_book

    book = load_price_book()
    out = []
    for start in range(0, len(events), HISTORY_BATCH):
        chunk = events[start:start + HISTORY_BATCH]
        result = process_batch_columnar([RawRecord(orjson.dumps(chunk), "tokenmeter.usage", 0, start)], book)
        if result.deadletters:
            raise ValueError(f"demo history event not priced: {result.deadletters[0]['reason']}")
        for item, (_, _, priced) in zip(chunk, result.origins, strict=True):
            out.append(priced)
            if item.get("correlation"):
                out.append({**priced, "event_id": f"{item['event_id']}-span", "source": "otel"})
    return out


HISTORY_BATCH = 5000  # events per priced batch (the worker's batches are of this order)


PRICE_CHANGE_MODEL = "claude-sonnet-4-5-20250929"  # billed 25 % more for three days: a price change
MISSING_SOURCE_MODEL = "claude-sonnet-4-5-20250929"  # one day: 1.50 USD of calls no collector saw
MISSING_USD = Decimal("1.50")
DEMO_DRIFT_MIN_USD = "0.10"  # the demo's spend is a few USD a day: `up --demo` sets this floor unless set


def provider_reports(priced: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """Daily provider cost and usage records (provider_usage contract) for openai and anthropic, from the metered
    traffic with a small drift: within 0.8 % most days, one model billed 25 % more for three days (a price
    change: same tokens), and one day with 1.50 USD of that model's calls that no collector saw (more tokens)."""
    rng = random.Random(SEED)
    totals: dict[tuple[str, str, str], list] = {}
    for e in priced:
        if e["provider"] not in ("openai", "anthropic") or e["pricing_status"] != "priced" or e["source"] == "otel":
            continue
        key = (e["ts"][:10], e["provider"], e["model"])
        cost, tokens = totals.setdefault(key, [Decimal(0), 0])
        totals[key] = [cost + Decimal(e["cost_usd"]),
                       tokens + e["usage"].get("input_tokens", 0) + e["usage"].get("output_tokens", 0)]
    today = now.date().isoformat()
    days = sorted({k[0] for k in totals if k[0] < today})
    price_change = set(days[-9:-6])
    missing_day = days[-4] if len(days) >= 4 else None
    records = []
    for (day, provider, model), (cost, tokens) in sorted(totals.items()):
        if day >= today:
            continue  # today's report is not final
        billed = cost * (Decimal(1) + Decimal(rng.randint(-80, 80)) / 10000)
        billed_tokens = tokens
        if model == PRICE_CHANGE_MODEL and day in price_change:
            billed = cost * Decimal("1.25")
        if model == MISSING_SOURCE_MODEL and day == missing_day and cost:
            billed = cost + MISSING_USD
            billed_tokens = int(tokens * (cost + MISSING_USD) / cost)
        start = datetime.fromisoformat(day).replace(tzinfo=timezone.utc)
        common = {"provider": provider, "model": model, "bucket_start": start.isoformat(),
                  "bucket_end": (start + timedelta(days=1)).isoformat(), "bucket_width": "1d",
                  "fetched_at": now.isoformat()}
        records.append({**common, "id": f"demo-cost-{provider}-{model}-{day}", "kind": "cost",
                        "cost_usd": f"{billed.quantize(Decimal('0.000001'))}"})
        records.append({**common, "id": f"demo-usage-{provider}-{model}-{day}", "kind": "usage",
                        "input_tokens": billed_tokens, "output_tokens": 0})
    return records


# The demo's cost centers and shared-cost allocation (docs/finance.md, "Configuration"): `up --demo` writes it to
# <data_dir>/demo-finance.yaml and points TOKENMETER_COST_CENTERS_FILE at it unless a finance file is set, so
# showback, exports and the dashboard show cost centers and the platform team's spend allocated to its users.
DEMO_FINANCE_YAML = """\
# The tokenmeter demo's finance mapping, written by `tokenmeter up --demo` (edit it, or set
# TOKENMETER_COST_CENTERS_FILE to your own file). docs/finance.md describes the format.
cost_centers:
  - match: {team: search}
    cost_center: CC-1100
    gl_account: "6400"
    owner: search-lead@example.com
  - match: {team: growth}
    cost_center: CC-1200
    gl_account: "6400"
    owner: growth-lead@example.com
  - match: {team: data-science}
    cost_center: CC-1300
    gl_account: "6420"
    owner: data-lead@example.com
  - match: {team: support-bot}
    cost_center: CC-2100
    gl_account: "6410"
    owner: support-ops@example.com
  - match: {team: platform}
    cost_center: CC-9000
    gl_account: "6490"
    owner: platform-finance@example.com

allocation:
  - name: platform-shared          # the platform team's spend, shared by the teams using the platform
    scope: {team: platform}
    basis: cost
"""


def demo_finance_file(data_dir: Any) -> Any:
    """<data_dir>/demo-finance.yaml, written when missing (a file the user edited is kept); returns its path."""
    from pathlib import Path

    path = Path(data_dir) / "demo-finance.yaml"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(DEMO_FINANCE_YAML)
    return path


async def _publish_priced(bootstrap: str, priced: list[dict[str, Any]], wait_seconds: float = 30.0) -> int:
    """The history on `tokenmeter.priced` too, in time order, framed as the worker frames it: the anomaly detector
    reads that topic (a backfill builds its baselines and finds the injections); the loader meets ids it has."""
    import asyncio
    import time

    import orjson
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    from tokenmeter import microbatch, topics
    from tokenmeter.events import partition_key

    deadline = time.monotonic() + wait_seconds
    while True:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
        try:
            await producer.start()
            break
        except KafkaError:
            await producer.stop()
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
    try:
        sent = 0
        for i in range(0, len(priced), 500):  # an hour or so at a time, keys in order within each chunk
            groups: dict[bytes, list[bytes]] = {}
            for event in priced[i:i + 500]:
                groups.setdefault(partition_key(event), []).append(orjson.dumps(event))
            for key, encoded in groups.items():
                for value in microbatch.frame(encoded):
                    await producer.send(topics.PRICED, value, key=key)
            await producer.flush()
            sent += len(priced[i:i + 500])
        return sent
    finally:
        await producer.stop()


def write_history(settings: Any, now: datetime | None = None, publish: bool = False) -> dict[str, Any]:
    """Write the month into an empty warehouse (nothing when it has events already); close the previous month
    when it ended inside the history; with `publish`, also put it on the priced topic for the anomaly detector.
    Returns what was written."""
    from tokenmeter import topics
    from warehouse.month_close import close_month, closed_months, closes_dir
    from warehouse.records_load import record_to_row
    from warehouse.store import open_warehouse

    now = now or datetime.now(timezone.utc)
    wh = open_warehouse(settings, writer=True, serve=False)
    try:
        if int(wh.query("SELECT count() AS n FROM priced_events")["n"][0]):
            return {"events": 0, "skipped": "the warehouse has events already"}
        priced = priced_history(history_events(now))
        stored = 0
        for i in range(0, len(priced), 5000):
            stored += wh.insert_priced(priced[i:i + 5000])
        reports = provider_reports(priced, now)
        wh.insert_records(topics.PROVIDER_USAGE, [record_to_row(topics.PROVIDER_USAGE, r)[1] for r in reports])
        first_of_month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        previous = (first_of_month - timedelta(days=1)).strftime("%Y-%m")
        closed = None
        if first_of_month - now + timedelta(days=DAYS) > timedelta(0) and previous not in closed_months(closes_dir(settings)):
            closed = close_month(wh, closes_dir(settings), previous, closed_by="demo", now=now,
                                 finance_files=(settings.cost_centers_file, settings.allocation_file))["month"]
    finally:
        wh.close()
    published = 0
    if publish:
        import asyncio

        try:
            published = asyncio.run(_publish_priced(settings.bootstrap_servers, priced))
        except Exception as exc:  # noqa: BLE001 - the month is in the warehouse; only the detector misses it
            log.warning("demo history not published to the priced topic: %s", exc)
    return {"events": stored, "sent": len(priced), "provider_reports": len(reports), "closed": closed,
            "published": published}


@click.command("demo-history")
@click.option("--publish", is_flag=True, help="Also put the history on tokenmeter.priced (for the anomaly detector).")
def demo_history(publish: bool) -> None:
    """Back-fill 30 days of demo history into an empty warehouse (run by `tokenmeter up --demo` before the
    loader starts; the loader must not be running)."""
    from tokenmeter.cli_support import cli_settings
    from warehouse import WarehouseError

    settings = cli_settings()
    try:
        result = write_history(settings, publish=publish)
    except WarehouseError as exc:
        raise click.ClickException(str(exc)) from None
    if result.get("skipped"):
        click.echo(f"demo history: {result['skipped']}; nothing written")
        return
    click.echo(f"demo history: {result['events']} events over {DAYS} days ({result['sent'] - result['events']} "
               f"seen twice, counted once), {result['provider_reports']} provider report rows"
               + (f", month {result['closed']} closed" if result["closed"] else "")
               + (f", {result['published']} on the priced topic" if result["published"] else ""))
