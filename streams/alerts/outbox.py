"""Putting alert records built outside the streams (finance checks: cost drift, source completeness) into the
outbox `tokenmeter.alerts`, keyed by dedup_key like every alert, so the dispatcher routes and delivers them once
per alert id and route.

Anomaly and finance alerts are published without routes (`notify` empty): the dispatcher delivers them to its own
TOKENMETER_ANOMALY_NOTIFY / TOKENMETER_FINANCE_NOTIFY. Every client of the topic reads its records, and a route is
a secret (a Slack URL, a PagerDuty routing key), so it is never copied there (leak21)."""

from __future__ import annotations

import asyncio

import orjson

ROUTES_MOVED = ("%s is set for this process, but its alerts are published without routes: they are read by the "
                "alert dispatcher (`tokenmeter alerts dispatch`, compose service `alerts`) from ITS OWN %s, so set "
                "it there (`tokenmeter up` gives every process the same)")


def routes_note(variable: str, routes: list[str]) -> str | None:
    """What a producer of routeless alerts says once at start when its own settings hold routes: an operator who
    set them only on the detector or finance-watch learns where they are read now (never the routes themselves)."""
    return ROUTES_MOVED % (variable, variable) if routes else None


async def publish_alerts_async(bootstrap: str, alerts: list[dict]) -> int:
    from aiokafka import AIOKafkaProducer

    from tokenmeter import topics

    if not alerts:
        return 0
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for alert in alerts:
            await producer.send_and_wait(topics.ALERTS, orjson.dumps(alert), key=alert["dedup_key"].encode())
    finally:
        await producer.stop()
    return len(alerts)


def publish_alerts(bootstrap: str, alerts: list[dict]) -> int:
    """Send the records (acks=all) and return how many; raises the producer's error when the broker is down."""
    return asyncio.run(publish_alerts_async(bootstrap, alerts))


def publish_finance_alerts_from_cli(settings, alerts: list[dict], what: str) -> None:
    """`tokenmeter drift|completeness --publish`: send the finance check's alerts, say where their routes are read
    (once, on stderr) and how many went out; a broker that cannot be reached is a one-line error, not a traceback."""
    import click

    try:
        sent = publish_alerts(settings.bootstrap_servers, alerts)
    except Exception as exc:  # noqa: BLE001 - the broker's client raises many kinds; say what failed
        raise click.ClickException(f"cannot publish {what} alerts to {settings.bootstrap_servers}: {exc}") from None
    note = routes_note("TOKENMETER_FINANCE_NOTIFY", settings.finance_notify)
    if note:
        click.echo(f"note: {note}", err=True)
    click.echo(f"{sent} {what} alert(s) sent to the outbox", err=True)
