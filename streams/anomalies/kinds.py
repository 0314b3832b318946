"""One page per incident, whatever kinds it shows (oncall24). A runaway loop on a key is a spend, a token-rate, a
tokens-per-request and a request-burst anomaly of that key: anom24's walk paged four times for one loop, because
"one incident, one alert" (gating.py) folds broader scopes of one kind, not several kinds of one scope.

Alerted anomalies of one scope form one incident while any of them is open:
- kinds opening on the scope in the same detection (one bucket close, or one early check) go on one page: the first
  by `KIND_ORDER` carries the trigger (alert id `<its id>:trigger`, dedup_key = its id = the incident's id), listing
  every kind with its own explanation;
- a kind opening later, while the incident is open, is sent as a trigger with the incident's dedup_key (PagerDuty
  appends it to the open incident instead of paging again; Slack and webhooks get it as an update of that incident);
- the incident resolves once all of its anomalies have closed (alert id `<incident id>:resolve`, listing every kind),
  not when the first one does.
Each anomaly record stays per kind (the dashboard shows each); `AnomalyUpdate.notify` still says whether on-call is
told about it (evaluate.py's per-kind alert figures are unchanged); `AnomalyUpdate.incident` says how
(publish.py builds the alert). The incident lives on the open anomalies (`_page_id`, `_page_kinds`, `_page_at`), so
it survives a snapshot; an anomaly opened before this change (no `_page_id`) is its own incident.
"""

from __future__ import annotations

# The kind that heads a page of several: the one that says most about the cost of the incident.
KIND_ORDER = ("spend_rate", "request_burst", "token_rate", "model_shift", "error_rate", "tokens_per_request",
              "new_model", "unpriced_usage")
_RANK = {kind: i for i, kind in enumerate(KIND_ORDER)}


class KindIncidents:
    """Mixin of AnomalyEngine's gating (uses `self._opened`, `self._public`)."""

    def _merge_kinds(self) -> None:
        """Group this detection's alerted openings with their scope's open incident, or into one new page per scope."""
        pages: dict[tuple[str, str], dict] = {}
        this_detection = {id(o[2]) for o in self._opened}
        for st, _kind_key, anomaly, update in sorted(self._opened, key=lambda o: _RANK.get(o[2]["kind"], 99)):
            if not update.notify:
                continue
            scope, kind = (st.dim, st.value), anomaly["kind"]
            page = pages.get(scope)
            if page is not None:  # the same scope in the same detection: on that page
                page["kinds"].append(kind)
                page["records"].append(update.record)
                anomaly["_page_id"], anomaly["_page_at"] = page["id"], page["at"]
                update.incident = {"id": page["id"], "role": "on_page"}
                continue
            lead = self._open_incident(st, this_detection)
            if lead is not None:  # a later kind of an open incident: joins it
                pid, kinds = lead["_page_id"], [*lead.get("_page_kinds", [lead["kind"]]), kind]
                for other in st.open.values():
                    if other.get("_page_id") == pid:
                        other["_page_kinds"] = list(kinds)
                anomaly.update(_page_id=pid, _page_at=lead["_page_at"], _page_kinds=list(kinds),
                               _page_joined=", ".join(kinds[:-1]))
                update.record = self._public(anomaly)
                update.incident = {"id": pid, "role": "join", "kinds": kinds, "at": lead["_page_at"]}
                continue
            page = pages[scope] = {"id": anomaly["id"], "role": "page", "kinds": [kind], "records": [update.record],
                                   "at": anomaly["detected_at"]}
            anomaly["_page_id"], anomaly["_page_at"] = page["id"], page["at"]
            update.incident = page
        for (dim, value), page in pages.items():
            st = self.scopes[(dim, value)]
            for other in st.open.values():
                if other.get("_page_id") == page["id"]:
                    other["_page_kinds"] = list(page["kinds"])

    @staticmethod
    def _open_incident(st, this_detection: set[int]) -> dict | None:
        """An open, alerted anomaly of another kind on this scope, opened before this detection (the incident this
        one joins), or None."""
        for other in st.open.values():
            if id(other) in this_detection or other.get("_explained_by"):
                continue
            if other.get("_page_id") is None:  # opened before one page per incident: its own incident
                other.update(_page_id=other["id"], _page_at=other["detected_at"], _page_kinds=[other["kind"]])
            return other
        return None

    @staticmethod
    def _incident_close(st, anomaly: dict) -> dict | None:
        """How a closing anomaly (already removed from `st.open`) reaches on-call: its incident's resolve when it was
        the last one open, else nothing yet."""
        pid = anomaly.get("_page_id")
        if pid is None or anomaly.get("_explained_by"):
            return None
        if any(other.get("_page_id") == pid for other in st.open.values()):
            return {"id": pid, "role": "held"}
        return {"id": pid, "role": "resolve", "kinds": list(anomaly.get("_page_kinds", [anomaly["kind"]])),
                "at": anomaly.get("_page_at", "")}
