"""Alert gating: an anomaly's lifecycle (streaks before it opens, extend, close) and which openings are alerted
(one incident, one alert: a narrower open anomaly, a team's usual model, one quiet key's busy stretch explain a
broader one), and the public record of an anomaly."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone

from .aggregate import COST, TIN, TOUT
from .detectors import Verdict, explain, severity
from .kinds import KindIncidents
from .scope_state import ScopeState

UNITS = {"spend_rate": "usd_per_hour", "token_rate": "tokens_per_hour", "request_burst": "requests_per_hour",
         "tokens_per_request": "tokens_per_request", "error_rate": "error_ratio", "model_shift": "usd_per_1k_tokens",
         "new_model": "usd_per_hour", "unpriced_usage": "unpriced_tokens_per_hour"}
# One incident shows on several scopes (a key's loop is also its user's, team's and model's spend anomaly). A broader
# scope's anomaly is recorded but not alerted when an open anomaly of the same kind on a narrower scope that shares
# its traffic explains it (for volumes: at least half of its excess).
SPECIFICITY = {"api_key": 0, "user": 1, "feature": 2, "project": 3, "team": 4, "model": 5}
RAW_INDEX = {"team": 1, "project": 2, "user": 3, "api_key": 4, "feature": 5, "model": 6}  # positions in a raw key
VOLUME_KINDS = ("spend_rate", "token_rate", "request_burst", "unpriced_usage")
SUSTAINED_KINDS = ("spend_rate", "token_rate")
# Kinds whose anomaly on a narrower scope, opening after an alerted one of the same kind on a broader scope sharing its
# traffic, is recorded, not alerted: an error share is not additive, so a key's storm seen first on its team is one
# incident. (Volume kinds are not: a second key's loop under a team that is already spending is news.)
LATER_NARROWER_EXPLAINED = ("error_rate",)
# Scopes whose tokens-per-request anomalies join an alerted template change of their feature (`_template_incident`).
TEMPLATE_DIMS = ("api_key", "user", "feature")
# What an explained (not alerted) anomaly says about why (`_public`), taken over along a chain (`_end_chains`); an
# explanation with one of the marks ENDS_A_CHAIN names no explained scope (a key within its range, a team's usual
# model, an alerted template change or model shift).
ENDS_A_CHAIN = ("_quiet_key", "_team_model", "_template", "_incident")
EXPLANATION_FIELDS = ("_explained_by", *ENDS_A_CHAIN)


def iso_epoch(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass
class AnomalyUpdate:
    action: str  # "open" (new anomaly: alert trigger), "update" (still ongoing, later end), "close" (resolve)
    record: dict  # anomaly record per tokenmeter/records.py
    notify: bool = True  # False: explained by a narrower anomaly of the same kind, recorded but not alerted
    # How an alerted anomaly reaches on-call when several kinds open on one scope (kinds.py, oncall24): None (its own
    # trigger and resolve, as before), or {"id": the incident's (first anomaly's) id, "role": "page" (the trigger,
    # listing "kinds" / "records" opened with it), "on_page" (listed on another's page), "join" (a later kind: a
    # trigger on the incident's dedup_key, which PagerDuty folds into the open incident), "held" (closed, others of
    # the incident still open: no resolve yet) or "resolve" (the last one closed: the incident's resolve)}.
    incident: dict | None = None
    # The teams whose traffic the scope carried in the bucket that opened the anomaly (its alerts name them: a key's
    # or a model's scope says nothing of whose it is; anom32). Kept on the anomaly, so the resolve names them too.
    teams: tuple[str, ...] = ()



class AlertGating(KindIncidents):
    """Mixin of AnomalyEngine (uses `self.cfg`, `self.scopes`, `self.stats`, `self._now`, `self._opened`)."""

    # Lifecycle -----------------------------------------------------------------------------------------------
    def _track(self, st: ScopeState, kind_key: str, kind: str, v: Verdict | None, bucket: int,
               updates: list[AnomalyUpdate], label: str, exact: str | None = None) -> None:
        cfg = self.cfg
        current = st.open.get(kind_key)
        firing = v is not None and v.state in ("strong", "anomalous")
        if current is not None:
            if firing:
                current["_normal"] = 0
                current["end"] = iso_epoch(bucket + cfg.bucket_s)
                if v.observed >= current["_peak"]:
                    self._fill(current, kind, v, label, exact)
                current["detected_at"] = iso_epoch(self._now)
                update = AnomalyUpdate("update", self._public(current))
                updates.append(update)
                self._extended.append((update, current))
            elif v is not None and v.state == "elevated":
                current["_normal"] = 0
            else:
                current["_normal"] += 1
                if current["_normal"] >= cfg.close_after:
                    self._finish(st, kind_key, updates)
            return
        if not firing:
            st.streaks.pop(kind_key, None)
            return
        streak = st.streaks.setdefault(kind_key, [0, bucket])
        streak[0] += 1
        needed = v.after or (cfg.sustained_after if kind in SUSTAINED_KINDS else cfg.open_after)
        if v.state != "strong" and streak[0] < needed:
            return
        start = st.streaks.pop(kind_key)[1]
        digest = hashlib.sha256(f"{kind_key}|{st.dim}={st.value}|{start}".encode()).hexdigest()[:32]
        anomaly = {"id": f"anomaly-{digest}", "kind": kind, "scope_dim": st.dim, "scope_value": st.value,
                   "start": iso_epoch(start), "end": iso_epoch(bucket + cfg.bucket_s), "status": "open",
                   "detected_at": iso_epoch(self._now), "_normal": 0, "_peak": -1.0}
        self._fill(anomaly, kind, v, label, exact)
        st.open[kind_key] = anomaly
        self.stats["anomalies_opened"] += 1
        update = AnomalyUpdate("open", self._public(anomaly))
        updates.append(update)
        self._opened.append((st, kind_key, anomaly, update))

    def _finish(self, st: ScopeState, kind_key: str, updates: list[AnomalyUpdate]) -> None:
        anomaly = st.open.pop(kind_key)
        anomaly["status"] = "closed"
        anomaly["detected_at"] = iso_epoch(self._now)
        self.stats["anomalies_closed"] += 1
        updates.append(AnomalyUpdate("close", self._public(anomaly), notify=not anomaly.get("_explained_by"),
                                     incident=self._incident_close(st, anomaly),
                                     teams=tuple(anomaly.get("_teams", ()))))

    def _restate(self) -> None:
        """The records of this bucket close that extend an anomaly opened before were written at their scope's step,
        before the gating of the anomalies this close opened, which may change what they say (a key paging now:
        `_quiet_key_pages`). Written again now, so that the records of one detection tell one story: walk36's feature
        agent-loop said "within that key's own usual range (not alerted)" in the very detection its key paged in."""
        for update, anomaly in self._extended:
            update.record = self._public(anomaly)

    def _explain(self, raw: dict) -> None:
        """Mark anomalies opened in this bucket that a narrower open anomaly of the same kind explains."""
        for st, _kind_key, anomaly, update in self._opened:
            anomaly["_teams"] = self._teams_of(st, raw)
            update.teams = tuple(anomaly["_teams"])
        shifts = [o for o in self._opened if o[2]["kind"] == "model_shift"]
        if shifts:
            self._explain_shifts(sorted(shifts, key=lambda o: (SPECIFICITY[o[0].dim], o[0].value)), raw)
        for st, kind_key, anomaly, update in self._opened:
            if anomaly["kind"] == "model_shift":
                continue  # (above)
            if anomaly["kind"] == "new_model" and st.dim != "team":
                alerted = self._team_reported(st, kind_key.split(":", 1)[1], raw)
                if alerted is not None:
                    anomaly["_explained_by"] = alerted
                    update.notify = False
                    update.record = self._public(anomaly)
                    self.stats["anomalies_explained"] += 1
                    continue
                team = self._team_uses(st, kind_key.split(":", 1)[1], raw)
                if team is not None:
                    anomaly["_explained_by"], anomaly["_team_model"] = f"team {team}", True
                    update.notify = False
                    update.record = self._public(anomaly)
                    self.stats["anomalies_explained"] += 1
                    continue
            if anomaly["kind"] in LATER_NARROWER_EXPLAINED:
                broader = self._alerted_broader(st, kind_key, raw)
                if broader is not None:
                    anomaly["_explained_by"] = f"{broader[0]} {broader[1]}"
                    update.notify = False
                    update.record = self._public(anomaly)
                    self.stats["anomalies_explained"] += 1
                    continue
            if SPECIFICITY[st.dim] == 0:
                continue
            index = RAW_INDEX[st.dim]  # this scope's position in a raw aggregate key
            best = self._narrower_open(st, kind_key, anomaly, raw)
            if best is None and anomaly["kind"] in SUSTAINED_KINDS:
                best = self._one_quiet_key(st, anomaly["kind"], kind_key, raw, index)
                if best is not None:
                    anomaly["_quiet_key"] = True
            if best is not None:
                anomaly["_explained_by"] = f"{best[0]} {best[1]}"
                update.notify = False
                update.record = self._public(anomaly)
                self.stats["anomalies_explained"] += 1
        for st, kind_key, anomaly, update in self._opened:
            if anomaly["kind"] == "tokens_per_request" and st.dim in TEMPLATE_DIMS:
                self._template_incident(st, anomaly, update, raw)
        self._end_chains()
        self._merge_kinds()
        for st, kind_key, anomaly, update in self._opened:
            if st.dim == "api_key" and update.notify and anomaly["kind"] in SUSTAINED_KINDS:
                self._quiet_key_pages(st, kind_key, raw)
            if anomaly["kind"] == "new_model" and update.notify:
                # Alerted: marked on its teams' entry of the model, so that the keys, users and features of those teams
                # reaching their own evidence later are this news, not another one (`_team_reported`).
                index, model = RAW_INDEX[st.dim], kind_key.split(":", 1)[1]
                for team in {key[1] for key in raw if key[index] == st.value}:
                    known = self.scopes.get(("team", team))
                    info = known.models.get(model) if known is not None else None
                    if info is not None:
                        if len(info) < 5:  # (entries of older snapshots)
                            info.extend((0.0, 0.0, None, info[0])[len(info) - 1:])
                        info[3] = [self._now - self._close_lag, f"{st.dim} {st.value}"]

    def _end_chains(self) -> None:
        """An anomaly explained by a narrower one that is itself explained (not alerted) takes that one's explanation:
        "Part of the anomaly of X (alerted there)" names the scope whose anomaly was alerted, the end of the chain.
        walk36 (the demo's search loop): team search and project search-prod opened with the quiet feature agent-loop
        and read "Part of the anomaly of feature agent-loop (alerted there)", while the feature itself said "Mostly
        the traffic of api_key sk-acm-sear-chen, within that key's own usual range (not alerted)": nothing had paged.
        Now all three say the feature's sentence, and when the key pages all three become part of its anomaly
        (`_quiet_key_pages` finds them by the key they name). Run after every rule has marked this detection's
        openings (the template rule marks some only after the narrower-scope rule), narrowest first, so a narrower
        one's explanation is its final one when a broader one reads it."""
        for st, kind_key, anomaly, update in sorted(self._opened, key=lambda o: (SPECIFICITY[o[0].dim], o[0].value)):
            seen = {id(anomaly)}
            while anomaly.get("_explained_by") and not any(anomaly.get(flag) for flag in ENDS_A_CHAIN):
                dim, _, value = anomaly["_explained_by"].partition(" ")
                scope = self.scopes.get((dim, value))
                other = scope.open.get(kind_key) if scope is not None else None
                if other is None or id(other) in seen or not other.get("_explained_by"):
                    break  # (alerted, or no longer open: the chain ends there)
                seen.add(id(other))
                for field in EXPLANATION_FIELDS:
                    if field in other:
                        anomaly[field] = other[field]
                    else:
                        anomaly.pop(field, None)
                update.record = self._public(anomaly)

    def _quiet_key_pages(self, st: ScopeState, kind_key: str, raw: dict) -> None:
        """This key now pages for its own anomaly of the kind: the broader ones opened before as "mostly the traffic
        of" it, "within that key's own usual range", are part of its anomaly from their record of this detection on
        (`_restate`; anom32: the demo's feature agent-loop kept saying so while its key paged at 171x)."""
        mark, index = f"api_key {st.value}", RAW_INDEX["api_key"]
        for key in raw:
            if key[index] != st.value:
                continue
            for dim, i in RAW_INDEX.items():
                other = self.scopes.get((dim, key[i])) if dim != "api_key" and key[i] else None
                broad = other.open.get(kind_key) if other is not None else None
                if broad is not None and broad.get("_quiet_key") and broad.get("_explained_by") == mark:
                    del broad["_quiet_key"]

    @staticmethod
    def _teams_of(st: ScopeState, raw: dict) -> list[str]:
        """The teams of this scope's calls in the bucket (raw keys: bucket, team, ...), sorted; its own for a team."""
        if st.dim == "team":
            return [st.value]
        index = RAW_INDEX[st.dim]
        return sorted({key[1] for key in raw if key[index] == st.value and key[1]})

    def _narrower_open(self, st: ScopeState, kind_key: str, anomaly: dict, raw: dict) -> tuple[str, str] | None:
        """The narrowest scope sharing this scope's traffic in this bucket with an open anomaly of the same kind (for
        volumes: one holding at least half of this one's excess)."""
        rank, index = SPECIFICITY[st.dim], RAW_INDEX[st.dim]
        related = {(d, key[i]) for key in raw if key[index] == st.value for d, i in RAW_INDEX.items()
                   if key[i] and SPECIFICITY[d] < rank}
        best = None
        for dim, value in sorted(related):  # sorted: of two equally narrow scopes the same one every run (a set's
            # order follows the string hash, which changes per process: the texts named k1 or k2 by PYTHONHASHSEED)
            other_state = self.scopes.get((dim, value))
            other = other_state.open.get(kind_key) if other_state else None
            if other is None or (anomaly["kind"] in VOLUME_KINDS and other["_excess"] < 0.5 * anomaly["_excess"]):
                continue
            if best is None or SPECIFICITY[dim] < SPECIFICITY[best[0]]:
                best = (dim, value)
        return best

    # One move of a team to a model, one alert ---------------------------------------------------------------------
    def _explain_shifts(self, opened: list, raw: dict) -> None:
        """Model shifts opened in this bucket, narrowest scope first. A team's move to a pricier model shows on its
        keys, features and projects one after another, and again when a scope's anomaly closes and its next session
        on the model reopens it: sparse seed 8 paged research's move to o1 on project research-b at 12:52 and on
        feature research-agent at 13:32, office seed 8 paged team eng's move to claude-opus-4 on each of its five
        keys. One alert per move: a shift explained by a narrower open one is part of it (as for every kind); else
        a shift to a model that every team of its traffic was alerted to move to, whose shift records to it kept
        coming with gaps under `shift_incident_gap_s`, joins that alert; else it is alerted, and its teams carry
        the mark (`ScopeState.shifted`)."""
        for st, kind_key, anomaly, update in opened:
            best = self._narrower_open(st, kind_key, anomaly, raw) if SPECIFICITY[st.dim] else None
            if best is not None:
                other = self.scopes[best].open[kind_key]
                if other.get("_incident"):  # (the narrower one joined an earlier alert: so does this one)
                    anomaly["_explained_by"], anomaly["_incident"] = other["_explained_by"], other["_incident"]
                else:
                    anomaly["_explained_by"] = f"{best[0]} {best[1]}"
            else:
                mark = self._shift_incident(st, anomaly, raw)
                if mark is not None:
                    anomaly["_explained_by"], anomaly["_incident"] = mark[1], iso_epoch(mark[2])[11:16]
            if anomaly.get("_explained_by"):
                update.notify = False
                update.record = self._public(anomaly)
                self.stats["anomalies_explained"] += 1
                self._shift_goes_on(st, anomaly, raw)
            else:
                self._shift_goes_on(st, anomaly, raw, alerted=f"{st.dim} {st.value}")

    def _shift_teams(self, st: ScopeState, raw: dict) -> set[str]:
        if st.dim == "team":
            return {st.value}
        index = RAW_INDEX[st.dim]
        return {key[1] for key in raw if key[index] == st.value and key[1]}

    def _shift_incident(self, st: ScopeState, anomaly: dict, raw: dict) -> list | None:
        """[last record, scope alerted, alerted at] of the alerted move to this anomaly's model of every team of
        this scope's traffic in this bucket, when its records came until less than `shift_incident_gap_s` ago."""
        model, teams, mark = anomaly.get("_model"), self._shift_teams(st, raw), None
        if not model or not teams:
            return None
        for team in sorted(teams):
            known = self.scopes.get(("team", team))
            found = known.shifted.get(model) if known is not None else None
            if found is None or self._now - found[0] > self.cfg.shift_incident_gap_s:
                return None
            mark = mark or found
        return mark

    def _shift_goes_on(self, st: ScopeState, anomaly: dict, raw: dict | None = None, alerted: str = "") -> None:
        """A model shift record of this scope (alerted: a new move of its teams) keeps its teams' mark of a move to
        its model current."""
        model = anomaly.get("_model")
        if not model:
            return
        for team in self._shift_teams(st, self._raw if raw is None else raw):
            known = self.scopes.get(("team", team))
            if known is None:
                continue
            if alerted:
                gap = self.cfg.shift_incident_gap_s
                for stale in [m for m, mark in known.shifted.items() if self._now - mark[0] > gap]:
                    del known.shifted[stale]  # (bounded: the marks of moves that ended)
                # (the team's usual share of the model's calls before the move: `_shift_calls_go_on`)
                known.shifted[model] = [self._now, alerted, self._now, known.mix_share(model)]
            elif model in known.shifted:
                known.shifted[model][0] = self._now

    def _shift_calls_go_on(self, st: ScopeState, calls_by_model: dict, calls: int) -> None:
        """A team still calling the model it was alerted to move to is still in that move, whether or not a scope of
        it has a model shift record in this bucket. Records pause while the team goes on: a quiet scope's anomaly
        closes after three buckets without new evidence, and the scopes' mixes learn the move meanwhile, so the next
        record (another key's or feature's takeover, the same scope reopening) came 70-240 minutes after the last one
        and paged again: sparse seed 11 paged its 9 moves 16 times, although every team's calls on its model came at
        most 54 minutes apart during the move. A team bucket with calls on the model, at a share above both the routine
        share and twice the team's usual share before the move, keeps the mark current, only while the mark is (the
        same move after an hour without either is news again)."""
        gap, routine = self.cfg.shift_incident_gap_s, self.cfg.shift_routine_share
        for model, mark in st.shifted.items():
            m = calls_by_model.get(model)
            if not m or self._now - mark[0] > gap:
                continue
            usual = mark[3] if len(mark) > 3 else st.mix_share(model)  # (marks of older snapshots)
            if m[0] >= max(routine, 2 * usual) * calls:
                mark[0] = self._now

    # One template change of a feature, one alert ----------------------------------------------------------------
    def _template_incident(self, st: ScopeState, anomaly: dict, update: AnomalyUpdate, raw: dict) -> None:
        """A template change of a feature shows on each of its keys (and users) within minutes, each against its own
        distribution: office seed 8 paged 35 times for 9 template changes. A tokens-per-request anomaly of a key,
        user or feature whose every feature (in this bucket's traffic) had an alerted one of the same direction
        (output / input) with a record less than `template_incident_gap_s` ago joins that alert; an alerted one marks
        its features. (A narrower open anomaly explaining it was found before: it keeps that explanation.)"""
        direction, gap = anomaly.get("_detail"), self.cfg.template_incident_gap_s
        features = self._features_of(st, raw)
        if not direction or not features:
            return
        marks = [self.scopes[("feature", f)].templated.get(direction) if ("feature", f) in self.scopes else None
                 for f in features]
        joined = not anomaly.get("_explained_by") and all(m is not None and self._now - m[0] <= gap for m in marks)
        if joined:
            anomaly["_explained_by"], anomaly["_template"] = marks[0][1], iso_epoch(marks[0][2])[11:16]
            update.notify = False
            update.record = self._public(anomaly)
            self.stats["anomalies_explained"] += 1
        for feature in features:
            known = self.scopes.get(("feature", feature))
            if known is None:
                continue
            mark = known.templated.get(direction)
            if update.notify:
                for stale in [d for d, m in known.templated.items() if self._now - m[0] > gap]:
                    del known.templated[stale]  # (bounded: the marks of changes that ended)
                known.templated[direction] = [self._now, f"{st.dim} {st.value}", self._now]
            elif joined and mark is not None:
                mark[0] = self._now  # (only a record that joined keeps the change going: not every quiet scope's)

    def _features_of(self, st: ScopeState, raw: dict) -> list[str]:
        if st.dim == "feature":
            return [st.value]
        index = RAW_INDEX[st.dim]
        return sorted({key[5] for key in raw if key[index] == st.value and key[5]})

    def _alerted_broader(self, st: ScopeState, kind_key: str, raw: dict) -> tuple[str, str] | None:
        """A broader scope sharing this scope's traffic in this bucket whose anomaly of the same kind opened in an
        EARLIER bucket and was alerted: the narrower one opening later is the same incident (the demo's key storm
        alerted on its team at 14:07 and again on the key at 14:12). Same-bucket openings are left to the
        narrower-first rule below, so the two rules never silence each other."""
        rank, index = SPECIFICITY[st.dim], RAW_INDEX[st.dim]
        this_bucket = {id(anomaly) for _, _, anomaly, _ in self._opened}
        broader = {(d, key[i]) for key in raw if key[index] == st.value for d, i in RAW_INDEX.items()
                   if key[i] and SPECIFICITY[d] > rank}
        for dim, value in sorted(broader, key=lambda scope: SPECIFICITY[scope[0]]):
            other_state = self.scopes.get((dim, value))
            other = other_state.open.get(kind_key) if other_state else None
            if other is not None and id(other) not in this_bucket and not other.get("_explained_by"):
                return dim, value
        return None

    def _team_reported(self, st: ScopeState, model: str, raw: dict) -> str | None:
        """The scope whose new-model alert for `model` went out, on a team of this scope's traffic in this bucket, in an
        earlier bucket within the last `new_model_window_buckets`: this scope reaching its evidence later is the same
        news (one key's two calls alerted, or the team's from two keys; a third key's later calls)."""
        index, bucket = RAW_INDEX[st.dim], self._now - self._close_lag
        window = self.cfg.new_model_window_buckets * self.cfg.bucket_s
        for team in sorted({key[1] for key in raw if key[index] == st.value}):
            known = self.scopes.get(("team", team))
            info = known.models.get(model) if known is not None else None
            reported = info[3] if info is not None and len(info) > 3 else None
            if isinstance(reported, list) and bucket - window <= reported[0] < bucket:
                return reported[1]
        return None

    def _team_uses(self, st: ScopeState, model: str, raw: dict) -> str | None:
        """The team of this scope's traffic in this bucket when `model` is part of that team's usual mix (used before
        this bucket, and at least `new_model_team_share` of the team's calls): a key calling its team's usual model
        for the first time (a quiet key's mix shows up slowly) is recorded, not alerted. On the sparse family's
        incident-free days that was 7 of 8 new_model alerts. None when the model is new to any team of the scope,
        or only a trace in its mix (then it is news, alerted on the narrowest scope)."""
        index, bucket = RAW_INDEX[st.dim], self._now - self._close_lag
        teams = {key[1] for key in raw if key[index] == st.value}
        for team in teams:
            known = self.scopes.get(("team", team))
            info = known.models.get(model) if known is not None else None  # [first bucket, cost share, call share]
            if info is None or info[0] >= bucket or info[2:3] < [self.cfg.new_model_team_share]:
                return None  # new to the team, or only a trace of it (an earlier incident's, an occasional call)
        return ", ".join(sorted(teams)) or None

    def _one_quiet_key(self, st: ScopeState, kind: str, kind_key: str, raw: dict, index: int):
        """A broad scope's volume spike that is mostly one API key's traffic, while that key itself is within its
        own (bursty) range: the key's usual busy stretch, not news for the team or the model. Recorded, not
        alerted. (A key that is itself anomalous explains it through the rule above.)"""
        volume: dict[str, int] = {}
        for key, agg in raw.items():
            if key[index] == st.value and key[4]:
                amount = agg[COST] if kind == "spend_rate" else (0 if key[7] else agg[TIN] + agg[TOUT])
                volume[key[4]] = volume.get(key[4], 0) + amount
        total = sum(volume.values())
        if not total:
            return None
        top, amount = max(volume.items(), key=lambda item: item[1])
        other = self.scopes.get(("api_key", top))
        if amount >= 0.5 * total and other is not None and kind_key not in other.open:
            return ("api_key", top)
        return None

    @staticmethod
    def _fill(anomaly: dict, kind: str, v: Verdict, label: str, exact: str | None) -> None:
        anomaly["_peak"] = v.observed
        anomaly["_excess"] = v.observed - v.expected
        anomaly["severity"] = severity(kind, v)
        decimals = 12 if kind in ("spend_rate", "new_model", "model_shift") else 6
        anomaly["observed"] = exact if exact is not None else f"{v.observed:.{decimals}f}"
        anomaly["expected"] = f"{v.expected:.{decimals}f}"
        anomaly["expected_low"] = f"{v.low:.{decimals}f}"
        anomaly["expected_high"] = f"{v.high:.{decimals}f}"
        anomaly["unit"] = UNITS[kind]
        anomaly["explanation"] = explain(kind, label, v)
        if v.detail:
            anomaly["_detail"] = v.detail
        if v.model:
            anomaly["_model"] = v.model
        if v.unpriced:
            anomaly["_unpriced"] = True
        else:
            anomaly.pop("_unpriced", None)

    @staticmethod
    def _public(anomaly: dict) -> dict:
        record = {k: anomaly[k] for k in ("id", "kind", "scope_dim", "scope_value", "severity", "observed",
                                          "expected", "expected_low", "expected_high", "unit", "start", "end",
                                          "status", "explanation", "detected_at")}
        if anomaly.get("_unpriced"):  # optional: only a model with no price carries it (its observed $0 is unknown)
            record["unpriced"] = True
        if anomaly.get("_team_model"):
            record["explanation"] += f" Already used by {anomaly['_explained_by']} (not alerted)."
        elif anomaly.get("_quiet_key"):
            record["explanation"] += (f" Mostly the traffic of {anomaly['_explained_by']}, within that key's own usual "
                                      f"range (not alerted).")
        elif anomaly.get("_template"):
            record["explanation"] += (f" Part of the template change alerted on {anomaly['_explained_by']} at "
                                      f"{anomaly['_template']} UTC (not alerted again).")
        elif anomaly.get("_incident"):
            record["explanation"] += (f" Part of the model shift to {anomaly['_model']} alerted on "
                                      f"{anomaly['_explained_by']} at {anomaly['_incident']} UTC (not alerted again).")
        elif anomaly.get("_explained_by"):
            record["explanation"] += f" Part of the anomaly of {anomaly['_explained_by']} (alerted there)."
        elif anomaly.get("_page_joined"):
            record["explanation"] += (f" Same incident as the {anomaly['_page_joined']} alerted on this scope at "
                                      f"{anomaly['_page_at'][11:16]} UTC (one page).")
        return record

