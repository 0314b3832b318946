"""cap33 noticed, trust34: `tokenmeter price` printed a call costing more than the warehouse stores (1,050,000 USD:
tokenmeter/stored_money.py) as a priced event like any other, where the worker letters it ("cost too large") and
no budget counts it. It now says so on stderr, in the worker's words, and exits 1; the line's other calls and a
call just under the limit are printed as before."""

from __future__ import annotations

import io

import orjson

from app.pricing_cli import price_lines
from tokenmeter.settings import load_settings
from tokenmeter.stored_money import MAX_STORED_COST_USD


def _call(event_id: str, **usage: int) -> dict:
    return {"event_id": event_id, "ts": "2026-11-01T10:15:00Z", "source": "t", "provider": "openai",
            "model": "gpt-4o", "attribution": {"team": "search"}, "usage": usage}


def test_a_call_over_the_money_limit_is_said_to_be_refused_not_printed_as_priced():
    over = _call("over", input_tokens=220_000_000_000, output_tokens=50_000_000_000)  # 1,050,000 USD
    edge = _call("edge", output_tokens=99_999_999_999)  # 999,999.99999 USD: stored, so priced
    records = (_call("first", input_tokens=10), [over, _call("beside", input_tokens=5)], edge)
    lines = b"\n".join(orjson.dumps(x) for x in records) + b"\n"
    out, errors = io.StringIO(), io.StringIO()
    failed = price_lines(io.BytesIO(lines), out, None, load_settings(), errors=errors)
    printed = [orjson.loads(line)["event_id"] for line in out.getvalue().splitlines()]
    assert printed == ["first", "beside", "edge"] and failed == 1
    [error] = [orjson.loads(line) for line in errors.getvalue().splitlines()]
    assert error["line"] == 2, error
    reason = error["error"]
    assert reason.startswith("cost too large: event 'over' (openai/gpt-4o) has cost_usd 1050000.000000000000 USD"), \
        reason
    assert f"at or above {MAX_STORED_COST_USD} USD" in reason and "not counted by any budget" in reason
