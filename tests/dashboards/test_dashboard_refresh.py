"""The pages' refresh period is a setting (TOKENMETER_DASHBOARD_REFRESH_SECONDS): the `refresh` interval every
page's callbacks listen to ticks at it. The browser tests that do not wait for a refresh raise it (an idle open
page re-ran its callbacks every 5 s: ~0.13 CPU-s a second of server and Chromium, docs/rounds/testing.md suite24)."""

from __future__ import annotations

import json

import pytest

from test_dashboard_login_security import login, make_app
from tokenmeter.settings import SettingsError, load_settings


def _refresh_interval(server) -> dict:
    client = server.test_client()
    assert login(client).status_code == 302
    found = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "Interval" and node.get("props", {}).get("id") == "refresh":
                found.append(node["props"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(client.get("/_dash-layout").get_data(as_text=True)))
    assert len(found) == 1, found
    return found[0]


def test_the_refresh_interval_follows_the_setting(tmp_path, monkeypatch):
    assert _refresh_interval(make_app(tmp_path))["interval"] == 5000  # the default: a live demo moves every 5 s
    assert _refresh_interval(make_app(tmp_path, dashboard_refresh_seconds=90))["interval"] == 90_000
    monkeypatch.setenv("TOKENMETER_DASHBOARD_REFRESH_SECONDS", "2.5")
    assert _refresh_interval(make_app(tmp_path))["interval"] == 2500


@pytest.mark.parametrize("value", ["0", "0.5", "86401", "soon"])
def test_a_refresh_period_out_of_range_is_refused_naming_the_variable(tmp_path, monkeypatch, value):
    monkeypatch.setenv("TOKENMETER_DASHBOARD_REFRESH_SECONDS", value)
    with pytest.raises(SettingsError, match="TOKENMETER_DASHBOARD_REFRESH_SECONDS"):
        load_settings(data_dir=tmp_path)
