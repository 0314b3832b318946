"""`python -m streams.pricing.litellm_history` on a small real git repository (git init in tmp_path, commits with set
days, a rename of the map file): the versions it writes start on the first day a commit shows each price, bisection
from sampled days finds the same days, retired models keep their prices, and the files load as a catalog."""

from __future__ import annotations

import json
import os
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from price_support import price_on
from streams.pricing.book import load_price_book
from streams.pricing.litellm_history import main
from tokenmeter.events import Usage

MILLION_EACH = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
OLD_NAME = "model_prices.json"
NEW_NAME = "model_prices_and_context_window.json"


def _entry(provider: str, input_per_million: str, output_per_million: str, **extra) -> dict:
    return {"litellm_provider": provider, "mode": "chat",
            "input_cost_per_token": float(Decimal(input_per_million).scaleb(-6)),
            "output_cost_per_token": float(Decimal(output_per_million).scaleb(-6)), **extra}


ALPHA = "fireworks_ai/accounts/fireworks/models/alpha-7b"
BETA = "together_ai/org/Beta-Chat"
GAMMA = "vertex_ai/gamma-maas"
BUCKET = "together-ai-up-to-4b"
# (commit day, file name, map): the history a test repository is built from
HISTORY = [
    ("2024-01-10T09:00:00+00:00", OLD_NAME, {ALPHA: _entry("fireworks_ai", "1", "2"),
                                             BUCKET: _entry("together_ai", "0.1", "0.1")}),
    # a second commit the same day: the day's last copy is what that day shows
    ("2024-01-10T18:00:00+00:00", OLD_NAME, {ALPHA: _entry("fireworks_ai", "1", "3"),
                                             BETA: _entry("together_ai", "0.5", "0.5"),
                                             BUCKET: _entry("together_ai", "0.1", "0.1")}),
    ("2024-01-20T09:00:00+00:00", OLD_NAME, {ALPHA: _entry("fireworks_ai", "1", "3"),
                                             BETA: _entry("together_ai", "0.5", "0.5"),
                                             BUCKET: _entry("together_ai", "0.1", "0.1")}),
    ("2024-02-05T09:00:00+00:00", OLD_NAME, {ALPHA: _entry("fireworks_ai", "1", "3"),
                                             BETA: _entry("together_ai", "0.6", "0.6"),
                                             BUCKET: _entry("together_ai", "0.1", "0.1")}),
    # renamed, and a model added in the same commit
    ("2024-02-20T09:00:00+00:00", NEW_NAME, {ALPHA: _entry("fireworks_ai", "1", "3"),
                                             BETA: _entry("together_ai", "0.6", "0.6"),
                                             GAMMA: _entry("vertex_ai-maas-models", "2", "8"),
                                             BUCKET: _entry("together_ai", "0.1", "0.1")}),
    # alpha retired (no longer listed); gamma gains a cached price
    ("2024-03-15T09:00:00+00:00", NEW_NAME, {BETA: _entry("together_ai", "0.6", "0.6"),
                                             GAMMA: _entry("vertex_ai-maas-models", "2", "8",
                                                           cache_read_input_token_cost=2e-07),
                                             BUCKET: _entry("together_ai", "0.1", "0.1")}),
    ("2024-04-01T09:00:00+00:00", NEW_NAME, {BETA: _entry("together_ai", "0.6", "0.6"),
                                             GAMMA: _entry("vertex_ai-maas-models", "2", "8",
                                                           cache_read_input_token_cost=2e-07),
                                             BUCKET: _entry("together_ai", "0.1", "0.1")}),
]


def _git(repo: Path, *args: str, when: str | None = None) -> None:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.invalid", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.invalid")
    if when:
        env.update(GIT_AUTHOR_DATE=when, GIT_COMMITTER_DATE=when)
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("litellm")
    _git(root, "init", "-q", "-b", "main")
    current = None
    for when, name, data in HISTORY:
        if current and name != current:
            _git(root, "mv", current, name)
        current = name
        # a large, mostly unchanged body keeps git's rename detection sure of the move
        body = dict(data, **{f"padding/model-{i}": {"litellm_provider": "elsewhere"} for i in range(40)},
                    sample_spec={"edited": when})  # every commit changes the file
        (root / name).write_text(json.dumps(body, indent=4, sort_keys=True))
        _git(root, "add", "-A")
        _git(root, "commit", "-q", "-m", f"update {when}", when=when)
    return root


def _models(out: Path) -> dict[str, dict]:
    return {f"{doc['provider']}/{model}": entry for path in sorted(out.glob("*.yaml"))
            for doc in [yaml.safe_load(path.read_text())] for model, entry in doc["models"].items()}


def _days(entry: dict) -> list[str]:
    return [str(v["effective_from"]) for v in entry["versions"]]


def test_versions_start_on_the_first_commit_day_showing_each_price(repo, tmp_path, capsys):
    assert main(["--mirror", str(repo), "--out", str(tmp_path)]) == 0
    models = _models(tmp_path)
    # the size-tier bucket is no model; fireworks ids keep the part after models/, vertex ids lose vertex_ai/
    assert set(models) == {"fireworks/alpha-7b", "together/org/beta-chat", "vertex_ai/gamma-maas"}
    assert _days(models["fireworks/alpha-7b"]) == ["2024-01-10"]
    assert models["fireworks/alpha-7b"]["versions"][0]["output"] == "3"  # the day's last commit
    assert _days(models["together/org/beta-chat"]) == ["2024-01-10", "2024-02-05"]
    assert _days(models["vertex_ai/gamma-maas"]) == ["2024-02-20", "2024-03-15"]  # followed across the rename
    assert models["vertex_ai/gamma-maas"]["versions"][1]["cached_input"] == "0.2"
    notes = models["together/org/beta-chat"]["versions"][1]["notes"]
    assert "changed (input: 0.5 -> 0.6; output: 0.5 -> 0.6)" in notes and "unverified first-party" in notes
    assert "no longer listed" in models["fireworks/alpha-7b"]["versions"][0]["notes"]
    source = models["together/org/beta-chat"]["versions"][1]["source"]
    assert source.startswith("https://github.com/BerriAI/litellm/blob/") and source.endswith("/" + OLD_NAME)
    assert "skipped 1: Together size-tier bucket" in capsys.readouterr().out


def test_sampled_days_then_bisection_find_the_same_days(repo, tmp_path):
    every_day, sampled = tmp_path / "every", tmp_path / "sampled"
    main(["--mirror", str(repo), "--out", str(every_day)])
    main(["--mirror", str(repo), "--step-days", "40", "--out", str(sampled)])  # samples 01-10, 02-20, 04-01 only
    def versions(out: Path) -> dict[str, list[dict]]:  # days and prices (notes name the copies read, which differ)
        return {key: [{k: v for k, v in version.items() if k != "notes"} for version in entry["versions"]]
                for key, entry in _models(out).items()}

    assert versions(sampled) == versions(every_day)
    assert _days(_models(sampled)["together/org/beta-chat"]) == ["2024-01-10", "2024-02-05"]


def test_written_files_price_by_day_and_keep_a_retired_models_price(repo, tmp_path):
    main(["--mirror", str(repo), "--out", str(tmp_path)])
    book = load_price_book(catalog_dir=tmp_path)
    assert price_on(book, "together", "org/Beta-Chat", "2024-01-09", MILLION_EACH).status == "unpriced"
    assert price_on(book, "together", "org/Beta-Chat", "2024-02-04", MILLION_EACH).cost_usd == Decimal("1.0")
    assert price_on(book, "together", "org/Beta-Chat", "2024-02-05", MILLION_EACH).cost_usd == Decimal("1.2")
    retired = price_on(book, "fireworks_ai", "accounts/fireworks/models/alpha-7b", "2024-06-01", MILLION_EACH)
    assert retired.cost_usd == Decimal("4")


def test_only_unpriced_leaves_out_models_the_catalog_prices(repo, tmp_path):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "together.yaml").write_text(
        'provider: together\nsource: https://example.invalid/\nmodels:\n'
        '  org/beta-chat:\n    versions:\n      - {effective_from: 2024-01-01, input: "0.5", output: "0.5"}\n')
    for provider in ("fireworks", "vertex_ai"):
        (catalog / f"{provider}.yaml").write_text(
            f'provider: {provider}\nsource: https://example.invalid/\nmodels:\n'
            '  other:\n    versions:\n      - {effective_from: 2024-01-01, input: "1", output: "1"}\n')
    main(["--mirror", str(repo), "--only-unpriced", str(catalog), "--out", str(catalog)])
    written = sorted(p.name for p in catalog.glob("*_litellm_history.yaml"))
    assert written == ["fireworks_litellm_history.yaml", "vertex_ai_litellm_history.yaml"]  # beta is priced
    # a re-run ignores its own earlier outputs and writes the same files
    before = {p.name: p.read_text() for p in catalog.glob("*_litellm_history.yaml")}
    main(["--mirror", str(repo), "--only-unpriced", str(catalog), "--out", str(catalog)])
    assert {p.name: p.read_text() for p in catalog.glob("*_litellm_history.yaml")} == before


def test_notes_flag_a_3x_jump_and_a_price_the_next_copy_takes_back():
    from datetime import date

    from streams.pricing.litellm_history import Snapshot, build_histories, version_notes

    prices = [("2026-01-01", "1", "3"), ("2026-02-01", "0.2", "0.6"), ("2026-03-01", "0.3", "0.6"),
              ("2026-04-01", "0.2", "0.6")]
    copies = [Snapshot(date.fromisoformat(day), f"copy {day}", "https://example.invalid/map.json",
                       lambda i=i, o=o: json.loads(json.dumps({"vertex_ai/m": _entry("vertex_ai-maas-models", i, o)}),
                                                   parse_float=Decimal))
              for day, i, o in prices]
    history = build_histories(copies)[("vertex_ai", "m")]
    notes = [version_notes(history, position) for position in range(4)]
    assert "more than 3x" in notes[1] and "more than 3x" not in notes[2]
    assert "may be an error in the map" in notes[2]
    assert not any("may be an error" in n for n in (notes[0], notes[1], notes[3]))


# ---- price13: a fork's git history followed by release copies, side branches, broken commits, $0 placeholders ----

def _commit_map(root: Path, when: str, data: dict) -> None:
    (root / NEW_NAME).write_text(json.dumps(dict(data, sample_spec={"edited": when}), indent=4, sort_keys=True))
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", f"update {when}", when=when)


def _listed_copies(folder: Path, copies: list[tuple[str, dict]]) -> Path:
    """A --snapshots list of JSON copies (DAY LABEL PATH), written into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for day, data in copies:
        (folder / f"copy-{day}.json").write_text(json.dumps(data))
        lines.append(f"{day} copy-{day} copy-{day}.json")
    (folder / "copies.txt").write_text("\n".join(lines) + "\n")
    return folder / "copies.txt"


def test_a_side_branch_commit_counts_from_its_merge_day(tmp_path):
    """A commit on a merged side branch is dated before its merge; the map on the main line showed the price only
    from the merge (the history of the main line is read with --first-parent)."""
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    _commit_map(root, "2024-05-01T09:00:00+00:00", {BETA: _entry("together_ai", "0.5", "0.5")})
    _git(root, "checkout", "-q", "-b", "add-alpha")
    _commit_map(root, "2024-05-03T09:00:00+00:00", {BETA: _entry("together_ai", "0.5", "0.5"),
                                                     ALPHA: _entry("fireworks_ai", "1", "3")})
    _git(root, "checkout", "-q", "main")
    (root / "README").write_text("unrelated change on main\n")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "readme", when="2024-05-05T09:00:00+00:00")
    _git(root, "merge", "-q", "--no-ff", "-m", "merge add-alpha", "add-alpha", when="2024-05-09T09:00:00+00:00")
    out = tmp_path / "out"
    assert main(["--mirror", str(root), "--out", str(out)]) == 0
    assert _days(_models(out)["fireworks/alpha-7b"]) == ["2024-05-09"]
    # --rev reads another line, e.g. the upstream side of a fork's merge: here the branch itself
    branch = tmp_path / "branch"
    assert main(["--mirror", str(root), "--rev", "add-alpha", "--out", str(branch)]) == 0
    assert _days(_models(branch)["fireworks/alpha-7b"]) == ["2024-05-03"]


def test_git_history_then_the_listed_copies_after_its_last_day(repo, tmp_path, capsys):
    """--mirror and --snapshots together: the git copies up to the history's last day (2024-04-01), then the
    listed copies dated after it; a listed copy inside the git range is not read (the commits are finer)."""
    listed = _listed_copies(tmp_path / "copies", [
        ("2024-03-01", {BETA: _entry("together_ai", "9", "9")}),  # inside the git range: not read
        ("2024-05-01", {BETA: _entry("together_ai", "0.7", "0.7"),
                        GAMMA: _entry("vertex_ai-maas-models", "2", "8", cache_read_input_token_cost=2e-07)}),
    ])
    out = tmp_path / "out"
    assert main(["--mirror", str(repo), "--snapshots", str(listed), "--mirror-from", "someone/litellm-fork",
                 "--out", str(out)]) == 0
    models = _models(out)
    assert _days(models["together/org/beta-chat"]) == ["2024-01-10", "2024-02-05", "2024-05-01"]
    assert [v["input"] for v in models["together/org/beta-chat"]["versions"]] == ["0.5", "0.6", "0.7"]
    assert models["together/org/beta-chat"]["versions"][2]["source"] == "copy-2024-05-01.json"
    header = (out / "together_litellm_history.yaml").read_text()
    assert "7 copies (6 of them commits of 2024-01-10 .. 2024-04-01 read from someone/litellm-fork's git history)" \
        in header
    assert capsys.readouterr().out.startswith("7 copies,")  # 6 commit days + 1 listed copy after them


def test_a_commit_that_broke_the_file_is_left_out(tmp_path, capsys):
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    _commit_map(root, "2024-05-01T09:00:00+00:00", {BETA: _entry("together_ai", "0.5", "0.5")})
    (root / NEW_NAME).write_text('{"broken": ,}')
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "broken", when="2024-05-02T09:00:00+00:00")
    _commit_map(root, "2024-05-03T09:00:00+00:00", {BETA: _entry("together_ai", "0.5", "0.5"),
                                                     ALPHA: _entry("fireworks_ai", "1", "3")})
    out = tmp_path / "out"
    assert main(["--mirror", str(root), "--out", str(out)]) == 0
    assert _days(_models(out)["fireworks/alpha-7b"]) == ["2024-05-03"]
    assert _days(_models(out)["together/org/beta-chat"]) == ["2024-05-01"]  # one version: no gap at the broken day
    assert "unreadable, left out" in capsys.readouterr().err


def test_a_zero_placeholder_before_the_first_price_is_no_price(tmp_path):
    """LiteLLM lists some models at $0 before their price is known; the catalog prices nothing at $0, so the model
    starts on the first copy with a price (before it: unpriced, not free)."""
    listed = _listed_copies(tmp_path / "copies", [
        ("2025-01-01", {ALPHA: _entry("fireworks_ai", "0", "0")}),
        ("2025-02-01", {ALPHA: _entry("fireworks_ai", "0", "0")}),
        ("2025-03-01", {ALPHA: _entry("fireworks_ai", "0.2", "0.4")}),
    ])
    out = tmp_path / "out"
    assert main(["--snapshots", str(listed), "--out", str(out)]) == 0
    entry = _models(out)["fireworks/alpha-7b"]
    assert _days(entry) == ["2025-03-01"]
    assert "listed at $0 from copy-2025-01-01 (2025-01-01): a placeholder" in entry["versions"][0]["notes"]
    book = load_price_book(catalog_dir=out)
    assert price_on(book, "fireworks", "alpha-7b", "2025-02-15", MILLION_EACH).status == "unpriced"
    assert price_on(book, "fireworks", "alpha-7b", "2025-03-01", MILLION_EACH).cost_usd == Decimal("0.6")


def test_tiered_only_entries_are_written_with_their_input_tiers(tmp_path):
    """A DashScope entry priced only by `tiered_pricing` (qwen3-vl-plus's figures in LiteLLM 1.110.2): written with
    input_tiers at Alibaba's K = 1,024 thresholds; the file loads and prices each tier."""
    qwen_vl = {"litellm_provider": "dashscope", "mode": "chat", "tiered_pricing": [
        {"input_cost_per_token": 2e-07, "output_cost_per_token": 1.6e-06, "range": [0, 32000.0]},
        {"input_cost_per_token": 3e-07, "output_cost_per_token": 2.4e-06, "range": [32000.0, 128000.0]},
        {"input_cost_per_token": 6e-07, "output_cost_per_token": 4.8e-06, "range": [128000.0, 256000.0]}]}
    listed = _listed_copies(tmp_path / "copies", [("2026-03-31", {"dashscope/qwen3-vl-plus": qwen_vl})])
    out = tmp_path / "out"
    assert main(["--snapshots", str(listed), "--out", str(out)]) == 0
    version = _models(out)["dashscope/qwen3-vl-plus"]["versions"][0]
    assert [t["above_input_tokens"] for t in version["input_tiers"]] == [32768, 131072]
    book = load_price_book(catalog_dir=out)
    # by hand: 32,768 input (lower tier, the bound belongs to it) x $0.20 + 1,000 output x $1.60 per 1M
    low = Usage(input_tokens=32_768, output_tokens=1_000)
    assert price_on(book, "dashscope", "qwen3-vl-plus", "2026-04-01", low).cost_usd == Decimal("0.0081536")
    # 32,769 input: the whole call at $0.30 / $2.40 -> 0.0098307 + 0.0024
    middle = Usage(input_tokens=32_769, output_tokens=1_000)
    assert price_on(book, "dashscope", "qwen3-vl-plus", "2026-04-01", middle).cost_usd == Decimal("0.0122307")
    # 200,000 input, 1,000 output at $0.60 / $4.80 -> 0.12 + 0.0048
    high = Usage(input_tokens=200_000, output_tokens=1_000)
    assert price_on(book, "dashscope", "qwen3-vl-plus", "2026-04-01", high).cost_usd == Decimal("0.1248")


def test_a_price_one_copy_showed_and_the_next_days_copy_corrected_is_left_out(tmp_path):
    """gpt-5-chat in LiteLLM's commits: $5 / $20 on 2025-08-07 (one commit), $1.25 / $10 (OpenAI's price) from the next
    day's commit: the corrected price starts on 2025-08-07. A change after more than 2 days is an ordinary change."""
    listed = _listed_copies(tmp_path / "copies", [
        ("2025-08-07", {"gpt-5-chat": _entry("openai", "5", "20"), BETA: _entry("together_ai", "2", "2")}),
        ("2025-08-08", {"gpt-5-chat": _entry("openai", "1.25", "10"), BETA: _entry("together_ai", "2", "2")}),
        ("2025-08-20", {"gpt-5-chat": _entry("openai", "1.25", "10"), BETA: _entry("together_ai", "0.5", "0.5")}),
    ])
    out = tmp_path / "out"
    assert main(["--snapshots", str(listed), "--out", str(out)]) == 0
    models = _models(out)
    versions = models["openai/gpt-5-chat"]["versions"]
    assert [(str(v["effective_from"]), v["input"], v["output"]) for v in versions] == [("2025-08-07", "1.25", "10")]
    assert "$5 / $20 in copy-2025-08-07 (2025-08-07) only, corrected in copy-2025-08-08" in versions[0]["notes"]
    assert versions[0]["source"] == "copy-2025-08-08.json"
    assert _days(models["together/org/beta-chat"]) == ["2025-08-07", "2025-08-20"]  # 4x, but 13 days later
