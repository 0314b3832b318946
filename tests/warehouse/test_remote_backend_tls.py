"""A reader of the chDB owner's endpoint (warehouse.backends.RemoteBackend) loads the CA bundle once per process.

httpx builds a verified SSL context for every Client it makes: `load_verify_locations` of the system CA bundle,
~45 CPU-ms here, for a loopback http:// URL that never uses TLS. `live_team_totals` (the tests' warehouse poll,
every 0.1 s, and the soak's) and every `live_reader` made a new backend each time: ~50 CPU-ms a poll in the
polling process (suite34). One verified context is made once and shared; https still verifies."""

from __future__ import annotations

import ssl

from warehouse.backends import RemoteBackend


def test_backends_share_one_verified_context(monkeypatch):
    made = []
    real = ssl.create_default_context

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - counts, then builds the real context
        made.append(args or kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)
    for _ in range(5):
        RemoteBackend("http://127.0.0.1:9", timeout=1, secret="s").close()
    assert len(made) <= 1, made  # the first backend of the process may build it; no later one does


def test_the_shared_context_still_verifies_certificates_and_host_names():
    from warehouse.backends import tls_context

    context = tls_context()
    assert context is tls_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0  # the CA bundle is loaded (httpx's default: certifi or SSL_CERT_*)
