"""The catalog's YAML is read with libyaml's safe loader where PyYAML has it: the same documents as the
pure-Python safe loader, file for file, for every bundled catalog file."""

from __future__ import annotations

import yaml

from streams.pricing.catalog import _SAFE_LOADER, BUNDLED_CATALOG_DIR, catalog_files, read_yaml


def test_the_fast_loader_reads_every_bundled_file_as_the_pure_python_one():
    files = catalog_files([BUNDLED_CATALOG_DIR])
    assert len(files) > 20
    for path in files:
        assert read_yaml(path)[0] == (yaml.safe_load(path.read_bytes()) or {}), path
    assert _SAFE_LOADER is getattr(yaml, "CSafeLoader", yaml.SafeLoader)
