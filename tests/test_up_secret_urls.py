"""hostile32: `tokenmeter up` with a ClickHouse server printed `[3/4] starting loader into
http://default:<password>@host:8123/db ...` to the terminal (and `up.log`, compose logs): the password of
TOKENMETER_CLICKHOUSE_URL in CLI output. Every other place that shows that URL masks it (`redact_url`); now `up` does
too, and a password given as a query parameter is masked as well."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from process_support import stop, wait_for
from tokenmeter.settings import free_port
from warehouse.backends import redact_url

pytestmark = pytest.mark.slow(seconds=10)
ROOT = Path(__file__).resolve().parents[1]
SECRET = "S3cretClickhousePw"


def test_up_prints_the_clickhouse_url_without_its_password(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENMETER_")}
    env.update(PYTHONPATH=str(ROOT), TOKENMETER_DATA_DIR=str(tmp_path / "data"),
               TOKENMETER_EMBEDDED_BROKER_PORT=str(free_port()), TOKENMETER_API_PORT=str(free_port()),
               TOKENMETER_DASH_PORT=str(free_port()),
               TOKENMETER_CLICKHOUSE_URL=f"http://default:{SECRET}@127.0.0.1:{free_port()}/tokenmeter")
    out = tmp_path / "up.out"
    with open(out, "w") as log:
        up = subprocess.Popen([sys.executable, "-m", "app", "up"], env=env, stdout=log, stderr=subprocess.STDOUT,
                              cwd=tmp_path)
    try:
        wait_for(lambda: "starting loader into" in out.read_text() or up.poll() is not None, 90, "the loader line")
    finally:
        stop(up, timeout=40)
    shown = out.read_text()
    assert "starting loader into http://default:***@127.0.0.1:" in shown, shown[-2000:]
    assert SECRET not in shown


def test_a_password_in_the_query_is_masked_too():
    assert redact_url(f"http://h:8123/db?user=u&password={SECRET}&x=1") == "http://h:8123/db?user=u&password=***&x=1"
    assert redact_url(f"https://u:{SECRET}@h/db") == "https://u:***@h/db"
