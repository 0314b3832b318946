"""The admin token of the worker API: routes that write (creating, changing, deleting budgets) need
`Authorization: Bearer <token>`. The token is TOKENMETER_ADMIN_TOKEN when set, otherwise the content of
`<data_dir>/admin.token`, generated (mode 0600) at the first start of a worker."""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from pathlib import Path
from typing import Any

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
    return bool(given) and hmac.compare_digest(given.encode(), token.encode())
