"""Every volume or size anomaly says what the scope spends meanwhile, against its usual spend (anom32).

The demo's token explosion read "api_key sk-acm-data-fay is using 516,804 tokens/hour, 82.1x the usual 6,296 for
this hour of the week", its burst "sk-glo-plat-kai is sending 744 requests/hour, 96.4x its usual 7.7", its template
change "output tokens per request jumped to 741, 3.7x the usual 200": not a word of money, in a product whose pages
are about money; only spend_rate, model_shift and new_model said dollars. On-call could not tell a $0.08/hour
token explosion from a $40/hour one without the dashboard. Now the explanation (alert summary, Anomalies page) ends
with the scope's spend at that pace and its usual spend for this hour of the week, from the same 5-minute bucket and
the same spend baseline the spend rule reads."""

from __future__ import annotations

import re

from streams.anomalies.detectors import Verdict, explain
from tests.streams.anomaly_traffic import event
from tests.streams.test_anomalies_detectors import HISTORY_END, feed, opened, run_with, warm_engine

MONEY = re.compile(r"Spend meanwhile: \$[\d,.]+/hour \(usually \$[\d,.]+/hour\)\.$")


def test_a_token_explosion_says_what_it_spends():
    def explode(e, t):  # noqa: ARG001 - key k1's prompts grow 40x (a bulk job on its usual models)
        if e["attribution"]["api_key"] == "k1":
            e["usage"]["input_tokens"] *= 40
            cost = int(e["cost_usd"].replace(".", "")) * 30
            e["cost_usd"] = f"{cost // 10**12}.{cost % 10**12:012d}"
        return e

    _, updates, _ = run_with(explode, hours=1)
    found = opened(updates, "token_rate", "api_key", "k1")
    assert found, [(u.record["kind"], u.record["scope_value"]) for u in updates if u.action == "open"]
    assert MONEY.search(found[0]["explanation"]), found[0]["explanation"]


def test_a_burst_says_what_it_spends():
    engine = warm_engine()
    at = HISTORY_END + 3 * 3600
    updates = feed(engine, [[event(b + i, "k1", model="gpt-4o", n=i) for i in range(250)]
                            for b in range(at, at + 1800, 300)])
    found = opened(updates, "request_burst", "api_key", "k1")
    assert found and MONEY.search(found[0]["explanation"]), found


def test_the_sentence_and_a_scope_without_usual_spend():
    tokens = Verdict("strong", 751680.0, 7.84, 0.0, 20.0, "tokens_per_hour", spend=(1.2345, 0.0123))
    assert explain("token_rate", "api_key k", tokens).endswith(
        "for this hour of the week. Spend meanwhile: $1.23/hour (usually $0.0123/hour).")
    new_key = Verdict("strong", 7200.0, 0.0, 0.0, 7200.0, "requests_per_hour", spend=(0.5, None))
    assert explain("request_burst", "api_key k", new_key).endswith("Spend meanwhile: $0.5000/hour.")
    plain = Verdict("strong", 852.0, 19.8, 0.0, 619.8, "requests_per_hour")
    assert explain("request_burst", "api_key k", plain).endswith("a leaked key?")  # (no figures: as before)
