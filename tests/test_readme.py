"""Issue 13: the README is what a newcomer reads first: what tokenmeter is, the two commands, the contract, connecting
a gateway in brief, and links; at most 15 KB, every local link pointing at a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_the_readme_stays_within_15_kb():
    assert len(README.read_bytes()) <= 15_000, "move detail to docs/ (docs/benchmarks.md, the stage pages)"


def test_every_local_link_of_the_readme_exists():
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text())
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert local, "the README links its docs pages"
    assert [link for link in local if not (ROOT / link).exists()] == []
