"""hostile24: a credential header holding bytes that are not ASCII / UTF-8 (`Authorization: Bearer \\xff\\xfe`, as a
broken client or a scanner sends) made every door answer 500 with a traceback in its log: the worker's admin routes
(`bearer_ok` encoded the value as UTF-8, aiohttp had decoded the byte as a lone surrogate), `collect http`'s API
key check (the same), and the dashboard API's HTTP Basic (werkzeug's base64 decoding raised ValueError). Each is a
wrong credential: 401."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from collectors.http_ingest import IngestServer
from collectors.sink import KafkaSink
from streams.budgets.admin import bearer_ok
from tokenmeter.settings import free_port, load_settings

ODD_VALUES = [b"Bearer \xff\xfe", b"Bearer \xc3", b"Bearer \xed\xa0\x80", b"Bearer caf\xc3\xa9"]


def test_the_admin_check_refuses_undecodable_bytes_as_aiohttp_gives_them():
    for raw in ODD_VALUES:
        header = raw.decode("utf-8", "surrogateescape")  # aiohttp's decoding of header values
        assert bearer_ok(header, "adm-token") is False
    assert bearer_ok("Bearer caf\u00e9", "caf\u00e9") is True  # a non-ASCII token set by the operator still works


async def _answers(port: int, header_name: bytes, values: list[bytes]) -> list[bytes]:
    out = []
    for value in values:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
                     + header_name + b": " + value + b"\r\nConnection: close\r\n\r\n{}")
        await writer.drain()
        out.append(await reader.read())
        writer.close()
    return out


@pytest.mark.parametrize("header_name", [b"Authorization", b"x-api-key"])
def test_collect_http_answers_401_to_undecodable_keys(header_name):
    async def run() -> list[bytes]:
        server = IngestServer(KafkaSink("127.0.0.1:1", "collect:http"), ["the-key"], 1 << 20)
        runner = web.AppRunner(server.app(), access_log=None)
        await runner.setup()
        port = free_port()
        try:
            await web.TCPSite(runner, "127.0.0.1", port).start()
            values = ODD_VALUES if header_name == b"Authorization" else [v[7:] for v in ODD_VALUES]
            return await _answers(port, header_name, values)
        finally:
            await runner.cleanup()

    for answer in asyncio.run(run()):
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]


def test_the_dashboard_api_answers_401_to_undecodable_basic_credentials(tmp_path):
    from dashboards import create_app
    from dashboards.users import add_user

    users_file = tmp_path / "users.yaml"
    add_user(users_file, "fin", "fin-pass", "finance")
    settings = load_settings(data_dir=tmp_path, dashboard_users_file=users_file, dashboard_secret_key="k" * 32)
    client = create_app(settings).server.test_client()
    for value in ["Basic \xff\xfe", "Basic \u00e9t\u00e9", "Basic ###", "Basic"]:
        response = client.get("/api/v1/spend", headers={"Authorization": value})
        assert response.status_code == 401, (value, response.status_code)
