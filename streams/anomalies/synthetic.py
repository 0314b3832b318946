"""A labelled synthetic month of priced events: realistic traffic with injected anomalies of every kind.

Traffic: 5 teams in different time zones, 18 users with one API key each, features, 8 priced models. Each client
(user + key + feature + model mix) follows a diurnal curve of its team's local time (quiet nights, a lunch dip),
weekends at a fraction of weekdays, a day-to-day random level, Poisson arrivals per 5 minutes and log-normal
token counts; 1-3 % of calls fail. A nightly batch job runs at 02:00 UTC for 45 minutes every day (seasonality
that a flat threshold would flag). A fresh team ("newco") appears on day 10 to show the cold start.

Injections (labels), at random times after day 2, `per_kind` of each kind:
    spend_rate         runaway agent loop on one key: +10x requests with growing contexts, 30-120 min
    token_rate         bulk job on a cheap model: many tokens, little money, 30-90 min
    tokens_per_request a feature's prompt template doubles its output tokens, 2-6 h, in working hours
    request_burst      a leaked key: a new client fires short cheap requests at 1-3 req/s, 20-60 min
    new_model          a user starts sending 40 % of calls to a model their team never used, 1-3 h
    error_rate         a provider model fails 30-60 % of calls (outage), or one key is revoked (all its calls
                       fail), 20-90 min
    model_shift        a team moves its traffic to a 15-20x pricier model, 2-8 h, in working hours
    unpriced_usage     a key calls a model missing from the price catalog, 30-120 min
Each label lists the scopes the injected traffic touches and the kinds it legitimately causes (a runaway loop is
also a token-rate anomaly), so evaluation can match detections without crediting unrelated ones.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterator

import numpy as np

from .incidents import busiest_hour

BUCKET = 300
START = datetime(2026, 9, 7, tzinfo=timezone.utc)  # a Monday; the month ends well before "now"
PRICES = {  # USD per 1M input / output tokens, as integer pico-dollars per token
    "gpt-4o-mini": (0.15, 0.60), "gpt-4o": (2.50, 10.0), "claude-3-5-haiku": (0.80, 4.0),
    "claude-sonnet-4": (3.0, 15.0), "gemini-2.0-flash": (0.10, 0.40), "mistral-large": (2.0, 6.0),
    "o1": (15.0, 60.0), "claude-opus-4": (15.0, 75.0),
}
PROVIDER = {"gpt-4o-mini": "openai", "gpt-4o": "openai", "o1": "openai", "claude-3-5-haiku": "anthropic",
            "claude-sonnet-4": "anthropic", "claude-opus-4": "anthropic", "gemini-2.0-flash": "gemini",
            "mistral-large": "mistral"}
PICO_PER_TOKEN = {m: (int(i * 10**6), int(o * 10**6)) for m, (i, o) in PRICES.items()}  # $/1M -> pico/token
TEAMS = {  # team: (utc offset hours, project, features, users, model mix)
    "search": (0, "search-api", ("query-rewrite", "answer"), 4, {"gpt-4o-mini": 0.7, "gpt-4o": 0.3}),
    "support": (1, "helpdesk", ("reply-draft", "triage"), 5, {"claude-3-5-haiku": 0.6, "claude-sonnet-4": 0.4}),
    "growth": (-5, "emails", ("campaign-copy",), 3, {"gpt-4o-mini": 0.5, "gemini-2.0-flash": 0.5}),
    "research": (-8, "agents", ("agent", "paper-qa"), 3, {"claude-sonnet-4": 0.6, "gpt-4o": 0.4}),
    "platform": (2, "internal-tools", ("code-review", "summarize"), 3, {"mistral-large": 0.4, "gpt-4o-mini": 0.6}),
}
KINDS = ("spend_rate", "token_rate", "tokens_per_request", "request_burst", "new_model", "error_rate",
         "model_shift", "unpriced_usage")


@dataclass
class Client:
    team: str
    project: str
    user: str
    key: str
    feature: str
    models: dict[str, float]
    peak_rps: float
    tin: float
    tout: float
    error_p: float
    offset_h: int
    start: int = 0  # epoch second the client appears
    window: tuple[int, int] | None = None  # (start hour, minutes) of a batch job, UTC
    attribution: dict = field(default_factory=dict)

    def scopes(self, model: str | None = None) -> set[tuple[str, str]]:
        out = {("team", self.team), ("project", self.project), ("user", self.user), ("api_key", self.key),
               ("feature", self.feature)}
        return out | ({("model", model)} if model else {("model", m) for m in self.models})


@dataclass
class Injection:
    kind: str
    start: int
    end: int
    clients: list[Client]
    allowed: tuple[str, ...]
    params: dict = field(default_factory=dict)
    scopes: set = field(default_factory=set)
    description: str = ""

    record: dict = field(default_factory=dict)  # the label; `affected` and `first_affected` fill in as it runs
    affected_at: list = field(default_factory=list)

    def finish(self) -> None:
        """Observable onset = the first changed call; evidence within 15 minutes of it = calls changed then."""
        if self.affected_at:
            first = min(self.affected_at)
            self.record["first_affected"] = first
            self.record["affected_first_15m"] = sum(1 for t in self.affected_at if t < first + 900)
            self.record["affected_busiest_hour"] = busiest_hour(self.affected_at)
            self.record["first_changed_at"] = sorted(self.affected_at)[:10]  # when a rule's evidence was complete

    def label(self) -> dict:
        return {"kind": self.kind, "start": self.start, "end": self.end, "allowed": list(self.allowed),
                "scopes": sorted(self.scopes), "description": self.description, "affected": 0,
                "first_affected": None, "affected_first_15m": 0, "output_multiplier": self.params.get("tout_mult")}


def diurnal(hour_local: float, weekend: bool) -> float:
    """Share of peak traffic: work-day hump with a lunch dip, quiet nights, weekends at ~30 %."""
    day = math.exp(-((hour_local - 11.0) / 2.6) ** 2) + 0.85 * math.exp(-((hour_local - 15.5) / 2.4) ** 2)
    level = 0.06 + 0.94 * min(day, 1.0)
    return level * (0.3 if weekend else 1.0)


def build_clients(rng: random.Random, start: int) -> list[Client]:
    clients = []
    for team, (offset, project, features, users, mix) in TEAMS.items():
        for i in range(users):
            user = f"{team}-user{i + 1}"
            clients.append(Client(team, project, user, f"key-{user}", features[i % len(features)], dict(mix),
                                  rng.uniform(0.03, 0.12), rng.uniform(600, 3000), rng.uniform(150, 700),
                                  rng.uniform(0.01, 0.03), offset))
    clients.append(Client("research", "agents", "research-batch", "key-research-batch", "nightly-eval",
                          {"gpt-4o-mini": 1.0}, 0.8, 1500, 300, 0.01, 0, window=(2, 45)))
    for i in range(2):  # a fresh team on day 10: its first day must not raise a storm
        user = f"newco-user{i + 1}"
        clients.append(Client("newco", "newco-app", user, f"key-{user}", "onboarding", {"gpt-4o-mini": 0.6,
                              "claude-3-5-haiku": 0.4}, rng.uniform(0.05, 0.1), 1200, 400, 0.02, 0,
                              start=start + 10 * 86400 + rng.randrange(0, 86400)))
    for c in clients:
        c.attribution = {"org": "acme", "team": c.team, "project": c.project, "user": c.user, "api_key": c.key,
                         "feature": c.feature, "tags": {}}
    return clients


def _cheapest(models: dict[str, float]) -> str:
    return min(models, key=lambda m: PRICES[m][0] + PRICES[m][1])


def plan_injections(rng: random.Random, clients: list[Client], start: int, days: int, per_kind: int) -> list[Injection]:
    regular = [c for c in clients if c.window is None and c.team != "newco"]
    plans: list[Injection] = []
    used_new_models: set[tuple[str, str]] = set()

    def when(min_h: float, max_h: float, working_hours_of: Client | None = None) -> tuple[int, int]:
        while True:
            t0 = start + rng.randrange(2 * 86400, days * 86400 - 9 * 3600, 60)
            if working_hours_of is not None:
                local = (t0 / 3600 + working_hours_of.offset_h) % 24
                weekday = ((t0 + working_hours_of.offset_h * 3600) // 86400 + 3) % 7
                if weekday >= 5 or not 9.5 <= local <= 16:
                    continue
            return t0, t0 + int(rng.uniform(min_h, max_h) * 3600) // 60 * 60

    for n in range(per_kind):
        c = rng.choice(regular)
        t0, t1 = when(0.5, 2)
        plans.append(Injection("spend_rate", t0, t1, [c], ("spend_rate", "token_rate", "request_burst",
                               "tokens_per_request"), {"extra_mult": 10, "extra_floor_rps": 0.3, "tin_mult": 3},
                               c.scopes(), f"runaway agent loop on {c.key}"))
        c = rng.choice(regular)
        t0, t1 = when(0.5, 1.5)
        plans.append(Injection("token_rate", t0, t1, [c], ("token_rate", "spend_rate", "request_burst",
                               "tokens_per_request", "new_model", "model_shift"),
                               {"extra_rps": 0.3, "extra_model": "gemini-2.0-flash", "tin": 8000, "tout": 100},
                               c.scopes() | {("model", "gemini-2.0-flash")}, f"bulk embedding-sized job on {c.key}"))
        c = rng.choice(regular)
        feature_clients = [x for x in regular if x.feature == c.feature]
        t0, t1 = when(2, 6, working_hours_of=c)
        scopes = set().union(*(x.scopes() for x in feature_clients))
        plans.append(Injection("tokens_per_request", t0, t1, feature_clients, ("tokens_per_request", "token_rate",
                               "spend_rate"), {"tout_mult": 2.2}, scopes, f"template change doubles output of {c.feature}"))
        c = rng.choice(regular)
        t0, t1 = when(1 / 3, 1)
        plans.append(Injection("request_burst", t0, t1, [c], ("request_burst", "spend_rate", "token_rate"),
                               {"extra_rps": rng.uniform(1, 3), "extra_model": _cheapest(c.models), "tin": 200,
                                "tout": 50}, c.scopes(), f"leaked key {c.key}"))
        for _ in range(50):
            c = rng.choice(regular)
            # Models other injections bring in (bulk jobs on flash, switches to o1/opus) would not be new.
            fresh = [m for m in PRICES if m not in TEAMS[c.team][4] and (c.user, m) not in used_new_models
                     and m not in ("gemini-2.0-flash", "o1", "claude-opus-4")]
            if fresh:
                break
        model = rng.choice(fresh)
        used_new_models.add((c.user, model))
        t0, t1 = when(1, 3)
        plans.append(Injection("new_model", t0, t1, [c], ("new_model", "model_shift", "spend_rate", "token_rate"),
                               {"new_model": model, "share": 0.4}, c.scopes() | {("model", model)},
                               f"{c.user} tries {model}"))
        t0, t1 = when(1 / 3, 1.5)
        if n % 2 == 0:
            model = rng.choice(sorted({m for x in regular for m in x.models}))
            hit = [x for x in clients if model in x.models]
            scopes = {("model", model)} | set().union(*(x.scopes(model) for x in hit))
            plans.append(Injection("error_rate", t0, t1, hit, ("error_rate",), {"error_p": rng.uniform(0.3, 0.6),
                                   "model": model}, scopes, f"{model} outage"))
        else:
            c = rng.choice(regular)
            plans.append(Injection("error_rate", t0, t1, [c], ("error_rate",), {"error_p": 1.0},
                                   c.scopes(), f"{c.key} revoked upstream (every call fails)"))
        team = rng.choice(sorted({x.team for x in regular}))
        hit = [x for x in regular if x.team == team]
        pricey = "claude-opus-4" if team == "support" else "o1"
        t0, t1 = when(2, 8, working_hours_of=hit[0])  # a configuration change, deployed in working hours
        plans.append(Injection("model_shift", t0, t1, hit, ("model_shift", "spend_rate", "new_model", "token_rate"),
                               {"model": pricey, "share": 0.8}, set().union(*(x.scopes() for x in hit)) |
                               {("model", pricey)}, f"team {team} switches to {pricey}"))
        c = rng.choice(regular)
        t0, t1 = when(0.5, 2)
        unknown = f"acme-internal-llm-v{n + 2}"
        plans.append(Injection("unpriced_usage", t0, t1, [c], ("unpriced_usage", "new_model", "token_rate",
                               "request_burst"), {"extra_rps": rng.uniform(0.03, 0.1), "extra_model": unknown,
                               "tin": 1500, "tout": 400, "unpriced": True}, c.scopes() | {("model", unknown)},
                               f"{c.key} calls unpriced {unknown}"))
    _separate(plans, start, days)
    return plans


def _separate(plans: list[Injection], start: int, days: int) -> None:
    """Two injections of one kind on shared scopes must not overlap (the second would land inside an anomaly
    that is already open, and could not be told apart): move the later one by whole weeks (same weekday and
    hour) until it is clear, or a week earlier."""
    for i, inj in enumerate(plans):
        for _ in range(8):
            clash = any(o.kind == inj.kind and o.scopes & inj.scopes and o.start < inj.end + 3600
                        and inj.start < o.end + 3600 for o in plans[:i])
            if not clash:
                break
            step = 7 * 86400 if inj.end + 7 * 86400 < start + days * 86400 else -7 * 86400
            if inj.start + step < start + 2 * 86400:
                step = 86400
            inj.start += step
            inj.end += step


def _cost(model: str, tin: int, tout: int) -> str:
    pin, pout = PICO_PER_TOKEN[model]
    pico = tin * pin + tout * pout
    return f"{pico // 10**12}.{pico % 10**12:012d}"


def generate(seed: int = 1, days: int = 30, per_kind: int = 10) -> tuple[Iterator[list[dict]], list[dict], dict]:
    """(batches of priced events, one per 5 minutes, in time order; labels; facts about the month)."""
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    start = int(START.timestamp())
    clients = build_clients(rng, start)
    injections = plan_injections(rng, clients, start, days, per_kind)
    fresh = [c for c in clients if c.start > start]
    facts = {"start": start, "end": start + days * 86400, "clients": len(clients), "injections": len(injections),
             # a fresh client's own scopes (model scopes are shared with old traffic) and when it appeared
             "fresh": [{"start": c.start, "scopes": sorted(s for s in c.scopes() if s[0] != "model")} for c in fresh]}
    day_level = {(c.key, d): math.exp(rng.gauss(0, 0.15)) for c in clients for d in range(days + 1)}

    def batches() -> Iterator[list[dict]]:
        counter = 0
        rand, choices, lognorm = rng.random, rng.choices, rng.lognormvariate
        for b in range(start, start + days * 86400, BUCKET):
            prefixes = [datetime.fromtimestamp(b + 60 * i, timezone.utc).strftime("%Y-%m-%dT%H:%M:") for i in range(5)]
            active = [inj for inj in injections if inj.start < b + BUCKET and inj.end > b]
            day = (b - start) // 86400
            weekend = ((b // 86400) + 3) % 7 >= 5
            events: list[dict] = []
            for c in clients:
                if b < c.start:
                    continue
                if c.window is not None:
                    sec = b % 86400
                    on = c.window[0] * 3600 <= sec < c.window[0] * 3600 + c.window[1] * 60
                    rate = c.peak_rps if on else 0.0
                else:
                    local = (b / 3600 + c.offset_h) % 24
                    local_weekend = (((b + c.offset_h * 3600) // 86400) + 3) % 7 >= 5 if c.offset_h else weekend
                    rate = c.peak_rps * diurnal(local, local_weekend) * day_level[(c.key, day)]
                mine = [inj for inj in active if c in inj.clients]
                streams = [(rate, None)]
                for inj in mine:
                    p = inj.params
                    if inj.kind == "spend_rate":
                        streams.append((max(p["extra_mult"] * c.peak_rps, p["extra_floor_rps"]), inj))
                    elif "extra_rps" in p:
                        streams.append((p["extra_rps"], inj))
                models, weights = list(c.models), list(c.models.values())
                for stream_rate, extra in streams:
                    for _ in range(int(nprng.poisson(stream_rate * BUCKET))):
                        offset = int(rand() * BUCKET)
                        t = b + offset
                        live = [inj for inj in mine if inj.start <= t < inj.end]
                        if extra is not None and extra not in live:
                            continue
                        model = choices(models, weights)[0]
                        tin = int(lognorm(math.log(c.tin), 0.6))
                        tout = int(lognorm(math.log(c.tout), 0.6))
                        error_p, unpriced, touched, failing = c.error_p, False, [], None
                        for inj in live:
                            p = inj.params
                            if inj is extra:
                                touched.append(inj)
                                if inj.kind == "spend_rate":
                                    tin = int(tin * p["tin_mult"])
                                else:
                                    model = p["extra_model"]
                                    tin = int(lognorm(math.log(p["tin"]), 0.4))
                                    tout = int(lognorm(math.log(p["tout"]), 0.4))
                                    unpriced = p.get("unpriced", False)
                            elif extra is None:
                                if inj.kind == "tokens_per_request":
                                    tout = int(tout * p["tout_mult"])
                                    touched.append(inj)
                                elif inj.kind in ("new_model", "model_shift") and rand() < p["share"]:
                                    model = p.get("new_model") or p["model"]
                                    touched.append(inj)
                                elif inj.kind == "error_rate" and p.get("model", model) == model:
                                    error_p, failing = p["error_p"], inj
                        counter += 1
                        error = rand() < error_p
                        if error and failing is not None:
                            touched.append(failing)
                        for inj in touched:  # when the injection changed a call (evidence for detection)
                            inj.record["affected"] += 1
                            if len(inj.affected_at) < 5000:
                                inj.affected_at.append(t)
                        event = {"event_id": f"syn-{seed}-{counter}", "ts": f"{prefixes[offset // 60]}{offset % 60:02d}Z",
                                 "source": "synthetic", "provider": PROVIDER.get(model, "acme"), "model": model,
                                 "status": "error" if error else "ok", "attribution": c.attribution,
                                 "usage": {"input_tokens": 0 if error else tin, "output_tokens": 0 if error else tout},
                                 "cost_usd": "0.000000000000" if error or unpriced else _cost(model, tin, tout),
                                 "pricing_status": "unpriced" if unpriced else "priced"}
                        if unpriced:
                            event["unpriced_reason"] = f"unknown model {model}"
                        events.append(event)
            yield events
        for inj in injections:
            inj.finish()

    for inj in injections:
        inj.record = inj.label()
    return batches(), [inj.record for inj in injections], facts
