"""`tokenmeter collect openai-usage` and `tokenmeter collect anthropic-usage` (added to the `collect` group by
`register`). Kafka and the data dir come from tokenmeter's settings; the admin key from an env var or a file."""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import click

from collectors.provider_usage.common import (
    BUCKET_WIDTHS,
    AdminClient,
    AuthError,
    PollState,
    ProviderApiError,
    ProviderSpec,
    Publisher,
    floor_to,
    parse_since,
    run_poller,
)
from tokenmeter.cli_support import cli_settings, configure_logging, run_service


def read_admin_key(key_env: str, key_file: Path | None) -> tuple[str, str]:
    """(key, where it came from). The source is named in errors; the key itself never is."""
    if key_file is not None:
        try:
            key = key_file.read_text().strip()
        except OSError as exc:
            raise click.ClickException(f"--admin-key-file {key_file}: cannot read: {exc.strerror}") from None
        if not key:
            raise click.ClickException(f"--admin-key-file {key_file} is empty")
        return key, f"file {key_file}"
    key = os.environ.get(key_env, "").strip()
    if not key:
        raise click.ClickException(f"no admin key: set the environment variable {key_env} "
                                   f"(or pass --admin-key-env NAME / --admin-key-file FILE)")
    return key, f"environment variable {key_env}"


def _run(spec: ProviderSpec, make_client: Callable[[str, str, str], AdminClient], base_url: str, key_env: str,
         key_file: Path | None, since: str, once: bool, interval: float) -> None:
    settings = cli_settings()
    configure_logging(settings)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise at info
    key, key_source = read_admin_key(key_env, key_file)
    now = datetime.now(timezone.utc)
    try:
        # Start at a bucket boundary so the first bucket is whole.
        start = floor_to(parse_since(since, now), BUCKET_WIDTHS[spec.bucket_width])
        state = PollState(settings.data_dir / "provider-usage" / f"{spec.name}.json")
    except (ValueError, ProviderApiError) as exc:
        raise click.ClickException(str(exc)) from None
    publisher = Publisher(settings.bootstrap_servers)

    try:
        run_service(lambda stop: run_poller(spec, make_client(base_url, key, key_source), publisher, state, start,
                                            once=once, interval_s=interval, stop=stop))
    except AuthError as exc:
        raise click.ClickException(str(exc)) from None
    except ProviderApiError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - e.g. Kafka unreachable: one clear line, exit 1
        raise click.ClickException(f"{spec.name} usage poll failed: {type(exc).__name__}: {exc}") from None


def _group_by(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _command(name: str, provider: str, key_env: str, base_url: str, default_group_by: str,
             make_spec: Callable[[str, tuple[str, ...]], ProviderSpec],
             make_client: Callable[..., AdminClient]) -> click.Command:
    env = f"TOKENMETER_COLLECT_{provider.upper()}"

    @click.command(name)
    @click.option("--since", default="7d", show_default=True, envvar=f"{env}_SINCE",
                  help="First poll (no saved state): 7d, 24h, a date or RFC 3339 time.")
    @click.option("--bucket", type=click.Choice(sorted(BUCKET_WIDTHS)), default="1d", show_default=True,
                  envvar=f"{env}_BUCKET", help="Usage bucket width (costs are daily).")
    @click.option("--group-by", default=default_group_by, show_default=True, envvar=f"{env}_GROUP_BY",
                  help="Comma-separated usage dimensions.")
    @click.option("--base-url", default=base_url, show_default=True, envvar=f"{env}_BASE_URL")
    @click.option("--admin-key-env", default=key_env, show_default=True, help="Env variable holding the admin key.")
    @click.option("--admin-key-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="File holding the admin key (instead of the env variable).")
    @click.option("--once", is_flag=True, help="Poll once and exit.")
    @click.option("--interval", type=click.FloatRange(min=1), default=3600.0, show_default=True,
                  envvar=f"{env}_INTERVAL", help="Seconds between polls.")
    def command(since: str, bucket: str, group_by: str, base_url: str, admin_key_env: str,
                admin_key_file: Path | None, once: bool, interval: float) -> None:
        try:
            spec = make_spec(bucket, _group_by(group_by))
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        _run(spec, make_client, base_url, admin_key_env, admin_key_file, since, once, interval)

    command.help = (f"Poll {provider}'s organization usage and cost reports into tokenmeter.provider-usage "
                    f"(reconciliation). State: <data_dir>/provider-usage/{provider}.json.")
    return command


def register(collect: click.Group) -> None:
    from collectors.provider_usage import anthropic, openai

    commands: list[tuple[Any, ...]] = [
        ("openai-usage", "openai", openai.KEY_ENV, openai.DEFAULT_BASE_URL, "model,project_id",
         openai.OpenAIUsage, openai.client),
        ("anthropic-usage", "anthropic", anthropic.KEY_ENV, anthropic.DEFAULT_BASE_URL, "model,workspace_id",
         anthropic.AnthropicUsage, anthropic.client),
    ]
    for args in commands:
        collect.add_command(_command(*args))
