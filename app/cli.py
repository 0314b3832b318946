"""The `tokenmeter` command line. Each command imports its stage lazily, so `tokenmeter report` does not pay for
Faust and `tokenmeter worker` does not load chDB."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from tokenmeter.cli_support import (cli_settings, collect_young_objects_less_often, configure_logging,
                                    quiet_library_logs, run_service, time_option)
from tokenmeter.settings import Settings, SettingsError


def _settings() -> Settings:
    return cli_settings()


class _Commands(click.Group):
    """Settings a command cannot use (an invalid value, a port already taken, a budgets file it cannot read) end
    every command the same way, caught here once: a clear error and exit status 1, no traceback.

    A stage's commands (`_STAGE_COMMANDS`) are imported when they are asked for, not when the CLI starts: importing
    every stage (Dash, chDB, polars, pyarrow, Faust) cost each `tokenmeter` process about a CPU-second, paid by
    every child `up` starts and every `report`."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except SettingsError as exc:
            raise click.ClickException(str(exc)) from None
        except Exception as exc:
            # A service started where no Kafka answers (the loader, the dispatcher, the detector, a bridge): the
            # usual cause and its fix, not aiokafka's traceback. aiokafka is looked up, not imported: a command that
            # never loaded it cannot have raised its error, and the CLI root stays cheap (tests/test_cli.py).
            errors = sys.modules.get("aiokafka.errors")
            if errors is None or not isinstance(exc, errors.KafkaConnectionError):
                raise
            from tokenmeter.kafka_topics import broker_problem

            raise click.ClickException(broker_problem(exc, cli_settings().bootstrap_servers)) from None

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in _STAGE_COMMANDS:
            _load_stage_command(cmd_name)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *_STAGE_COMMANDS})

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's own listing, except that a stage command not imported yet is listed with its line from
        `_STAGE_HELP`: `tokenmeter --help` imported every stage to print one line each (0.45-0.5 CPU-s, twice
        what `tokenmeter report --help` costs)."""
        from click.utils import make_default_short_help

        rows = [(name, self.commands[name] if name in self.commands else _STAGE_HELP[name])
                for name in self.list_commands(ctx) if name not in self.commands or not self.commands[name].hidden]
        if rows:
            limit = formatter.width - 6 - max(len(name) for name, _ in rows)
            with formatter.section("Commands"):
                formatter.write_dl([(name, make_default_short_help(entry, limit) if isinstance(entry, str)
                                     else entry.get_short_help_str(limit)) for name, entry in rows])


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """tokenmeter: streaming usage analytics and cost attribution for LLM traffic."""
    collect_young_objects_less_often()
    quiet_library_logs()


@main.command()
def broker() -> None:
    """Run the embedded Kafka-compatible broker (tansu) and create tokenmeter's topics."""
    from app.broker import embedded_broker
    from tokenmeter.settings import ensure_port_free

    s = _settings()
    ensure_port_free(s.host, s.embedded_broker_port, "embedded_broker_port")
    with embedded_broker(s.host, s.embedded_broker_port, s.partitions) as bootstrap:
        click.echo(f"broker ready on {bootstrap} (memory storage: a restart loses all topics). Ctrl-C stops it.")
        run_service(lambda stop: stop.wait())  # until SIGTERM/SIGINT


@main.command()
@click.option("--source-topic", "source_topics", multiple=True, metavar="TOPIC",
              help="Also create this topic a `collect kafka` bridge reads (repeatable; e.g. otlp_spans): gateways and "
                   "the OpenTelemetry Collector do not create theirs on a cluster that does not auto-create topics.")
def topics(source_topics: tuple[str, ...]) -> None:
    """Create tokenmeter's topics on the configured Kafka (idempotent); for production clusters."""
    from app.broker import BrokerError, ensure_topics

    s = _settings()
    try:
        ensure_topics(s.bootstrap_servers, s.partitions, timeout=60, source_topics=source_topics)
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"topics ready on {s.bootstrap_servers}")


@main.command()
@click.option("--role", type=click.Choice(["all", "pricing", "budgets"]), default=None,
              help="all: pricing and budgets in one process; pricing: usage in, priced records and budget spend out; "
                   "budgets: owns the budgets, answers /v1/decision and /v1/reservations (default: "
                   "TOKENMETER_WORKER_ROLE, else all).")
def worker(role: str | None) -> None:
    """Run the Faust stream worker: validate, meter, price, aggregate."""
    from streams import run_worker

    run_worker(cli_settings(worker_role=role) if role else _settings())


@main.command()
def load() -> None:
    """Consume priced events and insert them into the warehouse (deduplicated on event_id)."""
    from streams.allocator import keep_freed_pages

    keep_freed_pages()  # before polars loads: as warehouse/loader.py, which `streams` below may import it after
    from streams import load_book
    from warehouse import WarehouseLocked, run_loader

    s = _settings()
    configure_logging(s)
    book = load_book(s)  # the loader records the catalog's history (cache savings use list prices)
    try:
        run_service(lambda stop: run_loader(s, stop=stop, price_book=book))
    except WarehouseLocked as exc:  # a second loader (one beside `up`'s): its message says what to do
        raise click.ClickException(f"{exc} (`tokenmeter status` shows whether `tokenmeter up` runs one)") from None


@main.command()
def dash() -> None:
    """Serve the dashboard (default http://127.0.0.1:8050)."""
    from dashboards import run_dashboard
    from tokenmeter.settings import ensure_port_free

    s = _settings()
    ensure_port_free(s.host, s.dash_port, "dash_port")
    run_dashboard(s)


@main.command()
@click.option("--demo", is_flag=True, help="Also generate realistic gateway traffic.")
@click.option("--without", "without", default=None, metavar="ROLE[,ROLE]",
              help="Roles not to start: dashboard, alerts (dispatcher), anomalies, finance (finance-watch), inbox "
                   "(--demo's alert inbox); the broker, worker and loader always run (default: TOKENMETER_UP_WITHOUT, "
                   "else none; '' starts every role).")
def up(demo: bool, without: str | None) -> None:
    """Start broker, worker, loader and dashboard (embedded unless configured otherwise); Ctrl-C stops all."""
    from app.supervisor import run_up
    from tokenmeter.settings import up_roles, up_roles_problems

    if without is None:
        settings = _settings()
    else:  # checked here to name the option, not the variable it overrides
        try:
            problems = up_roles_problems(up_roles(without))
        except ValueError as exc:  # a JSON list that is not JSON
            problems = [str(exc)]
        if problems:
            raise click.BadParameter("; ".join(problems), param_hint="--without")
        settings = cli_settings(up_without=without)
    sys.exit(run_up(settings, demo))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status file as JSON.")
def status(as_json: bool) -> None:
    """What `tokenmeter up` is running: each child's state and restarts, broker restarts and what they lost."""
    from app.supervisor import print_status

    sys.exit(print_status(_settings(), as_json, click.echo))


@main.command("demo-inbox")
def demo_inbox() -> None:
    """The demo's local alert inbox: a webhook receiver that stores alerts in <data_dir>/demo-inbox.jsonl."""
    from collectors.demo_inbox import serve
    from tokenmeter.settings import ensure_port_free

    s = _settings()
    ensure_port_free(s.host, s.demo_inbox_port, "demo_inbox_port")  # names the variable, not a bind traceback
    configure_logging(s)
    run_service(lambda stop: serve(s, stop))


@main.command()
@click.option("--events", type=int, default=None, help="Stop after this many events (default: run until stopped).")
@click.option("--rate", type=float, default=None, help="Events per second (default TOKENMETER_DEMO_EVENTS_PER_S).")
@click.option("--seed", type=int, default=None)
@click.option("--calendar", is_flag=True,
              help="Continue the demo history's weekday/hour calendar (and its live agent loops) instead of --rate.")
@click.option("--started", type=float, default=None, help="With --calendar: unix time the demo started (restarts).")
def demo(events: int | None, rate: float | None, seed: int | None, calendar: bool = False,
         started: float | None = None) -> None:
    """Produce realistic demo traffic into tokenmeter.usage."""
    from aiokafka.errors import KafkaConnectionError

    from tokenmeter.kafka_topics import broker_problem

    s = _settings()
    try:
        _demo_traffic(s, events, rate, seed, calendar, started)
    except KafkaConnectionError as exc:  # the stack is not running: say so and what to do, not aiokafka's traceback
        raise click.ClickException(broker_problem(exc, s.bootstrap_servers)) from None


def _demo_traffic(s: Settings, events: int | None, rate: float | None, seed: int | None, calendar: bool,
                  started: float | None) -> None:
    from collectors.demo import generate

    configure_logging(s)
    decisions = f"http://{s.host}:{s.api_port}/v1/decision"  # obey budgets like a gateway (fails open)
    if calendar:  # `up --demo` after its history: no cliff at 'now' for the anomaly detector (collectors/demo_live.py)
        from datetime import datetime, timezone

        from collectors.demo_live import generate_live

        since = datetime.fromtimestamp(started, timezone.utc) if started else None
        run_service(lambda stop: generate_live(s.bootstrap_servers, stop, decision_url=decisions, seed=seed,
                                               start=since, loops_after=s.demo_loops_after_seconds))
        return
    run_service(lambda stop: generate(s.bootstrap_servers, rate or s.demo_events_per_s, events, seed, stop,
                                            decision_url=decisions))


@main.command()
@click.option("--group-by", "group_by", default="team", show_default=True,
              help="Comma-separated dimensions (report dimensions or tag:<key>; untagged events grouped under '').")
@click.option("--since", default=None, help="Start time (inclusive), RFC 3339 or a date.")
@click.option("--until", default=None, help="End time (exclusive), RFC 3339 or a date.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option("--cost-lines", is_flag=True,
              help="One row per cost line per group: token parts, request fee, server-side tool fees (web_search, ...).")
def report(group_by: str, since: str | None, until: str | None, fmt: str, cost_lines: bool = False) -> None:
    """Cost and tokens grouped by dimensions; works while the stack runs and when it does not."""
    from warehouse import WarehouseError, open_warehouse, render_report
    from warehouse.showback import check_dims, is_tag, report_spend  # tags grouped as export and Showback group them

    dims = [d.strip() for d in group_by.split(",") if d.strip()]
    try:  # before opening the warehouse
        check_dims(dims, "--group-by")
    except WarehouseError as exc:
        raise click.BadParameter(str(exc).removeprefix("--group-by: "), param_hint="--group-by") from None
    if cost_lines and any(is_tag(d) for d in dims):
        raise click.BadParameter(f"--cost-lines groups by report dimensions only, not {', '.join(filter(is_tag, dims))}",
                                 param_hint="--group-by")
    start, end = time_option(since, "--since"), time_option(until, "--until")  # before opening the warehouse
    if start and end and start >= end:  # an empty range printed "(no rows)": read as "nothing was spent"
        raise click.BadParameter(f"{until} is not after --since {since}: the range is empty (swapped?)",
                                 param_hint="--until")
    s = _settings()
    try:  # an unreachable ClickHouse says so (naming its variable) like every other warehouse command
        wh = open_warehouse(s)
        try:
            if cost_lines:
                frame = wh.cost_lines(dims, since=start, until=end)
            else:
                frame = report_spend(wh, dims, since=start, until=end)
        finally:
            wh.close()
    except WarehouseError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(render_report(frame, fmt, total=not cost_lines))


@main.command()
@click.option("--in", "source", type=click.File("rb"), default="-", help="JSON lines input (default stdin).")
@click.option("--out", "target", type=click.File("w"), default="-", help="Priced JSON lines output (default stdout).")
@click.option("--dialect", default=None, help="Input format (as `collect file --dialect`); auto-detected per line "
                                                "when omitted or auto.")
def price(source, target, dialect: str | None) -> None:  # noqa: ANN001
    """Price JSON lines (canonical events, provider responses, gateway logs): one priced event per input event."""
    from app.pricing_cli import price_lines
    from collectors import DIALECTS  # here, not a click.Choice: the CLI root imports no stage (tests/test_cli.py)

    if dialect is not None and dialect != "auto" and dialect not in DIALECTS:  # refused once, not on every line
        raise click.BadParameter(f"{dialect!r} is not one of auto, {', '.join(DIALECTS)}", param_hint="--dialect")
    failed = price_lines(source, target, None if dialect == "auto" else dialect, _settings())
    if failed:
        raise SystemExit(1)


@main.command()
@click.option("--events", type=int, default=50_000, show_default=True, help="Synthetic events per measurement.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--alert-samples", type=int, default=100, show_default=True,
              help="Budget threshold crossings timed end to end to a webhook (0: skip alerts and decisions).")
@click.option("--warehouse-rows", type=int, default=10_000_000, show_default=True,
              help="Events generated in chDB for the dashboard-query and loader figures (0: skip).")
@click.option("--collector-processes", type=click.IntRange(1, 4), default=2, show_default=True,
              help="Also measure each collector with this many bridge processes in one group (`collect kafka "
                   "--processes N`), reported beside the 1-process figure with its CPU per event (1: skip).")
def bench(events: int, as_json: bool, alert_samples: int, warehouse_rows: int, collector_processes: int) -> None:
    """Measure raw aiokafka, a naive per-event Faust agent and tokenmeter's worker side by side, budget alert and
    decision latency, and the warehouse's query latency and insert rate."""
    from app.bench import run_bench

    run_bench(events, as_json, _settings(), budgets=alert_samples > 0, budget_samples=max(alert_samples, 2),
              warehouse_rows=warehouse_rows, collector_processes=collector_processes)


@main.command()
@click.option("--minutes", type=float, default=5.0, show_default=True, help="How long traffic and kills run.")
@click.option("--cycles", type=click.IntRange(1), default=None, help="Kill cycles (default: 2 per minute).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--seed", type=int, default=None, help="Seed of the kill plan and traffic (printed).")
@click.option("--rate", type=float, default=24.0, show_default=True, help="Events per second over all senders.")
@click.option("--shifted-duplicates/--no-shifted-duplicates", default=True, show_default=True,
              help="Also re-send some events with a later ts (dedupe must not depend on ts).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep the run's data and logs here (default: a temporary directory, removed).")
def soak(minutes: float, cycles: int | None, as_json: bool, seed: int | None, rate: float,
         shifted_duplicates: bool, data_dir: Path | None) -> None:
    """Chaos soak: the whole stack under steady traffic and random SIGKILLs of every component, then exactness,
    alert, decision and process checks; exits 1 if one fails (docs/soak.md)."""
    from app.soak import soak_main

    sys.exit(soak_main(minutes, cycles, as_json, seed, rate, shifted_duplicates, data_dir))


# Command groups owned by a stage (`tokenmeter collect ...`, `tokenmeter prices ...`): (module, attribute); the
# command's name is the attribute's with "-" for "_" (tests/test_cli_support.py checks it).
_STAGE_MODULES = (
    ("collectors.cli", "collect"),
    ("streams.pricing.cli", "prices"),
    ("streams.budgets.cli", "budget"),
    ("app.reprice_cli", "reprice"),
    ("app.priced_cli", "priced"),
    ("app.deadletters_cli", "deadletters"),
    ("streams.alerts.cli", "alerts"),
    ("streams.anomalies.cli", "anomalies"),
    ("warehouse.export_cli", "export"),
    ("warehouse.finance_cli", "showback"),
    ("warehouse.finance_cli", "close"),
    ("warehouse.finance_cli", "reopen"),
    ("warehouse.drift_cli", "drift"),
    ("warehouse.completeness_cli", "completeness"),
    ("warehouse.finance_watch", "finance_watch"),
    ("warehouse.dedup_cli", "dedup"),
    ("warehouse.demo_history", "demo_history"),
    ("dashboards.cli", "users"),
)
_STAGE_COMMANDS = {attribute.replace("_", "-"): (module, attribute) for module, attribute in _STAGE_MODULES}
# What `tokenmeter --help` lists for each without importing it: its help to the first full stop (click shortens that
# to the terminal's width); tests/test_cli.py checks the listing equals the one of the imported commands.
_STAGE_HELP = {
    "collect": "Collect gateway logs and traces into canonical events on Kafka (tokenmeter.usage).",
    "prices": "Price catalog: import LiteLLM's cost map, list prices in force, explain a model's price.",
    "budget": "Budgets per team, user, key, model or tag: alert at thresholds, throttle or block at 100%.",
    "reprice": "Re-price stored events with the current price book (prices in force at each event's time).",
    "deadletters": ("Dead letters: what was rejected and why, the (redacted) letters, and replaying what a fix "
                    "makes good."),
    "priced": "Read tokenmeter.priced (JSON or Arrow messages) as people and scripts do.",
    "alerts": "Deliver budget and anomaly alerts to Slack, PagerDuty and signed webhooks.",
    "anomalies": "Spend anomaly detection: run the detector, measure it on labelled traffic of three families.",
    "export": "Chargeback for a month as FOCUS 1.3, CSV or Parquet; totals equal `tokenmeter report`.",
    "showback": ("Direct, allocated, corrections (of closed months) and total cost per team or cost center, with "
                 "GL account and owner (from TOKENMETER_COST_CENTERS_FILE; allocation rules from it or "
                 "TOKENMETER_ALLOCATION_FILE)."),
    "close": ("Lock a month: its charges are frozen (exports of it stay byte-for-byte the same) and later "
              "events, re-prices or corrections for it are booked as correction lines in the first open month."),
    "reopen": ("Re-open a closed month to restate it: its close is archived with who, when and why (never "
               "deleted; listed by `close --list`), its numbers are live again until `close --month` freezes them "
               "again."),
    "drift": ("Compare the providers' cost reports (`tokenmeter collect openai-usage` / `anthropic-usage`) with "
              "the metered cost."),
    "completeness": ("Is every source (gateway or collector dialect, dead-lettering stage, provider usage "
                     "poller) still sending as usual? Limits: TOKENMETER_COMPLETENESS_STALE_MINUTES (60), "
                     "_DROP_RATIO (0.5), _MIN_PER_HOUR (10), _POLLER_STALE_HOURS (26); see docs/finance.md."),
    "finance-watch": ("Check cost drift and source completeness every INTERVAL seconds and alert (the alert "
                      "dispatcher delivers them to its TOKENMETER_FINANCE_NOTIFY)."),
    "dedup": ("Cross-source duplicates per (winner source, duplicate source) over the last N days: copies of one"
              " call that were not counted again, matched by provider response id, request id or trace+span "
              "(docs/finance.md)."),
    "demo-history": ("Back-fill 30 days of demo history into an empty warehouse (run by `tokenmeter up --demo` "
                     "before the loader starts; the loader must not be running)."),
    "users": "Dashboard users and roles (finance sees everything, team:<name> only that team).",
}


def _load_stage_command(name: str) -> None:
    """Import the stage module of command `name` and add its command to `main` (nothing when that stage is not
    installed)."""
    import importlib

    module_name, attribute = _STAGE_COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if not (exc.name and module_name.startswith(exc.name)):  # a stage not built yet, not a broken import
            raise
        return
    command = getattr(module, attribute)
    main.add_command(command, name)
    if name == "budget":  # joins warehouse and budgets, so it lives in the top-level package
        from streams.budgets.rebuild import rebuild_command

        command.add_command(rebuild_command)


if __name__ == "__main__":
    main()


def run() -> None:
    """The `tokenmeter` entry point: `main`, then the process ends without the native libraries' exit-time teardown.
    A command that read Parquet through pyarrow beside polars' thread pools (`showback`, `export` of a closed month)
    finished its work and output, then aborted in that teardown now and then ("terminate called without an active
    exception", exit -6; 3 of 10 `showback` runs on one machine) or hung in it. Once `main` has returned and no
    Python thread of ours is left running, output and logs are flushed and the process exits with main's code."""
    import logging
    import os
    import threading

    try:
        main()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)  # a thread still working: Python's own exit waits for it
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    logging.shutdown()
    os._exit(code or 0)
