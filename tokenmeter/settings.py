"""One settings object for every stage: `TOKENMETER_*` environment variables, then an optional YAML file
(`TOKENMETER_CONFIG`), then defaults. Invalid values are reported all at once, naming the variable."""

from __future__ import annotations

import errno
import json
import os
import socket
import typing
from functools import cached_property
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

ENV_PREFIX = "TOKENMETER_"


class SettingsError(Exception):
    """Raised with every problem of a configuration, one per line."""


# floor28: the sources are read here, not by pydantic-settings. Importing it cost every `tokenmeter` child ~0.04
# CPU-s (its CLI, dotenv and cloud secret providers, and asyncio with ssl and subprocess, ~0.04 more for a command
# that runs no event loop) for what is below: each field from TOKENMETER_<FIELD> (any case), a list or map field
# as JSON, below that the YAML file TOKENMETER_CONFIG names, keyword overrides above both; maps merged key by key
# across the sources, as pydantic-settings' deep update did.


def _yaml_values(problems: list[str]) -> dict[str, Any]:
    """The TOKENMETER_CONFIG file's settings; its bad keys appended to `problems` (reported with every other). Its keys are the settings' names (`dash_port`) or their variables'
    (`TOKENMETER_DASH_PORT`), in any case. A key that names no setting, or a setting given twice, is an error (all
    of them at once, with the setting a misspelt key is closest to): ignored, a typo left a service on its default
    (an unsigned webhook, the wrong port) without a word. Values are never shown (a misspelt secret is a secret)."""
    path = os.environ.get(ENV_PREFIX + "CONFIG")
    if not path:
        return {}
    import yaml  # only with a config file: ~0.01 CPU-s a process otherwise

    try:
        loaded = yaml.load(Path(path).read_text(), Loader=_loader_refusing_repeated_keys(yaml)) or {}
    except (OSError, yaml.YAMLError, RecursionError) as exc:  # RecursionError: a file nested thousands deep
        raise SettingsError(f"TOKENMETER_CONFIG={path}: cannot read YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise SettingsError(f"TOKENMETER_CONFIG={path}: expected a mapping at the top level")
    values: dict[str, Any] = {}
    bad_keys = []
    for key, value in loaded.items():
        name = str(key).lower()
        name = name[len(ENV_PREFIX):] if name.startswith(ENV_PREFIX.lower()) else name
        if name not in Settings.model_fields:
            bad_keys.append(f"{key}: no such setting{_closest_setting(name)}")
        elif name in values:
            bad_keys.append(f"{key}: {name} is given twice")
        else:
            values[name] = value
    problems.extend(f"TOKENMETER_CONFIG={path}: {problem}" for problem in bad_keys)
    return values


def _closest_setting(name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name, Settings.model_fields, n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def _loader_refusing_repeated_keys(yaml: Any) -> type:
    """PyYAML's safe loader, except that a mapping holding one key twice is an error (PyYAML keeps the last one)."""
    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: its keys may be set again below it
                    continue
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, typing.Hashable):
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"the key {key!r} is given twice", key_node.start_mark)
                    seen.add(key)
            return super().construct_mapping(node, deep)

    return Loader


def _env_values(problems: list[str]) -> dict[str, Any]:
    """TOKENMETER_<FIELD> in any case; a list or map field's value is JSON (each that is not appended to
    `problems`)."""
    environ = {k.lower(): v for k, v in os.environ.items()}
    values = {}
    for name in Settings.model_fields:
        value = environ.get((ENV_PREFIX + name).lower())
        if value is None:
            continue
        if name in _JSON_FIELDS:
            try:
                value = json.loads(value)
            except (ValueError, RecursionError):  # not JSON, or nested too deep to read
                problems.append(_not_json(name))  # never reaches validation
                continue
        values[name] = value
    return values


def _merged(low: dict[str, Any], high: dict[str, Any]) -> dict[str, Any]:
    """`high` over `low`; two maps merge key by key."""
    merged = dict(low)
    for key, value in high.items():
        old = merged.get(key)
        merged[key] = _merged(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return merged


# roles37: what `tokenmeter up` may leave out (`TOKENMETER_UP_WITHOUT`, `up --without`): a headless host needs no
# dashboard, a site may run its anomaly detection or its alert dispatcher elsewhere. The broker (when embedded), the
# worker and the loader are the pipeline itself (usage in, priced, stored) and are always started.
UP_CORE_ROLES = ("broker", "worker", "loader")
UP_OPTIONAL_ROLES = ("dashboard", "alerts", "anomalies", "finance", "inbox")


def up_roles_problems(names: typing.Iterable[str]) -> list[str]:
    """What is wrong with a list of roles to leave out, every name at once (empty: nothing)."""
    core = [n for n in names if n in UP_CORE_ROLES]
    unknown = [n for n in names if n not in UP_CORE_ROLES and n not in UP_OPTIONAL_ROLES]
    problems = []
    if core:
        problems.append(f"{', '.join(core)}: always started (the core: {', '.join(UP_CORE_ROLES)})")
    for name in unknown:
        import difflib  # only for a misspelt name: every process validates its settings

        close = difflib.get_close_matches(name, UP_OPTIONAL_ROLES, n=1, cutoff=0.6)
        problems.append(f"{name!r}: no such role" + (f" (did you mean {close[0]}?)" if close else ""))
    if problems:
        problems.append(f"roles that can be left out: {', '.join(UP_OPTIONAL_ROLES)}")
    return problems


def up_roles(value: object) -> object:
    """`dashboard,anomalies` (the variable's or the option's text) or a JSON list as the other list variables take,
    as a tuple of lower-case names; anything else is left to the field's validation."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except (ValueError, RecursionError):
                raise ValueError('must be role names separated by commas, or a JSON list: dashboard,alerts or '
                                 '["dashboard", "alerts"]') from None
        else:
            value = text.split(",")
    if isinstance(value, (list, tuple)):
        if not all(isinstance(v, str) for v in value):  # a number, an object, a list: unhashable, unnamed
            raise ValueError("must be role names (text), separated by commas or in a JSON list of strings")
        return tuple(dict.fromkeys(n for v in value if (n := v.strip().lower())))  # a trailing comma, a name twice
    return value


class Settings(BaseModel):
    """The one configuration: keyword overrides, then TOKENMETER_* variables, then the TOKENMETER_CONFIG YAML file."""

    model_config = ConfigDict(extra="ignore", validate_default=True)

    data_dir: Path = Field(Path("./.tokenmeter"), description="Where chDB, checkpoints and state live.")
    host: str = Field("127.0.0.1", description="Address our servers bind to.")
    embedded_broker_port: int = Field(9092, ge=1, le=65535, description="Port of the embedded broker.")
    child_restart_unresponsive_seconds: float = Field(
        60.0, ge=0, le=86400, description="`tokenmeter up` restarts a child that has been suspended (SIGSTOP) or hung "
        "(its health URL silent for 30 s) this long; 0: report it, never restart it.")
    stop_drain_seconds: float = Field(
        30.0, ge=0, le=3600, description="On a clean stop, `tokenmeter up` waits this long for the worker and the "
        "loader to consume what the memory-only embedded broker holds before stopping them (it keeps nothing across "
        "a stop); what is left then is reported as lost. 0: stop at once.")
    kafka_bootstrap: str | None = Field(None, description="Kafka bootstrap servers; unset: embedded broker.")
    kafka_session_timeout_seconds: float = Field(
        10.0, ge=1, le=300, description="Consumer groups: a member silent this long is dropped. The embedded broker "
        "holds a new group's first JoinGroup for half of it, and a rejoin for about twice it.")
    # latency11: the embedded broker (tansu) answers a fetch that waits for data only at this deadline, not when
    # data arrives, so every caught-up consumer hop adds up to this much (aiokafka's default 500 ms). A Kafka
    # cluster answers as soon as data arrives: there a larger value only saves idle fetches, and costs nothing.
    fetch_max_wait_ms: int = Field(
        100, ge=1, le=10_000, description="Kafka consumers: longest wait of a fetch for new data. The embedded broker "
        "answers only at this deadline, so it is each consumer hop's added latency (idle: ~1000/this fetches/s per "
        "consumer); a Kafka cluster answers when data arrives, so a larger value costs nothing there.")
    clickhouse_url: str | None = Field(None, description="ClickHouse server URL; unset: embedded chDB.")
    dash_port: int = Field(8050, ge=1, le=65535, description="Dashboard port.")
    dashboard_public_url: str | None = Field(
        None, description="The dashboard's address as people open it (behind a "
        "proxy: https://tokenmeter.example.com/): alert links (Slack button, PagerDuty link, webhook dashboard_url) "
        "point there. Unset: http://<TOKENMETER_HOST>:<TOKENMETER_DASH_PORT>/, localhost for 0.0.0.0 or ::.")
    api_port: int = Field(6066, ge=1, le=65535, description="Workers' HTTP API port (decisions, health).")
    partitions: int = Field(4, ge=1, le=256, description="Partitions of topics the embedded broker creates.")
    worker_batch_size: int = Field(10000, ge=1, description="Max Kafka messages per worker batch.")
    worker_batch_seconds: float = Field(0.2, gt=0, description="Max wait to fill a worker batch.")
    worker_columnar: bool = Field(True, description="Price batches on the columnar path (streams/columnar); "
                                  "false: the per-event path (streams/batch.py). Both give identical output.")
    worker_warm_up: bool = Field(True, description="Price one chunk (8 MB) of generated traffic on the pricing thread "
                                 "as the worker starts, outputs dropped, so its first batch is not priced cold "
                                 "(~0.7 CPU-s once; streams/warm_up.py). false: the first batch pays it.")
    priced_format: Literal["json", "arrow"] = Field(
        "arrow", description="Format of the worker's messages on tokenmeter.priced: arrow (Arrow IPC streams of priced "
        "events, header tokenmeter-format: arrow; the loader stores them without decoding JSON: ~1.4-1.9x its rows per "
        "CPU-second; the default since issue 14, arrow19) or json (arrays of the same events, no header: for "
        "deployments with readers of the topic outside tokenmeter that expect JSON). Every tokenmeter reader reads "
        "both (tokenmeter/priced_wire.py; `tokenmeter priced tail` prints either as JSON).")
    # issue 14, squeeze27: the priced output is ~2.5x the usage it prices and crosses the broker twice; snappy
    # batches are ~3.5x smaller, halve the embedded broker's CPU per event and cost the worker's event loop nothing
    # measurable (zstd ~8x smaller but dearer to the loop; aiokafka's lz4 is level 9, ~3x the producer's CPU:
    # docs/rounds/benchmarks.md). Faust has one producer per worker: the codec applies to everything it sends.
    worker_compression: Literal["none", "snappy", "lz4", "zstd", "gzip"] = Field(
        "snappy", description="Kafka compression of the record batches `tokenmeter worker` produces (tokenmeter.priced, "
        "dead letters, budget spend: one producer); none sends them as before. Consumers decompress whatever a batch "
        "declares (each batch at most 64x its size, tokenmeter/kafka_inflate.py); snappy, lz4 and zstd use cramjam "
        "(declared in pyproject.toml). The Arrow IPC bodies stay uncompressed either way.")
    worker_role: Literal["all", "pricing", "budgets"] = Field(
        "all", description="What `tokenmeter worker` runs: all (pricing and budgets in one process), pricing (consumes "
        "tokenmeter.usage, sends priced records and budget spend; no reservations) or budgets (owns budgets from "
        "tokenmeter.budget-spend, answers /v1/decision and /v1/reservations; no usage). Split roles are two consumer "
        "groups (budgets shares role all's); docs/budgets.md, 'Worker roles'.")
    worker_nice: int = Field(
        0, ge=0, le=19, description="CPU priority of `tokenmeter worker` (Unix nice, 0-19: higher yields the cores "
        "to the rest), applied to every thread at start. For the pricing role beside an admitting budgets worker on "
        "the same cores: pricing is throughput-bound, admission latency-bound (docs/budgets.md, 'Priority').")
    worker_sched_slice_ms: float | None = Field(
        None, ge=0.1, le=100, description="Time slice `tokenmeter worker` asks the kernel for (Linux 6.12+ EEVDF, "
        "sched_setattr; every thread): e.g. 0.3 for a budgets worker, so an arriving reservation preempts other work "
        "within that instead of the default slice. Unset: the kernel's default (docs/budgets.md, 'Priority').")
    # 100,000 (was 20,000; issue 14, loader9): each insert pays ~70-90 ms of chDB work whatever its size (7 views
    # planned, a part per table), ~3.5-4.5 µs per row at 20,000; a window holds ~2 KB per row at its peak
    # (docs/warehouse.md). Live traffic is cut at load_flush_seconds first: only a backlog fills a window.
    load_batch_rows: int = Field(100000, ge=1, description="Max rows per warehouse insert.")
    load_flush_seconds: float = Field(1.0, gt=0, description="Max wait before the loader flushes.")
    demo_events_per_s: float = Field(40.0, gt=0, description="Demo traffic rate (events per second).")
    demo_loops_after_seconds: float = Field(
        60.0, ge=0, le=3600, description="`up --demo`: growth's live agent loop (the one its budget blocks) starts this "
        "long after the demo traffic, search's a minute after it.")
    up_without: tuple[str, ...] = Field(
        (), description="Roles `tokenmeter up` does not start (names separated by commas, or a JSON list): dashboard, "
        "alerts (the alert dispatcher), anomalies (the anomaly detector), finance (finance-watch), inbox (`--demo`'s "
        "alert inbox). The broker, the worker and the loader are always started. `up --without` overrides it.")
    demo_inbox_port: int = Field(8025, ge=1, le=65535, description="Port of the demo's local alert inbox.")
    log_level: str = Field("info", description="debug, info, warning or error.")

    @field_validator("webhook_secret", "admin_token", "dashboard_secret_key", mode="before")
    @classmethod
    def _empty_secret_is_unset(cls, value: object) -> object:
        # `KEY: ${KEY:-}` in docker-compose.yml passes "" when nobody set it: an empty key signs nothing, so it
        # must take the unset path (webhooks unsigned *and said so*, a token file, a random session key)
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("dashboard_public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from urllib.parse import urlsplit

        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s) URL people open, e.g. https://tokenmeter.example.com/")
        return value.strip()

    @field_validator("dashboard_trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        networks = []
        for entry in value:
            try:  # strict: "10.0.0.1/8" (host bits set) is a typo or a misunderstanding, not a network to guess at
                networks.append(str(ipaddress.ip_network(entry.strip(), strict=True)))
            except ValueError as exc:
                raise ValueError(f"{entry!r} is not an IP address or CIDR network ({exc})") from None
        return networks

    @field_validator("up_without", mode="before")
    @classmethod
    def _up_roles_named(cls, value: object) -> object:
        return up_roles(value)

    @field_validator("up_without")
    @classmethod
    def _up_roles_known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        problems = up_roles_problems(value)
        if problems:  # one line, every bad name in it: the report names the variable once
            raise ValueError("; ".join(problems))
        return value

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:  # checked here: an unknown one killed services in logging setup
        if value.lower() not in ("debug", "info", "warning", "error", "critical"):
            raise ValueError("must be debug, info, warning, error or critical")
        return value.lower()

    price_overrides: Path | None = Field(None, description="YAML of negotiated discounts and custom models.")
    azure_deployments: dict[str, str] = Field(
        default_factory=dict, description="Azure OpenAI deployment name -> model (JSON in the env variable)."
    )
    # Alerts (budgets and anomalies) -----------------------------------------------------------------
    pagerduty_url: str = Field("https://events.pagerduty.com/v2/enqueue", description="PagerDuty Events API v2 URL.")
    webhook_secret: SecretStr | None = Field(None, description="HMAC-SHA256 key for signing generic webhooks.")
    alert_max_attempts: int = Field(8, ge=1, description="Delivery attempts per alert and route before giving up.")
    alert_backoff_seconds: float = Field(1.0, gt=0, description="First retry delay; doubles per attempt.")
    alert_backoff_max_seconds: float = Field(300.0, gt=0, description="Longest retry delay.")
    anomaly_notify: list[str] = Field(default_factory=list, description=(
        "Routes for anomaly alerts (JSON list); read by the alert dispatcher, never published."))
    alert_timeout_seconds: float = Field(10.0, gt=0, description="Timeout of one delivery HTTP request.")
    alert_max_in_flight: int = Field(16, ge=1, description="Delivery HTTP requests in flight at once.")
    alerts_port: int | None = Field(None, ge=1, le=65535, description="Dispatcher /health + /metrics; unset: off.")
    # Enforcement -------------------------------------------------------------------------------------
    budgets_file: Path | None = Field(None, description="YAML of budgets applied to the budgets topic at worker start.")
    decision_header_prefix: str = Field("x-tokenmeter-", description="Headers read by /v1/decision (prefix+dim).")
    admin_token: SecretStr | None = Field(
        None, description="Bearer token of the worker API's admin routes; unset: <data_dir>/admin.token (0600).")
    reservation_ttl_seconds: float = Field(
        900.0, gt=0, le=86400, description="An unsettled reservation's hold expires after this (longer than your "
        "longest call plus the usage pipeline's delay).")
    reservation_expiry_grace_seconds: float | None = Field(
        None, gt=0, le=86400, description="After a broker loss, a hold that expired before its usage was priced is "
        "held again until this long after its expiry (its usage may have been lost with the broker); unset: the TTL.")
    # Dashboard and warehouse -------------------------------------------------------------------------
    dashboard_users_file: Path | None = Field(None, description="YAML of dashboard users, hashes and roles.")
    dashboard_secret_key: SecretStr | None = Field(None, description="Signs dashboard sessions; random if unset.")
    dashboard_secure_cookies: bool = Field(False, description="Mark the session cookie Secure (dashboard behind HTTPS).")
    dashboard_session_hours: float = Field(12.0, gt=0, description="A dashboard session ends this long after sign-in.")
    dashboard_login_max_failures: int = Field(5, ge=1, description="Failed sign-ins per user name before a lock-out.")
    dashboard_login_ip_max_failures: int = Field(20, ge=1, description="Failed sign-ins per client IP before a lock-out.")
    # dash31: waitress's pool. Warehouse queries run one at a time (dashboards/handle.py); the other threads keep
    # sign-ins, assets and /healthz answering while a page's callbacks wait for it.
    dashboard_threads: int = Field(
        8, ge=1, le=64, description="Threads serving dashboard requests (waitress); requests past them wait in a queue. "
        "Connections hold none while idle.")
    # suite24: every tick re-runs the open page's callbacks (server and browser ~0.13 CPU-s a second an idle page)
    dashboard_refresh_seconds: float = Field(
        5.0, ge=1, le=86400, description="Open dashboard pages re-read their charts, tables and freshness this often "
        "(a page also reads them when it opens or a filter changes); longer costs the server and the browser less.")
    dashboard_lockout_seconds: float = Field(
        300.0, gt=0, description="Lock-out after too many failed sign-ins (also the window they are counted in).")
    # proxy31: behind a proxy every client was the proxy's address, so 20 failed sign-ins by anyone locked all out
    dashboard_trusted_proxies: list[str] = Field(
        default_factory=list, description="Reverse proxies in front of the dashboard (JSON list of IP addresses or CIDR "
        "networks, e.g. [\"10.0.0.0/8\"]): only from these peers are X-Forwarded-For (the client: the right-most "
        "address not itself a trusted proxy) and X-Forwarded-Proto read; from any other peer they are removed. Unset: "
        "trust none, the client is the TCP peer.")
    cost_centers_file: Path | None = Field(None, description="YAML: team/project/tag -> cost center, GL account, owner.")
    allocation_file: Path | None = Field(None, description="YAML of shared-cost allocation rules; unset: the cost-centers file's.")
    raw_retention_days: int = Field(400, ge=1, description="Days of raw priced events kept; rollups are kept.")
    dedup_source_preference: list[str] = Field(
        default_factory=lambda: ["gateway", "otel", "sdk"], min_length=1,
        description="Cross-source dedup: which copy of a call is counted, best first (JSON list of sources or the "
        "groups gateway, otel, sdk); unlisted sources rank last.")
    # Finance alerts (cost drift, source completeness): routed by the alert dispatcher like budget alerts -------
    finance_notify: list[str] = Field(default_factory=list, description=(
        "Routes for drift and completeness alerts (JSON list); read by the alert dispatcher, never published."))
    drift_threshold_pct: Decimal = Field(Decimal(5), ge=0, description="Drift alert: gap above this % of the provider's cost...")
    drift_min_usd: Decimal = Field(Decimal(1), ge=0, description="...and above this many USD (per day, provider and model).")
    completeness_stale_minutes: int = Field(60, ge=1, description="A source that usually sends is stale after this long silent.")
    completeness_drop_ratio: Decimal = Field(Decimal("0.5"), gt=0, le=1, description="Dropping: below this share of its usual hourly events...")
    completeness_min_per_hour: int = Field(10, ge=1, description="...when it usually sends at least this many per hour.")
    completeness_poller_stale_hours: float = Field(26.0, gt=0, description="A provider usage poller is stale after this long without a fetch.")
    # HTTP collector ---------------------------------------------------------------------------------
    collect_body_timeout_seconds: float = Field(
        10.0, gt=0, description="HTTP collector: a request body must arrive within this; slower clients get 408.")

    def __init__(self, **overrides: Any) -> None:
        """ops34: every problem of every source in one SettingsError (the file's keys, variables that are not JSON,
        bad values); they were raised one kind at a time, so an operator learnt a third mistake on the third start.
        A bad value that came from the file names the file, as it is set nowhere in the environment."""
        problems: list[str] = []
        from_file = _yaml_values(problems)
        from_env = _env_values(problems)
        try:
            super().__init__(**_merged(_merged(from_file, from_env), overrides))
        except ValidationError as exc:
            from_file_only = set(from_file) - set(from_env) - set(overrides)
            problems.extend(_invalid_values(exc, from_file_only))
        if problems:
            raise SettingsError("invalid settings:\n  " + "\n  ".join(problems))

    # Derived values -------------------------------------------------------------------------------
    @property
    def embedded_broker(self) -> bool:
        return not self.kafka_bootstrap

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or f"{self.host}:{self.embedded_broker_port}"

    @property
    def group_timeouts(self) -> dict[str, int]:
        """aiokafka consumer-group arguments: the session timeout, and a heartbeat well inside it."""
        session_ms = round(self.kafka_session_timeout_seconds * 1000)
        return {"session_timeout_ms": session_ms, "heartbeat_interval_ms": min(1000, session_ms // 3)}

    @property
    def fetch_wait(self) -> dict[str, int]:
        """aiokafka consumer argument of every consumer that follows a topic (see `fetch_max_wait_ms`)."""
        return {"fetch_max_wait_ms": self.fetch_max_wait_ms}

    @property
    def warehouse_path(self) -> Path:
        return self.data_dir.resolve() / "warehouse"

    @cached_property
    def dashboard_url(self) -> str:
        """Where alert links point: TOKENMETER_DASHBOARD_PUBLIC_URL, else the dashboard's own address. A wildcard bind
        address (0.0.0.0, docker-compose.yml's) is no address to open: localhost instead (walk32: links read
        http://0.0.0.0:8050/)."""
        if self.dashboard_public_url:
            return self.dashboard_public_url
        host = "localhost" if self.host in ("0.0.0.0", "::", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.dash_port}/"


def load_settings(**overrides: Any) -> Settings:
    """Build the settings; a SettingsError lists every bad key, variable and value at once."""
    return Settings(**overrides)


def _invalid_values(exc: ValidationError, from_file: set[str]) -> list[str]:
    """pydantic's report, one line per bad value, named by its variable (and the file, when it was set there)."""
    lines = []
    for item in exc.errors(include_url=False):
        field_name = str(item["loc"][0])
        name = env_name(field_name) + _item_named(item["loc"][1:])
        if field_name in from_file:
            name += f" (in TOKENMETER_CONFIG={os.environ.get(ENV_PREFIX + 'CONFIG')})"
        lines.append(f"{name}: {item['msg']} ({_shown(field_name, item.get('input'))})")
    return lines


def _item_named(path: tuple) -> str:
    """Where in a list or map setting the bad value is: ` (item 1)`, ` (key 'prod')`. Glued to the name, as before,
    they spelt a variable that does not exist (TOKENMETER_DEDUP_SOURCE_PREFERENCE_1)."""
    parts = [f"item {p}" if isinstance(p, int) else f"key {str(p)!r}" for p in path]
    return f" ({', '.join(parts)})" if parts else ""


# The fields whose variable holds JSON: lists and maps (pydantic-settings' "complex" fields among ours).
_JSON_FIELDS = frozenset(name for name, field in Settings.model_fields.items()
                         if typing.get_origin(field.annotation) in (list, dict))


def _not_json(field_name: str) -> str:
    """Name the variable, the value and the form it must take."""
    name = env_name(field_name)
    value = next((v for k, v in os.environ.items() if k.upper() == name), None)
    kind = typing.get_origin(Settings.model_fields[field_name].annotation)
    form = '{"key": "value"}' if kind is dict else '["a", "b"]'
    return f"{name}: must be JSON, e.g. {form} ({_shown(field_name, value)})"


# Settings whose values hold secrets: webhook URLs and routing keys (the notify lists), keys and tokens. An error
# names the variable, never the value (hostile24: a route list that was not JSON was printed with its Slack URL).
# ops34: the ClickHouse URL too (compose's holds the server's password: http://tokenmeter:<password>@clickhouse...).
SECRET_SETTINGS = frozenset({"anomaly_notify", "finance_notify", "webhook_secret", "admin_token",
                             "dashboard_secret_key", "clickhouse_url"})


def _shown(field_name: str, value: Any) -> str:
    if field_name in SECRET_SETTINGS:
        return "value not shown: it may hold secrets"
    return f"got {value!r}"


def fetch_wait(settings: Settings | None = None) -> dict[str, int]:
    """`Settings.fetch_wait` for helpers given only a bootstrap address: the environment's settings."""
    return (settings or load_settings()).fetch_wait


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def ensure_port_free(host: str, port: int, field_name: str, change: str | None = None) -> None:
    """Fail early with the variable to change (or `change`: what else sets that port, e.g. a command's option),
    instead of a bind error deep inside a library."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise SettingsError(
                    f"port {port} on {host} is already in use; set {change or env_name(field_name)} to a free port"
                ) from None
            # not this machine's address (or not an address): the port is not the problem
            raise SettingsError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); set TOKENMETER_HOST to "
                                "an address of this machine (127.0.0.1, 0.0.0.0 or one of its interfaces)") from None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
