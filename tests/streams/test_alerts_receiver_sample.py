"""docs/alerts.md's receiver sample (`verify_tokenmeter`), run as written against what `tokenmeter alerts test`
really sends to a local endpoint (walk32): it must accept the genuine request and refuse (False, not an exception
a web framework turns into a 500) a tampered, replayed, unsigned or garbled one, whatever case the framework gives
header names in."""

from __future__ import annotations

import re
import time
from pathlib import Path

from click.testing import CliRunner
from test_alerts_support import SECRET, threaded_endpoint

from streams.alerts.cli import alerts

DOC = Path(__file__).resolve().parents[2] / "docs" / "alerts.md"


def _sample() -> object:
    section = DOC.read_text().split("### Generic webhooks and how to verify them", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102 - the documented sample, verbatim
    return namespace["verify_tokenmeter"]


def test_the_documented_receiver_accepts_the_real_request_and_refuses_the_rest():
    verify_tokenmeter = _sample()
    with threaded_endpoint() as ep:
        result = CliRunner().invoke(alerts, ["test", "--notify", f"webhook={ep.url('/in')}"],
                                    env={"TOKENMETER_KAFKA_BOOTSTRAP": "127.0.0.1:1", "TOKENMETER_WEBHOOK_SECRET": SECRET})
        assert result.exit_code == 0, result.output
        hook = ep.on("/in")[0]
    secret = SECRET.encode()
    headers = dict(hook.headers)
    assert verify_tokenmeter(secret, headers, hook.body) is True
    lower = {k.lower(): v for k, v in headers.items()}  # Starlette/ASGI, Go, Node give lower-case names
    assert verify_tokenmeter(secret, lower, hook.body) is True
    assert verify_tokenmeter(secret, headers, hook.body + b" ") is False  # tampered
    assert verify_tokenmeter(b"other", headers, hook.body) is False  # wrong secret
    old = {**headers, "X-Tokenmeter-Timestamp": str(int(time.time()) - 3600)}
    assert verify_tokenmeter(secret, old, hook.body) is False  # replayed (and its signature no longer matches)
    unsigned = {k: v for k, v in headers.items() if k not in ("X-Tokenmeter-Timestamp", "X-Tokenmeter-Signature")}
    assert verify_tokenmeter(secret, unsigned, hook.body) is False
    assert verify_tokenmeter(secret, {**headers, "X-Tokenmeter-Timestamp": "soon"}, hook.body) is False
