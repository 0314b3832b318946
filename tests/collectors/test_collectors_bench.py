"""`collectors.bench.measure_collectors`: the real Kafka bridge, per dialect, on the real broker. Counts are
exact (checked inside by reading the usage topic back); the figures are only required to be positive."""

from __future__ import annotations

import uuid

import orjson
import pytest

from collectors import parse_record
from collectors.bench import DIALECTS, KONG_ENTRIES_PER_MESSAGE, OTEL_SPANS_PER_RECORD, CollectorBenchError, \
    gateway_records, measure_collectors

pytestmark = pytest.mark.slow(seconds=6)  # rough seconds: longest files first (tests/suite_order.py)


def test_gateway_records_have_the_gateways_shape_and_distinct_ids():
    kong, kong_ids = gateway_records("kong", 120)
    assert len(kong) == 3 and len(orjson.loads(kong[0])) == KONG_ENTRIES_PER_MESSAGE  # kafka-log arrays
    otel, otel_ids = gateway_records("otel", 45)
    assert len(otel) == 3 and not otel[0].lstrip().startswith(b"{")  # otlp_proto TracesData, not JSON
    assert [e.event_id for e in parse_record(otel[0], "otel")] == otel_ids[:OTEL_SPANS_PER_RECORD]
    for dialect in ("apisix", "litellm"):
        values, ids = gateway_records(dialect, 10)
        assert [parse_record(v, dialect)[0].event_id for v in values] == ids
    assert len(set(kong_ids)) == 120 and len({e.model for v in kong for e in parse_record(v, "kong")}) > 1
    with pytest.raises(ValueError, match="dialect 'nope'"):
        gateway_records("nope", 1)


@pytest.mark.timeout(120)
def test_every_dialect_bridged_exactly_with_a_positive_rate(kafka_bootstrap):
    # A usage topic of its own: workers other tests run on this broker never see these events.
    usage_topic = f"bench.collectors.usage.{uuid.uuid4().hex[:8]}"
    cpu_rates: dict[str, float] = {}
    rates = measure_collectors(kafka_bootstrap, 300, usage_topic=usage_topic, cpu_rates=cpu_rates)
    assert set(rates) == set(DIALECTS) == set(cpu_rates)
    assert all(rate > 0 for rate in rates.values()), rates
    assert all(rate > 0 for rate in cpu_rates.values()), cpu_rates


def test_bad_n_is_refused():
    with pytest.raises(ValueError, match="n must be at least 1"):
        measure_collectors("127.0.0.1:1", 0)
    assert issubclass(CollectorBenchError, RuntimeError)


def test_a_record_that_gives_no_event_fails_the_count(kafka_bootstrap, monkeypatch):
    import collectors.bench as bench

    real = bench.gateway_records

    def one_broken(dialect, n, seed=7):
        values, ids = real(dialect, n, seed)
        return [b'{"llm_summary": {"prompt_tokens": -3}}', *values[1:]], ids

    monkeypatch.setattr(bench, "gateway_records", one_broken)
    with pytest.raises(CollectorBenchError, match=r"apisix: 20 records of 20 calls gave .*written=19 rejected=1"):
        measure_collectors(kafka_bootstrap, 20, ("apisix",), usage_topic=f"bench.collectors.bad.{uuid.uuid4().hex[:8]}")


def test_in_process_rates_of_this_tree(capsys):
    """`python -m collectors.bench_inproc`: the bridge's conversion + encoding per dialect, in a subprocess."""
    from collectors.bench_inproc import main

    assert main(["--events", "200", "--rounds", "1", "--dialects", "litellm,otel"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["litellm", "otel"]
    assert all(float(line.split()[2].replace(",", "")) > 0 for line in lines), lines
