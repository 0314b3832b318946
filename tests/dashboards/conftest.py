"""Dashboard tests use the headless Chromium options from tests/conftest.py."""
