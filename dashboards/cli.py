"""`tokenmeter users add|list`: dashboard users in the users file (password hashes, never passwords)."""

from __future__ import annotations

from pathlib import Path

import click

from dashboards.users import UsersFileError, add_user, check_role, read_users, users_file_path


def _path(file: str | None) -> Path:
    if file:
        return Path(file)
    from tokenmeter.cli_support import cli_settings

    return users_file_path(cli_settings())


@click.group()
def users() -> None:
    """Dashboard users and roles (finance sees everything, team:<name> only that team)."""


@users.command("add")
@click.argument("name")
@click.option("--role", required=True, help="finance or team:<name>")
@click.option("--file", "file", default=None,
              help="Users file (default TOKENMETER_DASHBOARD_USERS_FILE or <data_dir>/dashboard-users.yaml).")
@click.password_option(help="Prompted (twice) when not given; never echoed or logged.")
def add(name: str, role: str, file: str | None, password: str) -> None:
    """Add or update a user; the password is stored as a scrypt hash."""
    try:
        check_role(role)
        path = _path(file)
        add_user(path, name, password, role)
    except UsersFileError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"user {name} ({role}) saved in {path}")


@users.command("list")
@click.option("--file", "file", default=None, help="Users file (see `users add`).")
def list_users(file: str | None) -> None:
    """Names and roles (hashes are not shown)."""
    path = _path(file)
    if not path.exists():
        raise click.ClickException(f"{path}: no users file yet; add one with `tokenmeter users add NAME --role ...`")
    try:
        entries = read_users(path)
    except UsersFileError as exc:
        raise click.ClickException(str(exc)) from None
    for name, entry in sorted(entries.items()):
        click.echo(f"{name}\t{entry['role']}")
