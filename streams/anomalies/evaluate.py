"""Measure the detectors on a labelled synthetic month (synthetic.py): precision, recall and detection delay per
kind, events/s of `AnomalyEngine.observe`, and the cold start of a fresh team.

Matching: a detection (one anomaly id) is a true positive when an injection overlaps it in time (the anomaly starts
between one bucket before the onset and one bucket after the injection's end), touched its scope, and lists its kind among the
kinds that injection legitimately causes. An injection of kind K is recalled when a detection of kind K on one of
its scopes matches it; the delay is that detection's first `detected_at` minus the observable onset (the time
of the first call the injection changed: a key revoked at 3 a.m. is observable at its first failing call).
An injection that changed fewer than `MIN_EVIDENCE` calls (one for new_model and unpriced_usage) in the first
15 minutes after that onset (a model
outage at night with one call every few minutes) cannot be detected within the 15-minute target by anyone: it
is reported as `unobservable` and left out of recall (its detections still count for precision). An error storm is
also unobservable when its failures in those 15 minutes are fewer than the error rule's own bar asks of its key, even
all in a row (error_evidence.py: 6 on a key that usually fails more than 3.98 % of its calls); the report names them.

Families: the project's own month (synthetic.py) and two independently shaped ones, `sparse` (sparse.py: quiet
keys, heavy-tailed token sizes, rare premium calls) and `office` (office.py: three time zones, a nightly batch job,
weekly and monthly reporting runs, benign surprises), whose incidents come from incidents.py. Each family is also
run without any incident (`quiet_days`, after the same warm-up) to count the alerts nobody wanted: false alerts per
100 active scope-days (a scope is active on a day when it made at least one call).
"""

from __future__ import annotations

import math
import statistics
import time
from datetime import datetime

from .detectors import KINDS, Config
from .engine import AnomalyEngine
from . import office, sparse, synthetic
from .aggregate import SCOPE_DIMS
from .synthetic import BUCKET
from .error_evidence import ErrorShare
# Changed calls in the first 15 minutes below which an injection is unobservable (placement uses them too).
from .hosting import MIN_EVIDENCE, MIN_EVIDENCE_KIND
from .optimal_test import BUDGET_DAYS, calls_needed, optimal_cusum_calls  # noqa: F401 (evaluate's names)
from .output_spread import OutputSpread  # noqa: F401 (tests import it from here)

FAMILIES = {"synthetic": synthetic.generate, "sparse": sparse.generate, "office": office.generate}
TARGETS = {"precision": 0.8, "recall": 0.9, "median_delay_s": 900, "false_alerts_per_100_scope_days": 1.0}


# What a kind's rule needs before it may speak, as (changed calls within an hour, what). A missed injection below it is
# still counted as missed (recall is not shrunk); the report says how many misses never reached it, and by how much.
# (new_model: the team's rule, the least any scope needs; a key or user whose team knows the model needs 3.)
RULE_EVIDENCE = {"new_model": (Config.new_model_team_min_calls, "calls of a model new to its team within an hour"),
                 "error_rate": (Config.error_min_errors, "failed calls")}
# A model shift whose changed calls all come from one API key (a team of one job key) opens at once only with
# `shift_session_calls` such calls within 15 minutes (the takeover rule's session guard: one key's premium session is
# not a shift); the cost-per-token rule needs two anomalous buckets, which a job ending minutes after the onset never
# gives (office seed 34: finance's close run, 29 changed calls in its last 3 minutes).
ONE_KEY_SHIFT_EVIDENCE = (Config.shift_session_calls, "calls of one API key on a model it rarely uses within 15 minutes")


# Kinds incidents.py places where their group can host them (hosting.py): per kind, the group and what hosting means, as
# the report names them. A template change's count lives in its detectability (its optimal test); a model shift's, on
# the kind, over all its incidents (scored or unobservable).
HOST_GROUPS = {"tokens_per_request": ("feature", "the optimal test finds"),
               "model_shift": ("team", "the model shift rules can see")}


def _unhosted_line(kind: str, unhosted: int, of: int) -> str:
    group, what = HOST_GROUPS[kind]
    return (f"{kind}: NO {group.upper()} of this family can host a change that {what} within 15 minutes (expected "
            f"calls, with margin): {unhosted} of {of} were placed at its busiest starts instead")


def _below_rule_evidence(lab: dict) -> int | None:
    """The changed calls a missed injection gave its rule when that is less than the rule needs, else None."""
    kind = lab["kind"]
    if kind in RULE_EVIDENCE:
        busiest = lab.get("affected_busiest_hour", 0)
        return busiest if busiest < RULE_EVIDENCE[kind][0] else None
    if kind == "model_shift" and sum(1 for dim, _ in lab["scopes"] if dim == "api_key") == 1:
        busiest = lab.get("affected_busiest_15m", 0)
        return busiest if busiest < ONE_KEY_SHIFT_EVIDENCE[0] else None
    return None


def _rule_needed(lab: dict) -> int:
    """The changed calls a kind's rule needs for this injection (an error storm's: at its key's usual share)."""
    return (lab.get("error_evidence") or {}).get("failures_needed") or RULE_EVIDENCE[lab["kind"]][0]


def _min_evidence(lab: dict) -> int:
    """Changed calls in the first 15 minutes below which the injection is unobservable."""
    least = MIN_EVIDENCE_KIND.get(lab["kind"], MIN_EVIDENCE)
    return max(least, _rule_needed(lab)) if lab["kind"] == "error_rate" else least


def _evidence_needed(kind: str) -> tuple[int, str]:
    return RULE_EVIDENCE.get(kind) or ONE_KEY_SHIFT_EVIDENCE


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def by_minute(batch: list[dict]) -> list[list[dict]]:
    """A batch cut into its UTC minutes, in time order (each minute keeps its events' order)."""
    minutes: dict[str, list[dict]] = {}
    for event in batch:
        ts = event.get("ts")
        minutes.setdefault(ts[:16] if isinstance(ts, str) else "", []).append(event)
    return [minutes[m] for m in sorted(minutes)]


def run_month(seed: int, days: int, per_kind: int, config: Config | None = None, family: str = "synthetic",
              count_scopes: bool = False):
    batches, labels, facts = FAMILIES[family](seed, days, per_kind)
    engine = AnomalyEngine(config)
    first: dict[str, dict] = {}
    last: dict[str, dict] = {}
    spent, events, alerts, pages = 0.0, 0, 0, 0
    alerted: list[dict] = []
    active_days: set = set()  # (day, dim, value) with at least one call
    spread = OutputSpread(labels, facts["start"])
    shares = ErrorShare(labels, config or Config())
    for batch in batches:
        events += len(batch)
        if spread.cutoff:
            spread.add(batch)
        if shares.cutoff:
            shares.add(batch)
        if count_scopes:
            for e in batch:
                day, a = e["ts"][:10], e["attribution"]
                for dim in SCOPE_DIMS:
                    value = e["model"] if dim == "model" else a.get(dim)
                    if value:
                        active_days.add((day, dim, value))
        t0 = time.perf_counter()
        updates = []
        for minute in by_minute(batch):
            # Minute by minute, as a live consumer reads them (polls of well under a minute): the early checks
            # (early.py) see a running bucket as it fills, not only whole 5-minute batches.
            updates += engine.observe(minute, now=facts["end"])
        spent += time.perf_counter() - t0
        for u in updates:
            first.setdefault(u.record["id"], u.record)
            last[u.record["id"]] = u.record
            if u.action == "open" and u.notify:
                alerts += 1
                alerted.append(u.record)
                # a new incident's trigger (kinds.py: a kind on another's page or joining an open incident is not)
                pages += u.incident is None or u.incident["role"] == "page"
    for u in engine.advance_to(facts["end"] + 3600):
        first.setdefault(u.record["id"], u.record)
        last[u.record["id"]] = u.record
    detections = [{**first[i], "end": last[i]["end"], "status": last[i]["status"]} for i in first]
    for lab in labels:
        if lab["kind"] == "tokens_per_request":
            lab["detectability"] = spread.detectability(lab)
        if lab["kind"] == "error_rate":
            lab["error_evidence"] = shares.evidence(lab)
    return detections, labels, facts, {"events": events, "observe_s": spent, "engine": engine, "alerts": alerts,
                                       "pages": pages, "alerted": alerted, "active_scope_days": len(active_days)}


def score(detections: list[dict], labels: list[dict], facts: dict, alerted: set | None = None) -> dict:
    """Per kind: precision over every recorded anomaly (the dashboard shows them all) and, with `alerted` (the ids
    notified on-call when they opened), precision over the alerts alone: what on-call is actually paged with."""
    alerted = alerted or set()
    for lab in labels:
        lab["_scopes"] = {tuple(s) for s in lab["scopes"]}
    per_kind = {k: {"tp": 0, "fp": 0, "alert_tp": 0, "alerts": 0, "delays": [], "injected": 0, "recalled": 0, "fp_examples": [],
                    "unobservable": 0, "detectability": [], "below_rule": [], "evidence_waits": [],
                    "after_evidence": [], "unhosted": 0, "under_bar": []} for k in KINDS}
    for det in detections:
        start, scope = _epoch(det["start"]), (det["scope_dim"], det["scope_value"])
        hit = any(det["kind"] in lab["allowed"] and scope in lab["_scopes"]
                  and lab["start"] - BUCKET <= start <= lab["end"] + BUCKET for lab in labels)
        bucket = per_kind[det["kind"]]
        if det.get("id") in alerted:
            bucket["alerts"] += 1
            bucket["alert_tp"] += hit
        if hit:
            bucket["tp"] += 1
        else:
            bucket["fp"] += 1
            if len(bucket["fp_examples"]) < 5:
                bucket["fp_examples"].append(f"{det['start']} {det['scope_dim']}={det['scope_value']}: {det['explanation']}")
    for lab in labels:
        bucket = per_kind[lab["kind"]]
        bucket["unhosted"] += not lab.get("hostable", True)
        if lab["affected_first_15m"] < _min_evidence(lab):
            bucket["unobservable"] += 1
            if lab["affected_first_15m"] >= MIN_EVIDENCE_KIND.get(lab["kind"], MIN_EVIDENCE):
                ev = lab["error_evidence"]  # unobservable by the rule's own bar, not by the count alone: say why
                bucket["under_bar"].append(
                    f"{lab['description']} at {datetime.utcfromtimestamp(lab['start'])}: {lab['affected_first_15m']} "
                    f"failed calls in its first 15 minutes ({lab['affected']} in all); the key failed "
                    f"{ev['errors_before']} of its {ev['calls_before']} calls before it ({ev['usual_share']:.1%}), "
                    f"where {MIN_EVIDENCE} failures in a row happen by chance {ev['chance_of_min_run']:.1e} of the "
                    f"time: the rule's bar ({Config.error_p_value:.0e}) needs {ev['failures_needed']}")
            continue
        odds = lab.get("detectability")
        bucket["injected"] += 1
        found = [_epoch(d["detected_at"]) for d in detections if d["kind"] == lab["kind"]
                 and (d["scope_dim"], d["scope_value"]) in lab["_scopes"]
                 and lab["start"] - BUCKET <= _epoch(d["start"]) <= lab["end"] + BUCKET]
        busiest = lab.get("affected_busiest_hour", 0)
        below = None if found else _below_rule_evidence(lab)
        if below is not None:
            bucket["below_rule"].append(below)
        if not found and len(bucket["fp_examples"]) < 10:
            bucket["fp_examples"].append(f"MISSED {lab['description']} at {datetime.utcfromtimestamp(lab['start'])} "
                                         f"({lab['affected']} changed calls, {lab['affected_first_15m']} in its first "
                                         f"15 minutes, at most {busiest} within an hour)")
        if found:
            bucket["recalled"] += 1
            bucket["delays"].append(max(0.0, min(found) - lab["first_affected"]))
            # The wait for the rule's evidence (its Nth changed call), which no rule needing that evidence avoids,
            # and the detector's own part after it. Reported beside the delay, never instead of it.
            times = lab.get("first_changed_at") or []
            if lab["kind"] in RULE_EVIDENCE and len(times) >= RULE_EVIDENCE[lab["kind"]][0]:
                evidence_at = times[RULE_EVIDENCE[lab["kind"]][0] - 1]
                bucket["evidence_waits"].append(evidence_at - lab["first_affected"])
                bucket["after_evidence"].append(max(0.0, min(found) - evidence_at))
        if odds:
            bucket["detectability"].append({**odds, "description": lab["description"], "found": bool(found),
                                            "delay_s": round(min(found) - lab["first_affected"]) if found else None,
                                            **({} if lab.get("hostable", True) else {"hostable": False})})
    result = {}
    for kind, b in per_kind.items():
        detected = b["tp"] + b["fp"]
        result[kind] = {
            "precision": round(b["tp"] / detected, 3) if detected else 1.0,
            "alert_precision": round(b["alert_tp"] / b["alerts"], 3) if b["alerts"] else 1.0, "alerts": b["alerts"],
            "recall": round(b["recalled"] / b["injected"], 3) if b["injected"] else None,
            "median_delay_s": round(statistics.median(b["delays"])) if b["delays"] else None,
            "max_delay_s": round(max(b["delays"])) if b["delays"] else None,
            "injected": b["injected"], "recalled": b["recalled"], "detections": detected,
            "false_positives": b["fp"], "unobservable": b["unobservable"],
            "false_positive_examples": b["fp_examples"],
            # Misses that never gave the rule its evidence (RULE_EVIDENCE): their busiest hour's changed calls.
            "missed_below_rule_evidence": sorted(b["below_rule"]),
        }
        if b["under_bar"]:  # error storms whose key's usual share asks more failures than they had (error_evidence.py)
            result[kind]["unobservable_below_rule_bar"] = b["under_bar"]
        if b["evidence_waits"]:
            result[kind]["median_evidence_wait_s"] = round(statistics.median(b["evidence_waits"]))
            result[kind]["median_delay_after_evidence_s"] = round(statistics.median(b["after_evidence"]))
            result[kind]["found_with_evidence_times"] = len(b["evidence_waits"])
        if b["detectability"]:
            odds = b["detectability"]
            result[kind]["detectability"] = {
                "injections": odds, "detectable_in_15m": sum(o["detectable_in_15m"] for o in odds),
                "detectable": sum(o["detectable"] for o in odds),
                "recalled_of_detectable": sum(o["found"] for o in odds if o["detectable"])}
            # The optimal test on the calls the changes drew (output_spread.py): how fast any test at the budget was.
            best = [o["optimal_test_delay_s"] for o in odds if o.get("optimal_test_delay_s") is not None]
            result[kind]["detectability"].update(
                optimal_test_found=len(best), optimal_test_found_in_15m=sum(d <= 900 for d in best),
                optimal_test_median_delay_s=round(statistics.median(best)) if best else None)
            unhosted = sum(not o.get("hostable", True) for o in odds)
            if unhosted:  # incidents.py found no start on any feature busy enough (template_hosting.py)
                result[kind]["detectability"]["placed_where_no_feature_hosts"] = unhosted
        if kind in HOST_GROUPS and "detectability" not in result[kind] and b["unhosted"]:
            # ... nor on any team busy enough for the model shift rules (shift_hosting.py)
            result[kind][f"placed_where_no_{HOST_GROUPS[kind][0]}_hosts"] = b["unhosted"]
    return result


def cold_start(detections: list[dict], facts: dict) -> dict:
    """Anomalies on a fresh team's own scopes during its first day (the goal: none but absolute-floor kinds)."""
    hits = []
    for fresh in facts["fresh"]:
        scopes = {tuple(s) for s in fresh["scopes"]}
        hits += [d for d in detections if (d["scope_dim"], d["scope_value"]) in scopes
                 and fresh["start"] <= _epoch(d["start"]) < fresh["start"] + 86400]
    return {"fresh_clients": len(facts["fresh"]), "anomalies_first_day": len(hits),
            "kinds": sorted({d["kind"] for d in hits})}


def quiet_run(seed: int, days: int, config: Config | None = None, family: str = "synthetic") -> dict:
    """The family without incidents: every alert is a false one. Per kind and overall, per 100 active scope-days."""
    _, _, _, run = run_month(seed, days, 0, config, family, count_scopes=True)
    per_kind = {k: 0 for k in KINDS}
    for record in run["alerted"]:
        per_kind[record["kind"]] += 1
    scope_days = run["active_scope_days"] or 1
    return {"days": days, "events": run["events"], "active_scope_days": run["active_scope_days"],
            "false_alerts": len(run["alerted"]), "false_pages": run["pages"],
            "per_100_scope_days": round(100 * len(run["alerted"]) / scope_days, 3),
            "per_kind_per_100_scope_days": {k: round(100 * v / scope_days, 3) for k, v in per_kind.items()},
            "examples": [f"{r['start']} {r['kind']} {r['scope_dim']}={r['scope_value']}: {r['explanation']}"
                         for r in run["alerted"][:10]]}


def evaluate(seed: int = 8, days: int = 30, per_kind: int = 10, config: Config | None = None,
             family: str = "synthetic", quiet_days: int = 0) -> dict:
    t0 = time.perf_counter()
    detections, labels, facts, run = run_month(seed, days, per_kind, config, family)
    kinds = score(detections, labels, facts, {r["id"] for r in run["alerted"]})
    engine = run["engine"]
    quiet = quiet_run(seed, quiet_days, config, family) if quiet_days else None
    if quiet:
        for kind, figures in kinds.items():
            figures["false_alerts_per_100_scope_days"] = quiet["per_kind_per_100_scope_days"][kind]
    return {
        "family": family, "seed": seed, "days": days, "events": run["events"], "injections": len(labels),
        "observe_events_per_s": round(run["events"] / run["observe_s"]) if run["observe_s"] else None,
        "wall_s": round(time.perf_counter() - t0, 1), "anomalies": len(detections), "alerts": run["alerts"],
        "pages": run["pages"],
        "scopes": len(engine.scopes), "cold_start": cold_start(detections, facts), "kinds": kinds,
        "quiet": quiet,
        "targets_met": all((k["recall"] is None or k["recall"] >= TARGETS["recall"])
                           and k["alert_precision"] >= TARGETS["precision"]
                           and (k["median_delay_s"] is None or k["median_delay_s"] <= TARGETS["median_delay_s"])
                           for k in kinds.values())
                       and (quiet is None or quiet["per_100_scope_days"] <= TARGETS["false_alerts_per_100_scope_days"]),
    }


def format_table(result: dict) -> str:
    quiet = result.get("quiet")
    lines = [f"family {result.get('family', 'synthetic')}:",
             "| kind | precision | recall | median delay | max delay | injected (unobservable) | detections |"
             " alerted | precision of alerts |" + (" false alerts / 100 scope-days |" if quiet else ""),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if quiet else "")]
    for kind, k in result["kinds"].items():
        delay = "n/a" if k["median_delay_s"] is None else f"{k['median_delay_s'] / 60:.1f} min"
        worst = "n/a" if k["max_delay_s"] is None else f"{k['max_delay_s'] / 60:.1f} min"
        recall = "n/a" if k["recall"] is None else f"{k['recall']:.2f}"
        injected = f"{k['injected']} ({k['unobservable']})" if k["unobservable"] else str(k["injected"])
        fa = f" {k['false_alerts_per_100_scope_days']:.2f} |" if quiet else ""
        lines.append(f"| {kind} | {k['precision']:.2f} | {recall} | {delay} | {worst} | {injected} | {k['detections']} | "
                     f"{k.get('alerts', 0)} | {k.get('alert_precision', k['precision']):.2f} |{fa}")
    cold = result["cold_start"]
    for kind, k in result["kinds"].items():
        odds = k.get("detectability")
        if odds:
            lines.append("")
            lines.append(f"{kind}, detectability at the false-alert budget (changed calls an optimal sequential test "
                         f"needs, vs the calls each change touched; counted in recall all the same): "
                         f"{odds['detectable_in_15m']} of {len(odds['injections'])} detectable within 15 minutes, "
                         f"{odds['detectable']} at all, {odds['recalled_of_detectable']} of those found")
            if odds.get("optimal_test_median_delay_s") is not None:
                lines.append(f"the optimal test on the changed calls themselves (judged after every call): found "
                             f"{odds['optimal_test_found']} of {len(odds['injections'])}, "
                             f"{odds['optimal_test_found_in_15m']} within 15 minutes, median "
                             f"{odds['optimal_test_median_delay_s'] / 60:.1f} min after the first changed call")
            if odds.get("placed_where_no_feature_hosts"):
                lines.append(_unhosted_line(kind, odds["placed_where_no_feature_hosts"], len(odds["injections"])))
            for o in odds["injections"]:
                found = f"found after {o['delay_s'] / 60:.0f} min" if o["found"] else "missed"
                lines.append(f"- {o['description']}: needs ~{o['calls_needed']} changed calls (shift "
                             f"{o['shift_sd']:.2f} sd per call, {o['calls_per_day']:.0f} calls/day); changed "
                             f"{o['changed_first_15m']} in its first 15 min, {o['changed']} in all; {found}"
                             + (f"; the optimal test on its calls: after {o['optimal_test_calls']}, "
                                f"{o['optimal_test_delay_s'] / 60:.0f} min" if o.get("optimal_test_calls") else ""))
    lines.append("")
    for kind, k in result["kinds"].items():
        unhosted = k.get(f"placed_where_no_{HOST_GROUPS[kind][0]}_hosts") if kind in HOST_GROUPS else None
        if unhosted:  # of all its incidents, scored or not
            lines.append(_unhosted_line(kind, unhosted, k["injected"] + k["unobservable"]))
    for kind, k in result["kinds"].items():
        below = k.get("missed_below_rule_evidence")
        if below:
            needed, what = _evidence_needed(kind)
            lines.append(f"{kind}: {len(below)} of {k['injected'] - k['recalled']} misses never reached the rule's "
                         f"evidence (>= {needed} {what}; they had {', '.join(map(str, below))}); counted as missed")
    for kind, k in result["kinds"].items():
        for line in k.get("unobservable_below_rule_bar", []):
            lines.append(f"{kind}: UNOBSERVABLE by the rule's own bar: {line}")
    for kind, k in result["kinds"].items():
        if "median_evidence_wait_s" in k:
            needed, what = RULE_EVIDENCE[kind]
            lines.append(f"{kind}: the rule's evidence (>= {needed} {what.split(' within')[0]}) came a median "
                         f"{k['median_evidence_wait_s'] / 60:.1f} min after the first changed call "
                         f"({k['found_with_evidence_times']} found); found a median "
                         f"{k['median_delay_after_evidence_s'] / 60:.1f} min after it")
    if quiet:
        lines.append(f"incident-free run: {quiet['days']} days, {quiet['events']:,} events, "
                     f"{quiet['active_scope_days']:,} active scope-days, {quiet['false_alerts']} alerts = "
                     f"{quiet['per_100_scope_days']:.2f} per 100 active scope-days")
    lines.append(f"seed {result['seed']}, {result['days']} days, {result['events']:,} events, {result['injections']} "
                 f"injected anomalies, {result['anomalies']} detected ({result.get('alerts', 0)} alerted, the rest explained "
                 f"by a narrower scope); observe(): {result['observe_events_per_s']:,} "
                 f"events/s; fresh team's first day: {cold['anomalies_first_day']} anomalies "
                 f"{cold['kinds'] or ''}; targets met: {'yes' if result['targets_met'] else 'NO'}")
    return "\n".join(lines)
