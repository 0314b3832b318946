"""`tokenmeter anomalies ack|mute|unmute|mutes`: what the dashboard's Acknowledge / Mute / Unmute buttons do, from a
terminal (an on-call engineer paged in Slack or PagerDuty may not have the dashboard at hand). Each writes one ack
record (contract in tokenmeter/records.py) to `tokenmeter.anomaly-acks`; the detector follows the topic."""

from __future__ import annotations

import asyncio
import getpass
import shlex
from datetime import datetime, timedelta, timezone

import click

from .detectors import KINDS

SCOPE_DIMS = ("team", "project", "user", "api_key", "feature", "model")


def login_name() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # a container user without a passwd entry or LOGNAME
        return "cli"


def parse_scope(_ctx, _param, value: str) -> tuple[str, str]:
    dim, sep, scope_value = value.partition("=")
    if not sep or dim not in SCOPE_DIMS or not scope_value:
        raise click.BadParameter(f"DIM=VALUE with DIM one of {', '.join(SCOPE_DIMS)} (as the alert's scope), "
                                 f"got {value!r}")
    return dim, scope_value


def target(fn):
    """The options naming what an ack record is about: the anomaly id and its kind and scope (the alert has all)."""
    fn = click.option("--note", default="", help="Why (kept with the record).")(fn)
    fn = click.option("--by", default=login_name, show_default="your login name", help="Who acts.")(fn)
    fn = click.option("--scope", required=True, callback=parse_scope,
                      help="The alert's scope as DIM=VALUE, e.g. api_key=search-k1.")(fn)
    fn = click.option("--kind", required=True, type=click.Choice(KINDS), help="The alert's kind.")(fn)
    return click.argument("anomaly_id")(fn)


def publish(action: str, anomaly_id: str, kind: str, scope: tuple[str, str], by: str, note: str,
            mute_until: datetime | None = None) -> None:
    from tokenmeter.cli_support import cli_settings
    from tokenmeter.kafka_topics import broker_problem

    from .acks import publish_ack

    settings = cli_settings()
    record = {"anomaly_id": anomaly_id, "kind": kind, "scope_dim": scope[0], "scope_value": scope[1],
              "action": action, "by": by, "note": note, "mute_until": mute_until}
    try:
        asyncio.run(asyncio.wait_for(publish_ack(settings.bootstrap_servers, record), 30))
    except Exception as exc:  # noqa: BLE001 - say what failed and exit 1, no traceback for a stopped stack
        raise click.ClickException(f"not recorded: {broker_problem(exc, settings.bootstrap_servers)}") from None
    note = _not_the_anomalys(settings, anomaly_id, kind, scope)
    if note:
        click.echo(note, err=True)


def _not_the_anomalys(settings, anomaly_id: str, kind: str, scope: tuple[str, str]) -> str | None:
    """A note when ANOMALY_ID is on no anomaly record, or the kind/scope given are not that anomaly's: a typo there
    acknowledged nothing the dashboard shows, or muted a scope that is not paging. Said, not refused: the record is
    written (a mute is keyed by kind and scope; an old anomaly may be past the topic's retention)."""
    from tokenmeter.kafka_topics import ReadIncomplete

    from .acks import find_anomaly

    try:
        found = asyncio.run(find_anomaly(settings.bootstrap_servers, anomaly_id, fetch_wait=settings.fetch_wait))
    except (ReadIncomplete, asyncio.TimeoutError):
        return None  # recorded; whether the id is known could not be read in time
    if found is None:
        return (f"note: no anomaly {_plain(anomaly_id)} on tokenmeter.anomalies (a typo? the alert and the Anomalies "
                f"page name it); recorded for {kind} on {scope[0]}={_plain(scope[1])} anyway")
    given = (kind, scope[0], scope[1])
    theirs = (str(found.get("kind")), str(found.get("scope_dim")), str(found.get("scope_value") or ""))
    if given != theirs:
        return (f"note: anomaly {_plain(anomaly_id)} is {_plain(theirs[0])} on {_plain(theirs[1])}={_plain(theirs[2])}"
                f", not {kind} on {scope[0]}={_plain(scope[1])}; recorded as given")
    return None


def _plain(text: str, limit: int = 120) -> str:
    """A value read from a topic (anyone who may write to it wrote it) or given, as the terminal shows it: control
    characters (a terminal escape) as '?', cut at `limit` characters."""
    shown = "".join("?" if ord(c) < 32 or 127 <= ord(c) < 160 else c for c in text[:limit])
    return shown + ("..." if len(text) > limit else "")


@click.command("ack")
@target
def ack(anomaly_id: str, kind: str, scope: tuple[str, str], by: str, note: str) -> None:
    """Record that someone is on ANOMALY_ID (alerts go on; the dashboard shows who)."""
    publish("ack", anomaly_id, kind, scope, by, note)
    click.echo(f"acknowledged {anomaly_id} ({kind} on {scope[0]}={scope[1]}) by {by}")


@click.command("mute")
@target
@click.option("--hours", default=24.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="How long no alert of this kind on this scope is sent (detection goes on).")
def mute(anomaly_id: str, kind: str, scope: tuple[str, str], by: str, note: str, hours: float) -> None:
    """Silence alerts of KIND on SCOPE for --hours (this anomaly's resolve included); detection goes on."""
    until = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=hours)
    publish("mute", anomaly_id, kind, scope, by, note, until)
    click.echo(f"muted {kind} on {scope[0]}={scope[1]} until {until:%Y-%m-%d %H:%M} UTC by {by} "
               f"(undo: {_unmute_command(anomaly_id, kind, scope)})")


def _unmute_command(anomaly_id: str, kind: str, scope: tuple[str, str]) -> str:
    """Quoted as the alert's mute command is (publish.mute_command): a user "Jane Doe" or a team "R&D" pasted unquoted
    split the scope and click refused it (anom32)."""
    return (f"tokenmeter anomalies unmute {shlex.quote(anomaly_id)} --kind {shlex.quote(kind)} "
            f"--scope {shlex.quote(f'{scope[0]}={scope[1]}')}")


@click.command("unmute")
@target
def unmute(anomaly_id: str, kind: str, scope: tuple[str, str], by: str, note: str) -> None:
    """Lift a mute of KIND on SCOPE (the next anomaly there alerts again)."""
    publish("unmute", anomaly_id, kind, scope, by, note)
    click.echo(f"unmuted {kind} on {scope[0]}={scope[1]} by {by}")


@click.command("mutes")
def mutes() -> None:
    """The mutes in force now: kind, scope, until, who muted, and the unmute command that lifts each."""
    from aiokafka.errors import KafkaConnectionError

    from tokenmeter.cli_support import cli_settings
    from tokenmeter.kafka_topics import broker_problem

    from .acks import read_mutes

    settings = cli_settings()
    try:
        table = asyncio.run(read_mutes(settings.bootstrap_servers, fetch_wait=settings.fetch_wait))
    except KafkaConnectionError as exc:  # the stack is not running: say so, as `anomalies ack` does
        raise click.ClickException(broker_problem(exc, settings.bootstrap_servers)) from None
    live = table.in_force(datetime.now(timezone.utc))
    # who muted and on which anomaly: `unmute` needs an ANOMALY_ID, which the list did not give (walk36); values
    # read from the topic (anyone who may write to it wrote them) are shown plain, as the notes show them
    whole = 4096  # the undo names the scope in full (a value may be 1,024 characters), the columns cut it
    for kind, dim, value, until, record in live:
        undo = _unmute_command(_plain(str(record.get("anomaly_id") or "?"), whole), _plain(kind, whole),
                               (_plain(dim, whole), _plain(value, whole)))
        click.echo(f"{_plain(kind):<20} {_plain(dim)}={_plain(value):<30} until {until:%Y-%m-%d %H:%M} UTC by "
                   f"{_plain(str(record.get('by') or '?'))} (undo: {undo})")
    if not live:
        click.echo("no mutes in force")
