"""The route secret store (streams.alerts.route_secrets): one 0600 file, stable references, masked display."""

from __future__ import annotations

import os
import stat

import pytest

from streams.alerts.route_secrets import RouteSecretError, RouteSecrets, store_path
from streams.alerts.routes import mask_notify, parse_routes
from streams.budgets.model import BudgetError, parse_budget

SLACK = "slack=https://hooks.slack.com/services/T0/B0/slacksecret"
PD = "pagerduty=S3cr3tPagerDutyRoutingKey0123456"


def test_protect_stores_once_with_0600_and_references_resolve(tmp_path):
    store = RouteSecrets(tmp_path / "data")
    first = store.protect([SLACK, PD, SLACK])
    assert first[0] == first[2] and first[0].startswith("slack=https://hooks.slack.com/services/***#secret=r-")
    assert first[1].startswith("pagerduty=****3456#secret=r-")
    assert "slacksecret" not in "".join(first)
    path = store_path(tmp_path / "data")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert RouteSecrets(tmp_path / "data").protect([SLACK]) == (first[0],)  # same target, same reference
    assert store.protect(first) == first  # references pass through
    assert store.resolve(first[0]) == SLACK and store.resolve(first[1]) == PD
    routes, bad = parse_routes(list(first), store.resolve)
    assert [r.target for r in routes] == [SLACK.split("=", 1)[1], PD.split("=", 1)[1]] and not bad
    assert mask_notify(list(first)) == list(first)


def test_unknown_reference_fails_with_a_reason_and_loose_modes_are_tightened(tmp_path):
    store = RouteSecrets(tmp_path)
    ref = store.protect([SLACK])[0]
    other = RouteSecrets(tmp_path / "elsewhere")
    with pytest.raises(RouteSecretError, match="re-apply the budget"):
        other.resolve(ref)
    routes, bad = parse_routes([ref], other.resolve)
    assert not routes and bad[0][0] == "slack" and "not in" in bad[0][1]
    os.chmod(store_path(tmp_path), 0o644)
    assert RouteSecrets(tmp_path).resolve(ref) == SLACK
    assert stat.S_IMODE(store_path(tmp_path).stat().st_mode) == 0o600


def test_budgets_accept_references_and_never_echo_a_secret_in_errors(tmp_path):
    ref = RouteSecrets(tmp_path).protect([PD])[0]
    assert parse_budget({"name": "b", "scope": {}, "limit": "1", "notify": [ref]}).notify == (ref,)
    with pytest.raises(BudgetError) as err:
        parse_budget({"name": "b", "scope": {}, "limit": "1", "notify": ["pagerduty=S3cr3tPagerDutyRoutingKey01234567",
                                                            "webhook=ftp://user:pw@h/x/secretpath"]})
    assert "S3cr3t" not in str(err.value) and "secretpath" not in str(err.value) and "pw" not in str(err.value)


def test_payloads_to_third_parties_never_carry_other_routes_secrets():
    """An alert record with plain routes (written before the store existed) still sends none of them on: not in
    the webhook body, not in PagerDuty's custom_details (budget details repeat the notify list)."""
    import orjson

    from streams.alerts.payloads import pagerduty_event, webhook_body

    plain = [SLACK, PD]
    alert = {"id": "a1", "source": "budget", "kind": "threshold", "action": "trigger", "severity": "error",
             "dedup_key": "budget:x", "title": "t", "summary": "s", "at": "2026-11-20T10:00:00Z", "scope": {},
             "notify": plain, "details": {"budget": "x", "notify": plain}}
    body = webhook_body(alert).decode() + orjson.dumps(pagerduty_event(alert, "routing-key-of-this-route")).decode()
    assert "slacksecret" not in body and "S3cr3tPagerDutyRoutingKey0123456" not in body
