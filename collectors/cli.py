"""`tokenmeter collect http|file|kafka`: run one collector mode until SIGTERM/SIGINT.

Kafka, bind address and data dir come from tokenmeter's settings (TOKENMETER_KAFKA_BOOTSTRAP, TOKENMETER_HOST,
TOKENMETER_DATA_DIR); mode options are CLI options with TOKENMETER_COLLECT_* environment fallbacks.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import click
import yaml

from tokenmeter.cli_support import cli_settings, configure_logging, run_service
from tokenmeter.settings import Settings, ensure_port_free

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str) -> int:
    """'5MB' -> 5242880 (binary units; KB/KiB/K alike)."""
    match = _SIZE.match(str(text))
    if not match:
        raise click.BadParameter(f"{text!r} is not a size such as 5MB, 512KB or 1048576")
    unit = (match.group(2) or "").lower()[:1]
    return int(float(match.group(1)) * _UNITS[unit])


def _settings() -> Settings:
    settings = cli_settings()
    configure_logging(settings)
    return settings


def load_mapping(path: Path | None) -> Any:
    if path is None:
        return None
    from collectors import AttributionMapping

    try:
        return AttributionMapping.from_dict(yaml.safe_load(path.read_text()) or {})
    except (OSError, yaml.YAMLError, ValueError) as exc:
        raise click.ClickException(f"--mapping {path}: {exc}") from None


def _dialect_choice() -> click.Choice:
    from collectors import DIALECTS

    return click.Choice(["auto", *DIALECTS])


mapping_option = click.option(
    "--mapping", type=click.Path(exists=True, dir_okay=False, path_type=Path), envvar="TOKENMETER_COLLECT_MAPPING",
    help="Attribution mapping YAML (which record field is team/project/...).")


@click.group("collect")
def collect() -> None:
    """Collect gateway logs and traces into canonical events on Kafka (tokenmeter.usage)."""


@collect.command("http")
@click.option("--port", type=click.IntRange(1, 65535), default=8787, show_default=True,
              envvar="TOKENMETER_COLLECT_PORT")
@click.option("--api-key", "api_keys", multiple=True, envvar="TOKENMETER_COLLECT_API_KEYS",
              help="Accepted API key (repeatable; env: whitespace-separated).")
@click.option("--api-keys-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              envvar="TOKENMETER_COLLECT_API_KEYS_FILE", help="File of API keys, one per line (# comments).")
@click.option("--max-body-bytes", default="5MB", show_default=True, envvar="TOKENMETER_COLLECT_MAX_BODY_BYTES")
@click.option("--kafka-timeout", type=float, default=10.0, show_default=True,
              envvar="TOKENMETER_COLLECT_KAFKA_TIMEOUT", help="Seconds to wait for Kafka before answering 503.")
@mapping_option
def http_command(port: int, api_keys: tuple[str, ...], api_keys_file: Path | None, max_body_bytes: str,
                 kafka_timeout: float, mapping: Path | None) -> None:
    """HTTP ingest: POST /v1/events, /v1/traces (OTLP), /v1/logs/{dialect}; GET /healthz, /metrics."""
    from collectors.http_ingest import serve_http
    from collectors.sink import KafkaSink

    settings = _settings()
    if click.get_current_context().get_parameter_source("api_keys") is click.core.ParameterSource.COMMANDLINE:
        # the key is in the process list (ps, /proc/<pid>/cmdline) for every user of the host to read (hostile24)
        click.echo("warning: --api-key puts the key in the process list, readable by every user of this host; "
                   "give keys in TOKENMETER_COLLECT_API_KEYS or --api-keys-file instead", err=True)
    # before Kafka is touched: a port in use is the user's to change, not a bind traceback after startup
    ensure_port_free(settings.host, port, "collect_port", change="--port (or TOKENMETER_COLLECT_PORT)")
    keys = [k for k in api_keys if k.strip()]
    if api_keys_file:
        keys += [line.strip() for line in api_keys_file.read_text().splitlines()
                 if line.strip() and not line.lstrip().startswith("#")]
    blank_variable = os.environ.get("TOKENMETER_COLLECT_API_KEYS", "").isspace()  # click reads it as no key at all
    if not keys and (api_keys or api_keys_file or blank_variable):
        # keys were meant (an empty secret file, a blank variable): never start open on that (walk32: it did)
        given = f"--api-keys-file {api_keys_file}" if api_keys_file else "--api-key / TOKENMETER_COLLECT_API_KEYS"
        raise click.UsageError(f"{given} holds no key: the collector would accept writes from anyone; give at least "
                               "one key, or neither option to run open on purpose")
    limit = parse_size(max_body_bytes)
    resolved = load_mapping(mapping)
    run_service(lambda stop: serve_http(
        KafkaSink(settings.bootstrap_servers, "collect:http", timeout_s=kafka_timeout),
        settings.host, port, keys, limit, resolved, stop, settings.collect_body_timeout_seconds))


@collect.command("file")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dialect", type=_dialect_choice(), required=True, envvar="TOKENMETER_COLLECT_DIALECT")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), envvar="TOKENMETER_COLLECT_CHECKPOINT",
              help="Checkpoint file (default: <data_dir>/collect-file/<hash of PATH>.json).")
@click.option("--batch-lines", type=click.IntRange(1), default=2000, show_default=True,
              envvar="TOKENMETER_COLLECT_BATCH_LINES", help="Lines per Kafka write + checkpoint.")
@click.option("--poll-interval", type=float, default=0.25, show_default=True, envvar="TOKENMETER_COLLECT_POLL_INTERVAL")
@click.option("--exit-at-eof", is_flag=True, help="Stop at the end of the file instead of following it (backfills).")
@mapping_option
def file_command(path: Path, dialect: str, checkpoint: Path | None, batch_lines: int, poll_interval: float,
                 exit_at_eof: bool, mapping: Path | None) -> None:
    """Tail a JSON-lines log file (rotation-aware, checkpointed after Kafka acknowledged)."""
    from collectors.file_tail import FileTailer
    from collectors.sink import KafkaSink

    settings = _settings()
    path = path.absolute()
    if checkpoint is None:
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
        checkpoint = settings.data_dir / "collect-file" / f"{path.name}.{digest}.json"
    if exit_at_eof and not path.exists() and not checkpoint.exists():
        # a backfill of a file that is not there is a typo, not "nothing to read" (without --exit-at-eof the
        # tailer waits for the file to appear; with a checkpoint, a rotated leftover may still be read)
        raise click.ClickException(f"{path} does not exist (--exit-at-eof reads a file that is there)")
    resolved = load_mapping(mapping)
    sink = KafkaSink(settings.bootstrap_servers, "collect:file")
    tailer = FileTailer(path, None if dialect == "auto" else dialect, checkpoint, sink, mapping=resolved,
                        batch_lines=batch_lines, poll_interval=poll_interval, exit_at_eof=exit_at_eof,
                        fetch_wait=settings.fetch_wait)
    run_service(tailer.run)


@collect.command("kafka")
@click.option("--topic", required=True, envvar="TOKENMETER_COLLECT_TOPIC", help="Source topic (e.g. otlp_spans).")
@click.option("--dialect", type=_dialect_choice(), required=True, envvar="TOKENMETER_COLLECT_DIALECT")
@click.option("--group", default=None, envvar="TOKENMETER_COLLECT_GROUP",
              help="Consumer group (default: tokenmeter-collect-<topic>).")
@click.option("--source-bootstrap", default=None, envvar="TOKENMETER_COLLECT_SOURCE_BOOTSTRAP",
              help="Kafka of the source topic, if not tokenmeter's own.")
@click.option("--from-beginning", is_flag=True, help="Without committed offsets, start at the oldest record.")
@click.option("--batch-records", type=click.IntRange(1), default=5000, show_default=True,
              envvar="TOKENMETER_COLLECT_BATCH_RECORDS",
              help="At most this many source records per batch (also at most 4 MB per partition); each batch "
                   "costs an offsets request, a pending-batch write and a commit.")
@click.option("--exit-when-idle", type=float, default=None, help="Stop after this many seconds without records.")
@click.option("--state-file", type=click.Path(dir_okay=False, path_type=Path), envvar="TOKENMETER_COLLECT_STATE_FILE",
              help="Names the pending-batch records for exactly-once restarts and takeovers: the directory "
                   "<stem>.pending/ beside it, one record per source partition, shared by the group's members on this "
                   "host (default: <data_dir>/collect-kafka/<group>.<topic>.json; an old single file there is moved "
                   "into the directory).")
@mapping_option
@click.option("--processes", type=click.IntRange(1), default=1, show_default=True,
              envvar="TOKENMETER_COLLECT_PROCESSES",
              help="Bridge processes in the group (each spends ~16 CPU-us per event). More than the topic's "
                   "partitions would sit idle: clamped to them. Children are restarted if they die and stopped on "
                   "Ctrl-C; each log line names its member.")
@click.option("--member", default=None, hidden=True, help="K/N: set by --processes on its children (log lines).")
def kafka_command(topic: str, dialect: str, group: str | None, source_bootstrap: str | None, from_beginning: bool,
                  batch_records: int, exit_when_idle: float | None, state_file: Path | None,
                  mapping: Path | None, processes: int, member: str | None) -> None:
    """Bridge a gateway's own topic (Kong kafka-log, OTel collector kafka exporter) into tokenmeter.usage.

    With --processes N, N bridges share the topic's consumer group and its pending-batch records (a member killed
    or restarted, joining or leaving, repeats and loses nothing; docs/collectors.md)."""
    from collectors.kafka_bridge import KafkaBridge
    from collectors.sink import KafkaSink

    settings = _settings()
    group = group or f"tokenmeter-collect-{topic}"
    if state_file is None:
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", f"{group}.{topic}")
        state_file = settings.data_dir / "collect-kafka" / f"{safe}.json"
    if member is not None:
        _name_member_in_logs(member)
    elif processes > 1:
        processes = _clamp_to_partitions(processes, source_bootstrap or settings.bootstrap_servers, topic)
        if processes > 1:
            from collectors.kafka_members import run_members

            args = ["--topic", topic, "--dialect", dialect, "--group", group, "--batch-records", str(batch_records),
                    "--state-file", str(state_file)]
            args += ["--source-bootstrap", source_bootstrap] if source_bootstrap else []
            args += ["--from-beginning"] if from_beginning else []
            args += ["--exit-when-idle", repr(exit_when_idle)] if exit_when_idle is not None else []
            args += ["--mapping", str(mapping)] if mapping is not None else []
            raise SystemExit(run_members(processes, args, lambda line: click.echo(line, err=True)))
    bridge = KafkaBridge(
        source_bootstrap or settings.bootstrap_servers, topic, None if dialect == "auto" else dialect,
        group, KafkaSink(settings.bootstrap_servers, "collect:kafka"),
        mapping=load_mapping(mapping), from_beginning=from_beginning, batch_records=batch_records,
        exit_when_idle=exit_when_idle, state_path=state_file, group_timeouts=settings.group_timeouts,
        fetch_wait=settings.fetch_wait, leave_group_on_stop=member is None)  # members: see CommitLoop's reason
    run_service(bridge.run)

def _clamp_to_partitions(processes: int, bootstrap: str, topic: str) -> int:
    """A group gives each partition to one member: members beyond the partitions would only wait."""
    import asyncio

    from tokenmeter.kafka_topics import TopicMissing, topic_partitions

    try:
        partitions = len(asyncio.run(topic_partitions(bootstrap, topic, timeout=30.0)))
    except TopicMissing as exc:
        raise click.ClickException(str(exc)) from None
    if processes > partitions:
        click.echo(f"--processes {processes}: topic {topic} has {partitions} partition(s), and a group gives each to "
                   f"one member; running {partitions} process(es)", err=True)
    return min(processes, partitions)


def _name_member_in_logs(member: str) -> None:
    import logging

    from tokenmeter.cli_support import LOG_FORMAT

    for handler in logging.getLogger().handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT.replace("%(name)s", f"%(name)s [member {member}]")))


# Provider usage pollers add their commands to the same group (kept in their own package).
from collectors.provider_usage.cli_commands import register as _register_provider_usage  # noqa: E402

_register_provider_usage(collect)
