"""The worker API's admin routes and their token. Routes that write need `Authorization: Bearer <token>`:

    PUT    /v1/budgets/{name}   body: a budget (JSON, as `budget apply` reads); notify secrets go to the route
                                secret store, the topic gets masked references; answers the budget, masked
    DELETE /v1/budgets/{name}   a tombstone in `tokenmeter.budgets`

The token is TOKENMETER_ADMIN_TOKEN when set, otherwise the content of `<data_dir>/admin.token`, generated
(mode 0600) at the first start of a worker. 401 (with WWW-Authenticate) without it.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from pathlib import Path
from typing import Any

import faust
import orjson

from tokenmeter import topics

from .model import BudgetError, parse_budget
from .store import BudgetStoreError, protect_budget, public_budget

log = logging.getLogger("tokenmeter.budgets")

TOKEN_FILE = "admin.token"


def token_path(data_dir: Path | str) -> Path:
    return Path(data_dir).resolve() / TOKEN_FILE


def admin_token(settings: Any) -> str:
    """The configured token, or the data dir's token file (created 0600 on first use)."""
    configured = getattr(settings, "admin_token", None)
    if configured is not None and configured.get_secret_value():
        return configured.get_secret_value()
    path = token_path(settings.data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            log.warning("%s is readable by other users; tightening it to 0600", path)
            os.chmod(path, 0o600)
        token = path.read_text().strip()
        if token:
            return token
        raise OSError(f"{path} is empty: delete it (a new token is generated) or set TOKENMETER_ADMIN_TOKEN")
    token = secrets.token_urlsafe(32)
    try:
        os.write(fd, (token + "\n").encode())
    finally:
        os.close(fd)
    log.info("admin token generated in %s (mode 0600); admin API calls send it as 'Authorization: Bearer ...'",
             path)
    return token


def bearer_ok(header: str | None, token: str) -> bool:
    """Constant-time check of an `Authorization: Bearer <token>` header."""
    text = header or ""
    given = text[7:].strip() if text[:7].lower() == "bearer " else ""
    # surrogatepass: aiohttp decodes a header's non-UTF-8 bytes as lone surrogates, which plain encode() refused
    # with a 500 (hostile24); encoded this way they are bytes no valid token has
    return bool(given) and hmac.compare_digest(given.encode("utf-8", "surrogatepass"),
                                               token.encode("utf-8", "surrogatepass"))


class _AdminRoutes:
    def __init__(self, service: Any):
        self.service = service
        self.token: str | None = None
        try:
            self.token = admin_token(service.settings)  # generated (0600) at the first start
        except OSError as exc:
            log.error("no admin token (admin routes answer 503 until it can be read): %s", exc)

    def refused(self, web: Any, request: Any) -> Any | None:
        if self.token is None:
            try:
                self.token = admin_token(self.service.settings)
            except OSError as exc:
                return web.json({"error": f"admin token unavailable: {exc}"}, status=503)
        if bearer_ok(request.headers.get("Authorization"), self.token):
            return None
        return web.json({"error": "admin route: send 'Authorization: Bearer <token>' (TOKENMETER_ADMIN_TOKEN or "
                                  "the file admin.token in the data directory)"}, status=401,
                        headers={"WWW-Authenticate": 'Bearer realm="tokenmeter-admin"'})

    async def put(self, web: Any, request: Any, name: str) -> Any:
        refused = self.refused(web, request)
        if refused is not None:
            return refused
        try:
            data = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return web.json({"error": f"body is not JSON: {exc}"}, status=400)
        if not isinstance(data, dict):
            return web.json({"error": "body must be a budget object"}, status=400)
        data = {**data, "name": data.get("name", name)}
        if data["name"] != name:
            return web.json({"error": f"name {data['name']!r} in the body differs from {name!r} in the path"},
                            status=400)
        try:
            budget = protect_budget(parse_budget(data), self.service.settings.data_dir)
        except BudgetError as exc:
            return web.json({"error": str(exc), "problems": exc.problems}, status=400)
        except BudgetStoreError as exc:
            return web.json({"error": str(exc)}, status=500)
        await (await self.service.budgets_topic.send(key=name.encode(), value=orjson.dumps(budget.to_json())))
        log.info("budget %r saved through the admin API", name)
        return web.json({"budget": public_budget(budget)})

    async def delete(self, web: Any, request: Any, name: str) -> Any:
        refused = self.refused(web, request)
        if refused is not None:
            return refused
        if name not in self.service.budgets:
            return web.json({"error": f"no budget named {name!r}"}, status=404)
        await (await self.service.budgets_topic.send(key=name.encode(), value=None))
        log.info("budget %r deleted through the admin API (%s)", name, topics.BUDGETS)
        return web.json({"deleted": name})


def install_admin_routes(app: faust.App, service: Any) -> None:
    """PUT / DELETE /v1/budgets/{name} on the worker's web server, behind the admin token."""
    routes = _AdminRoutes(service)

    class BudgetAdmin(faust.web.View):
        async def put(self, request, name):  # noqa: ANN001
            return await routes.put(self, request, name)

        async def delete(self, request, name):  # noqa: ANN001
            return await routes.delete(self, request, name)

    app.page("/v1/budgets/{name}")(BudgetAdmin)
