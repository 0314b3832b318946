"""The detector's texts (the Anomalies page's "What happened", the alert summaries) write figures as the dashboard
does (tokenmeter.measures), and a new model with no price is said to be unpriced, never to cost $0.00/hour.
The records keep their exact machine fields (observed, expected, unit)."""

from __future__ import annotations

from tests.streams.test_anomalies_detectors import opened, run_with


def test_a_new_model_with_no_price_is_said_to_be_unpriced():
    """The demo's unpriced model read "started using acme-llm, never used by it before ($0.0000/hour on it)"."""
    def unpriced(e, t):
        if e["attribution"]["api_key"] == "k1" and e["event_id"].endswith(("0", "1")):
            e.update(model="acme-llm", cost_usd="0.000000000000", pricing_status="unpriced",
                     unpriced_reason="unknown model acme-llm")
        return e

    _, updates, _ = run_with(unpriced, hours=3)
    [found] = opened(updates, "new_model", "api_key", "k1")
    text = found["explanation"]
    assert "started using acme-llm, never used by it before. The model has no price, so what it costs is unknown " \
           "(not $0)" in text, text
    assert "/hour on it" not in text
    assert found["unit"] == "usd_per_hour" and float(found["observed"]) == 0  # the record's fields as before


def test_a_priced_new_model_keeps_its_cost_per_hour():
    def opus(e, t):
        if e["attribution"]["api_key"] == "k1" and e["event_id"].endswith(("0", "1")):
            e["model"] = "claude-opus-4"
        return e

    _, updates, _ = run_with(opus, hours=3)
    [found] = opened(updates, "new_model", "api_key", "k1")
    assert found["explanation"].endswith("/hour on it).") and "no price" not in found["explanation"]

