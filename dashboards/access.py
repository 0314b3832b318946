"""Role enforcement in the data layer: every query a page or the JSON API runs goes through `ScopedWarehouse`.

A `team:<name>` user gets `team = <name>` added to every spend query; asking for another team raises
AccessDenied (the API answers 403). Hand-written SQL must carry the team condition (`team_condition()`), or
`query()` refuses to run it for a team user: a forgotten filter fails loudly instead of leaking numbers.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from dashboards.handle import current_handle
from dashboards.users import Principal

SCOPE_PARAM = "scope_team"


class AccessDenied(PermissionError):
    """The signed-in user asked for numbers outside their role."""


class ScopedWarehouse:
    def __init__(self, warehouse: Any, principal: Principal):
        self._warehouse = warehouse
        self.principal = principal

    @property
    def team(self) -> str | None:
        """The only team this user may see; None for finance."""
        return self.principal.team

    # Filters -----------------------------------------------------------------------------------------
    def scope_filters(self, filters: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        filters = {k: list(v) for k, v in (filters or {}).items() if v}
        if self.team is None:
            return filters or None
        asked = filters.get("team")
        if asked and self.team not in asked:
            raise AccessDenied(f"user {self.principal.name} may only see team {self.team}")
        filters["team"] = [self.team]
        return filters

    def team_condition(self, column: str = "team") -> str:
        """SQL for "rows this user may see", to AND into hand-written queries."""
        return "1" if self.team is None else f"{column} = {{{SCOPE_PARAM}:String}}"

    # Queries -----------------------------------------------------------------------------------------
    def spend(self, group_by: list[str], since: Any = None, until: Any = None,
              filters: dict[str, list[str]] | None = None):
        return self._warehouse.spend(group_by, since=since, until=until, filters=self.scope_filters(filters))

    def spend_over_time(self, bucket: str = "hour", group_by: str | None = None, since: Any = None,
                        until: Any = None, filters: dict[str, list[str]] | None = None):
        return self._warehouse.spend_over_time(bucket, group_by, since=since, until=until,
                                               filters=self.scope_filters(filters))

    def distinct_values(self, dim: str, since: Any = None, until: Any = None) -> list[str]:
        if self.team is None:
            return self._warehouse.distinct_values(dim, since=since, until=until)
        if dim == "team":
            return [self.team]
        frame = self.spend([dim], since=since, until=until)
        return sorted(str(v) for v in frame[dim].to_list())

    def query(self, sql: str, params: dict[str, Any] | None = None):
        params = dict(params or {})
        if self.team is not None:
            if "{" + SCOPE_PARAM + ":String}" not in sql:
                raise AccessDenied("query is not limited to the user's team; refusing to run it")
            params[SCOPE_PARAM] = self.team
        return self._warehouse.query(sql, params)

    def freshness(self) -> dict[str, Any]:
        if self.team is None:
            return self._warehouse.freshness()
        frame = self.query("SELECT max(ts) AS last_event_ts, count() AS events FROM priced_events WHERE "
                           + self.team_condition())
        row = frame.row(0, named=True)
        return {"last_event_ts": row["last_event_ts"] if row["events"] else None, "events": int(row["events"])}

    @property
    def raw(self) -> Any:
        """The unscoped warehouse, for functions that take a team argument themselves (export_month)."""
        return self._warehouse


@contextmanager
def scoped_warehouse(principal: Principal | None = None) -> Iterator[ScopedWarehouse]:
    """The app's warehouse limited to the signed-in user (inside a request)."""
    from dashboards.auth import current_principal

    principal = principal or current_principal()
    if principal is None:
        raise AccessDenied("login required")
    with current_handle().use() as warehouse:
        yield ScopedWarehouse(warehouse, principal)
