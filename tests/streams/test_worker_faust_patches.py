"""The worker's Faust patches refuse to run on versions or classes they were not written for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streams import faust_patches
from streams.faust_patches import FaustPatchError
from tokenmeter.settings import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_installed_stack_is_the_one_the_patches_were_written_for():
    faust_patches.check()
    pins = (ROOT / "pyproject.toml").read_text()
    for package, version in faust_patches.WRITTEN_FOR.items():
        assert f'"{package}=={version}"' in pins  # pinned exactly, together with the patches


def test_a_different_version_is_refused_with_a_clear_message(monkeypatch):
    real = faust_patches._installed
    monkeypatch.setattr(faust_patches, "_installed", lambda p: "0.14.1" if p == "aiokafka" else real(p))
    with pytest.raises(FaustPatchError) as refused:
        faust_patches.patch_classes()
    assert "aiokafka is 0.14.1, the patches were written for 0.14.0" in str(refused.value)
    assert "streams/faust_patches.py" in str(refused.value)


def test_a_missing_patched_attribute_is_refused(monkeypatch):
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    monkeypatch.delattr(AIOKafkaConsumerThread, "seek_to_committed")
    with pytest.raises(FaustPatchError, match="AIOKafkaConsumerThread.seek_to_committed is missing"):
        faust_patches.check()


def test_the_worker_command_refuses_to_start_on_another_version(tmp_path):
    """The real CLI: a clear error and exit status 1 before anything starts (sitecustomize fakes the version)."""
    (tmp_path / "sitecustomize.py").write_text(
        "import importlib.metadata as m\n_real = m.version\n"
        "m.version = lambda p: '0.16.0' if p == 'faust-streaming' else _real(p)\n")
    out = subprocess.run([sys.executable, "-m", "app", "worker"], capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin",
                              "TOKENMETER_KAFKA_BOOTSTRAP": "127.0.0.1:9", "TOKENMETER_API_PORT": str(free_port()),
                              "TOKENMETER_DATA_DIR": str(tmp_path / "data")})
    assert out.returncode == 1, out.stderr
    assert "faust-streaming is 0.16.0, the patches were written for 0.15.3" in out.stderr


def test_the_worker_consumer_fetches_with_the_settings_wait(tmp_path):
    """Patch 1 gives the consumer Faust builds the worker's `fetch_max_wait_ms` (Faust hard-codes 1500)."""
    import asyncio

    from streams.worker import create_worker_app
    from tokenmeter.settings import Settings

    async def built_wait() -> int:
        settings = Settings(data_dir=tmp_path, kafka_bootstrap="127.0.0.1:9", api_port=free_port(),
                            fetch_max_wait_ms=77)
        app = create_worker_app(settings)
        consumer = app.consumer._thread._create_worker_consumer(app.transport)  # built, never started
        try:
            return consumer._fetch_max_wait_ms
        finally:
            await consumer.stop()

    assert asyncio.run(built_wait()) == 77


def test_every_private_stream_attribute_take_batches_uses_is_checked():
    """streams/batch_take.py drives a Faust Stream through its private internals: each one it touches is in the
    list the worker checks before it starts (a Faust upgrade that drops one is refused, not a silent stall)."""
    import re
    from pathlib import Path

    import streams.batch_take as batch_take
    from streams.faust_patches import PATCHED_ATTRIBUTES

    used = set(re.findall(r"stream\.(_[a-z_]+)", Path(batch_take.__file__).read_text()))
    checked = {attribute for module, cls, attribute in PATCHED_ATTRIBUTES if (module, cls) == ("faust.streams", "Stream")}
    assert used and used <= checked, used - checked


def test_the_worker_api_closes_silent_connections(tmp_path, monkeypatch):
    """Patch 6 (hostile24): the worker API kept a connection that sent half a request head, or nothing, for aiohttp's
    keep-alive default, 3630 s. The app's own web runner, on a real socket, with the idle time shortened to 1 s."""
    import asyncio
    import time

    from aiohttp.web import TCPSite

    from streams import faust_patches
    from streams.worker import create_worker_app
    from tokenmeter.settings import Settings

    monkeypatch.setattr(faust_patches, "IDLE_TIMEOUT_S", 1.0)

    async def closed_after() -> list[float]:
        app = create_worker_app(Settings(data_dir=tmp_path, kafka_bootstrap="127.0.0.1:9", api_port=free_port()))
        runner = app.web._runner
        await runner.setup()
        port = free_port()
        try:
            await TCPSite(runner, "127.0.0.1", port).start()
            started = time.monotonic()
            times = []
            for head in (b"", b"GET /health HTTP/1.1\r\nHost: x\r\n"):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(head)
                assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the server, without an answer
                times.append(time.monotonic() - started)
                writer.close()
            return times
        finally:
            await runner.cleanup()

    assert all(elapsed < 8 for elapsed in asyncio.run(closed_after()))


def test_the_worker_app_attaches_no_venusian_markers(tmp_path):
    """Patch 7: Faust's decorators attach no autodiscovery markers to the worker's agents (reading the caller's frame
    for them cost ~0.04 CPU-s a worker start); the agents are registered as before."""
    from streams.worker import create_worker_app
    from tokenmeter.settings import Settings

    app = create_worker_app(Settings(data_dir=tmp_path, kafka_bootstrap="127.0.0.1:9", api_port=free_port()))
    assert set(app.agents) == {"streams.worker.meter_and_price", "streams.budgets.service.evaluate_budgets"}
    assert [name for name, agent in app.agents.items() if "__venusian_callbacks__" in vars(agent)] == []


def test_a_missing_venusian_attach_is_refused(monkeypatch):
    import faust.utils.venusian

    monkeypatch.delattr(faust.utils.venusian, "attach")
    with pytest.raises(FaustPatchError, match="faust.utils.venusian.attach is missing"):
        faust_patches.check()
