"""Incidents laid over any traffic family (sparse.py, office.py): one labelled incident of each kind, per round.

A family supplies its clean traffic (batches of priced events in time order) and its actors: who calls (the
attribution of one API key), with which models, how big its calls usually are, and its expected call rate at a
time. `plan` picks incidents at times the affected actors are busy enough to show them (a template change at 3 a.m.
on a key that calls twice a night is not an incident anyone can see; hosting.py's rule, for template changes
(template_hosting.py: calls enough for the optimal test to find it within 15 minutes) and model shifts
(shift_hosting.py: changed calls enough for the model shift rules to speak), and a label that says so when no feature
or team has them), `overlay` changes the calls an incident
touches and adds the calls it brings (a loop, a leaked key's client, a bulk job), and `label` describes each for
evaluate.py: its scopes, the kinds it legitimately causes, and the calls it changed (evidence).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from .shift_hosting import ShiftHosting
from .template_hosting import TemplateHosting

BUCKET = 300
PRICES = {  # USD per 1M input / output tokens
    "gpt-4o-mini": (0.15, 0.60), "gpt-4o": (2.50, 10.0), "gpt-4.1-nano": (0.10, 0.40), "claude-3-5-haiku": (0.80, 4.0),
    "claude-sonnet-4": (3.0, 15.0), "gemini-2.0-flash": (0.10, 0.40), "mistral-large": (2.0, 6.0),
    "o1": (15.0, 60.0), "claude-opus-4": (15.0, 75.0), "deepseek-chat": (0.27, 1.10),
}
PREMIUM = ("claude-opus-4", "o1")
TEMPLATE_MULT = 2.5  # a template change multiplies its feature's output tokens by this
SHIFT_SHARE = 0.8  # a model shift moves this share of its team's calls to the premium model
PICO_PER_TOKEN = {m: (int(i * 10**6), int(o * 10**6)) for m, (i, o) in PRICES.items()}


def cost_str(model: str, tin: int, tout: int) -> str:
    pin, pout = PICO_PER_TOKEN[model]
    pico = tin * pin + tout * pout
    return f"{pico // 10**12}.{pico % 10**12:012d}"


def ts_str(t: float) -> str:
    import time as _time

    return _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime(int(t)))


def priced_event(event_id: str, t: float, attribution: dict, model: str, tin: int, tout: int, error: bool = False,
                 unpriced: bool = False, source: str = "family") -> dict:
    out = {"event_id": event_id, "ts": ts_str(t), "source": source, "provider": "gateway", "model": model,
           "status": "error" if error else "ok", "attribution": attribution,
           "usage": {"input_tokens": 0 if error else tin, "output_tokens": 0 if error else tout},
           "cost_usd": "0.000000000000" if error or unpriced else cost_str(model, tin, tout),
           "pricing_status": "unpriced" if unpriced else "priced"}
    if unpriced:
        out["unpriced_reason"] = f"unknown model {model}"
    return out


@dataclass
class Actor:
    attribution: dict  # team, project, user, api_key, feature
    models: dict[str, float]
    tin: float  # median input / output tokens of a call
    tout: float
    rate: object  # callable(t) -> expected calls per second at epoch second t
    tout_sigma: float = 1.0  # spread of ln(output tokens) of its calls (where a template change can be seen)

    @property
    def key(self) -> str:
        return self.attribution["api_key"]

    def scopes(self, models=None) -> set[tuple[str, str]]:
        a = self.attribution
        out = {(d, a[d]) for d in ("team", "project", "user", "api_key", "feature")}
        return out | {("model", m) for m in (models or self.models)}


@dataclass
class Incident:
    kind: str
    start: int
    end: int
    actors: list[Actor]
    allowed: tuple[str, ...]
    params: dict
    scopes: set
    description: str
    record: dict = field(default_factory=dict)
    affected_at: list = field(default_factory=list)

    def label(self) -> dict:
        return {"kind": self.kind, "start": self.start, "end": self.end, "allowed": list(self.allowed),
                "scopes": sorted(self.scopes), "description": self.description, "affected": 0,
                "first_affected": None, "affected_first_15m": 0, "output_multiplier": self.params.get("tout_mult"),
                "hostable": self.params.get("hostable", True)}

    def touched(self, t: float) -> None:
        self.record["affected"] += 1
        if len(self.affected_at) < 5000:
            self.affected_at.append(t)

    def finish(self) -> None:
        if self.affected_at:
            first = min(self.affected_at)
            self.record["first_affected"] = first
            self.record["affected_first_15m"] = sum(1 for t in self.affected_at if t < first + 900)
            self.record["affected_busiest_hour"] = busiest_hour(self.affected_at)
            self.record["affected_busiest_15m"] = busiest_hour(self.affected_at, 900)
            self.record["first_changed_at"] = sorted(self.affected_at)[:10]  # when a rule's evidence was complete


def busiest_hour(times: list[float], window_s: int = 3600) -> int:
    """The most changed calls within any 60 minutes (what a rule that gathers an hour of evidence can see), or within
    any `window_s`."""
    ordered, most, lo = sorted(times), 0, 0
    for hi, t in enumerate(ordered):
        while ordered[lo] <= t - window_s:
            lo += 1
        most = max(most, hi - lo + 1)
    return most


def _busy_time(rng: random.Random, actors: list[Actor], lo: int, hi: int, min_calls_per_bucket: float) -> int:
    """A start time (minute) at which the actors together expect at least `min_calls_per_bucket` calls."""
    best, best_rate = lo, -1.0
    for _ in range(400):
        t = rng.randrange(lo, hi, 60)
        rate = sum(a.rate(t) for a in actors) * BUCKET
        if rate >= min_calls_per_bucket:
            return t
        if rate > best_rate:
            best, best_rate = t, rate
    return best


def plan(rng: random.Random, actors: list[Actor], start: int, days: int, per_kind: int,
         first_day: int = 3) -> list[Incident]:
    """`per_kind` incidents of each of the eight kinds between `first_day` and the end, not overlapping on a scope."""
    lo, hi = start + first_day * 86400, start + days * 86400 - 6 * 3600
    plans: list[Incident] = []
    by_feature: dict[str, list[Actor]] = {}
    by_team: dict[str, list[Actor]] = {}
    for a in actors:
        by_feature.setdefault(a.attribution["feature"], []).append(a)
        by_team.setdefault(a.attribution["team"], []).append(a)
    used_models = {m for a in actors for m in a.models}
    new_pairs: set[tuple[str, str]] = set()
    cheap = min(PRICES, key=lambda m: sum(PRICES[m]))
    hosts = TemplateHosting(by_feature, TEMPLATE_MULT, start, start + days * 86400, lo, hi)
    shift_hosts = ShiftHosting(by_team, SHIFT_SHARE, lo, hi)
    # plans' index of a template change or a model shift -> (its placement rule, where it was placed: hosting.py)
    placed: dict[int, tuple] = {}
    for n in range(per_kind):
        a = rng.choice(actors)
        t0 = rng.randrange(lo, hi, 60)
        typical = max(a.rate(t0), 1 / 600)
        plans.append(Incident("spend_rate", t0, t0 + rng.randrange(30, 120) * 60, [a],
                              ("spend_rate", "token_rate", "request_burst", "tokens_per_request"),
                              {"extra_rps": max(12 * typical, 0.15), "tin_mult": 3.0}, a.scopes(),
                              f"runaway agent loop on {a.key}"))
        a = rng.choice(actors)
        t0 = rng.randrange(lo, hi, 60)
        plans.append(Incident("token_rate", t0, t0 + rng.randrange(30, 90) * 60, [a],
                              ("token_rate", "spend_rate", "request_burst", "tokens_per_request", "new_model",
                               "model_shift"), {"extra_rps": 0.05, "extra_model": cheap, "tin": 90_000, "tout": 200},
                              a.scopes() | {("model", cheap)}, f"token explosion: 90k-token prompts from {a.key}"))
        feature = rng.choice(sorted(by_feature))
        t0 = _busy_time(rng, by_feature[feature], lo, hi, 20)
        hosting = hosts.check(feature, t0)
        if not hosting.hosts:  # its own rng: the other kinds' draws stay what they were
            hosting = hosts.relocate(random.Random(f"{feature}:{t0}"), feature)
        feature, t0, group = hosting.feature, hosting.start, by_feature[hosting.feature]
        placed[len(plans)] = (hosts, hosting)
        plans.append(Incident("tokens_per_request", t0, t0 + rng.randrange(120, 300) * 60, group,
                              ("tokens_per_request", "token_rate", "spend_rate"), {"tout_mult": TEMPLATE_MULT, "tin_mult": 1.0},
                              set().union(*(x.scopes() for x in group)),
                              f"template change on feature {feature}" + ("" if hosting.hosts else hosting.note())))
        a = rng.choice(actors)
        t0 = rng.randrange(lo, hi, 60)
        plans.append(Incident("request_burst", t0, t0 + rng.randrange(20, 60) * 60, [a],
                              ("request_burst", "spend_rate", "token_rate", "tokens_per_request"),
                              {"extra_rps": rng.uniform(1, 3), "extra_model": min(a.models, key=lambda m: sum(PRICES[m])),
                               "tin": 150, "tout": 40}, a.scopes(), f"leaked key {a.key}"))
        for _ in range(50):  # a model already brought to this key by an earlier incident is not new any more
            a = rng.choice(actors)
            fresh = sorted(m for m in PRICES if m not in used_models and m not in PREMIUM and m != cheap
                           and (a.key, m) not in new_pairs)  # the token explosions' model is not new either
            if fresh:
                break
        model = rng.choice(fresh or ["deepseek-chat"])
        new_pairs.add((a.key, model))
        t0 = _busy_time(rng, [a], lo, hi, 3)
        plans.append(Incident("new_model", t0, t0 + rng.randrange(60, 180) * 60, [a],
                              ("new_model", "model_shift", "spend_rate", "token_rate"), {"new_model": model, "share": 0.5,
                               "min_extra_rps": 0.01}, a.scopes() | {("model", model)}, f"{a.key} starts using {model}"))
        a = rng.choice(actors)
        t0 = _busy_time(rng, [a], lo, hi, 8)
        plans.append(Incident("error_rate", t0, t0 + rng.randrange(20, 90) * 60, [a], ("error_rate",),
                              {"error_p": rng.uniform(0.6, 1.0)}, a.scopes(), f"error storm on {a.key}"))
        team = rng.choice(sorted(by_team))
        group = by_team[team]
        pricey = rng.choice(PREMIUM)
        t0 = _busy_time(rng, group, lo, hi, 20)  # (the old draw: kept when it hosts, and for the draws after it)
        hosting = shift_hosts.check(team, t0)
        if not hosting.hosts:  # its own rng: the other kinds' draws stay what they were
            hosting = shift_hosts.relocate(random.Random(f"model_shift:{team}:{t0}"), team)
        team, t0, group = hosting.group, hosting.start, by_team[hosting.group]
        placed[len(plans)] = (shift_hosts, hosting)
        plans.append(Incident("model_shift", t0, t0 + rng.randrange(120, 480) * 60, group,
                              ("model_shift", "spend_rate", "new_model", "token_rate"),
                              {"model": pricey, "share": SHIFT_SHARE}, set().union(*(x.scopes() for x in group))
                              | {("model", pricey)},
                              f"team {team} switches to premium {pricey}" + ("" if hosting.hosts else hosting.note())))
        a = rng.choice(actors)
        unknown = f"acme-internal-llm-v{n + 2}"
        t0 = rng.randrange(lo, hi, 60)
        plans.append(Incident("unpriced_usage", t0, t0 + rng.randrange(30, 120) * 60, [a],
                              ("unpriced_usage", "new_model", "token_rate", "request_burst"),
                              {"extra_rps": rng.uniform(0.02, 0.08), "extra_model": unknown, "tin": 1500, "tout": 400,
                               "unpriced": True}, a.scopes() | {("model", unknown)}, f"{a.key} calls unpriced {unknown}"))
    _separate(plans, start, days, first_day,
              lambda i, inc: i not in placed or placed[i][0].still_fits(placed[i][1], inc.start))
    for i, (rule, hosting) in placed.items():
        final = rule.check(hosting.group, plans[i].start)
        plans[i].params["hostable"] = final.hosts
        if not rule.still_fits(hosting, plans[i].start):  # no free day kept it where it was placed
            where = "every hosting start" if hosting.hosts else "the family's busiest starts"
            plans[i].description += final.note(f"moved by whole days off {where} by the no-overlap rule:")
    for inc in plans:
        inc.record = inc.label()
    return plans


def _separate(plans: list[Incident], start: int, days: int, first_day: int, fits=lambda i, inc: True) -> None:
    """No two incidents on shared scopes overlap (with an hour between): move the later one by whole days, to the
    first day where it `fits` (a template change, a model shift: still hosted, hosting.py), else to the first free one."""
    for i, inc in enumerate(plans):
        first_free = None
        for _ in range(days):
            clash = any(o.scopes & inc.scopes and o.start < inc.end + 3600 and inc.start < o.end + 3600
                        for o in plans[:i])
            if not clash:
                if fits(i, inc):
                    break
                first_free = first_free or (inc.start, inc.end)
            step = 86400 if inc.end + 86400 < start + days * 86400 else -(days - first_day - 1) * 86400
            inc.start += step
            inc.end += step
        else:
            if first_free:
                inc.start, inc.end = first_free


def overlay(batch: list[dict], bucket: int, incidents: list[Incident], rng: random.Random, counter: list[int]) -> list[dict]:
    """Apply the incidents active in [bucket, bucket + 300) to one batch of clean events (in place) and add the
    calls they bring. `counter` numbers the added events."""
    active = [inc for inc in incidents if inc.start < bucket + BUCKET and inc.end > bucket]
    if not active:
        return batch
    by_key: dict[str, list[Incident]] = {}
    for inc in active:
        for a in inc.actors:
            by_key.setdefault(a.key, []).append(inc)
    for e in batch:
        mine = by_key.get(e["attribution"]["api_key"])
        if not mine:
            continue
        t = _epoch_of(e["ts"])
        for inc in mine:
            if not inc.start <= t < inc.end:
                continue
            p = inc.params
            usage = e["usage"]
            if inc.kind == "tokens_per_request" and e["status"] == "ok":
                usage["output_tokens"] = int(usage["output_tokens"] * p["tout_mult"])
                e["cost_usd"] = cost_str(e["model"], usage["input_tokens"], usage["output_tokens"])
                inc.touched(t)
            elif inc.kind in ("new_model", "model_shift") and rng.random() < p["share"]:
                e["model"] = p.get("new_model") or p["model"]
                if e["status"] == "ok":
                    e["cost_usd"] = cost_str(e["model"], usage["input_tokens"], usage["output_tokens"])
                inc.touched(t)
            elif inc.kind == "error_rate" and e["status"] == "ok" and rng.random() < p["error_p"]:
                e.update(status="error", cost_usd="0.000000000000", usage={"input_tokens": 0, "output_tokens": 0})
                inc.touched(t)
    extra = []
    for inc in active:
        p = inc.params
        rate = p.get("extra_rps") or (p.get("min_extra_rps", 0) * (inc.kind == "new_model"))
        if not rate:
            continue
        a = inc.actors[0]
        lo, hi = max(bucket, inc.start), min(bucket + BUCKET, inc.end)
        count = _poisson(rng, rate * (hi - lo))
        for _ in range(count):
            t = rng.randrange(lo, hi)
            counter[0] += 1
            if inc.kind == "spend_rate":
                model = rng.choices(list(a.models), list(a.models.values()))[0]
                tin = int(rng.lognormvariate(math.log(a.tin * p["tin_mult"]), 0.5))
                tout = int(rng.lognormvariate(math.log(a.tout), 0.5))
            elif inc.kind == "new_model":
                model, tin, tout = p["new_model"], int(a.tin), int(a.tout)
            else:
                model = p["extra_model"]
                tin = int(rng.lognormvariate(math.log(p["tin"]), 0.3))
                tout = int(rng.lognormvariate(math.log(p["tout"]), 0.3))
            extra.append(priced_event(f"inc-{counter[0]}", t, a.attribution, model, tin, tout,
                                      unpriced=p.get("unpriced", False), source="incident"))
            inc.touched(t)
    return batch + extra


def _poisson(rng: random.Random, lam: float) -> int:
    if lam > 50:
        return max(0, int(rng.gauss(lam, math.sqrt(lam)) + 0.5))
    k, p, limit = 0, 1.0, math.exp(-lam)
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


_MINUTES: dict[str, int] = {}


def _epoch_of(ts: str) -> int:
    from datetime import datetime

    prefix = ts[:16]
    minute = _MINUTES.get(prefix)
    if minute is None:
        if len(_MINUTES) > 50000:
            _MINUTES.clear()
        minute = _MINUTES[prefix] = int(datetime.fromisoformat(prefix + ":00+00:00").timestamp())
    return minute + int(ts[17:19])
