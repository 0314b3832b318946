"""Dated price histories from successive copies of LiteLLM's cost map.

LiteLLM's map gives prices but no days. Its copies do have days: each commit of the file in LiteLLM's git history,
and each release that bundles it (`model_prices_and_context_window_backup.json` in a release wheel, dated by its
upload). Under the catalog's rule for unknown days (docs/price-history.md) a price starts on the first dated copy
that shows it and a change switches on the first dated copy with the new price; such versions are third-party, and
their notes say so and name the copies that bound them.

    python -m streams.pricing.litellm_history --mirror DIR [--step-days 30] --out OUT_DIR
    python -m streams.pricing.litellm_history --snapshots LIST [--copies-dir DIR] --out OUT_DIR
        # LIST: "DAY LABEL PATH" a line (streams/pricing/litellm_history_copies.txt built the bundled catalog)
    python -m streams.pricing.litellm_history --mirror DIR --snapshots LIST --out OUT_DIR
        # both: the git history's copies, then the listed ones dated after its last commit day (a fork frozen on
        # some day holds LiteLLM's history up to that day; releases carry on from there)

Each map entry goes through the import's converter (`litellm_convert.convert_entry`), so a history version states
exactly what `tokenmeter prices import` would. From a git repository the copies are sampled (the last commit of a
day, every `--step-days` days) and each change found between two samples is narrowed to its day by bisection over
the days between them. `--only-unpriced` keeps the models the catalog (without earlier outputs of this tool)
cannot price, minus deployment keys and pseudo-entries (see `skip_reason`). The output is one catalog file per
provider, `<provider>_litellm_history.yaml`.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterable


from .litellm_convert import _describe, _model_id, _provider_of, check_version, convert_entry, stated_prices
from .resolve import canonical_provider

MAP_PATH = "model_prices_and_context_window.json"
WHEEL_MAP_PATH = "litellm/model_prices_and_context_window_backup.json"
REPO_URL = "https://github.com/BerriAI/litellm"
OUTPUT_SUFFIX = "_litellm_history.yaml"
THIRD_PARTY = "third-party copy (LiteLLM's community map), unverified first-party"


@dataclass
class Snapshot:
    """One dated copy of the map. `load` reads it (copies are ~1 MB each: read once, when needed)."""

    day: date
    label: str  # e.g. "LiteLLM 1.53.1" or "BerriAI/litellm@1a2b3c4d"
    source: str  # URL of this copy, written as the version's source
    load: Callable[[], dict[str, Any]] = field(repr=False)
    unreadable: bool = False  # not JSON (a commit that broke the file): left out of every history
    _data: dict[str, Any] | None = field(default=None, repr=False)

    def data(self) -> dict[str, Any]:
        if self._data is None:
            self._data = self.load()
        return self._data

    def forget(self) -> None:
        self._data = None

    def describe(self) -> str:
        return f"{self.label} ({self.day.isoformat()})"


# ---- where copies come from -------------------------------------------------------------------------------------

def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def _parse_map(text: str) -> dict[str, Any]:
    data = json.loads(text, parse_float=Decimal)
    return data if isinstance(data, dict) else {}


def git_days(repo: Path, path: str = MAP_PATH, rev: str = "HEAD") -> list[tuple[date, str]]:
    """(day, last commit of that day touching `path`), oldest first; renames are followed. Only the main line
    (`--first-parent`): a commit on a merged side branch is dated before its merge, and its copy is not the map the
    project published on that day (it lacks main's other changes and shows the branch's before they landed)."""
    log = _git(repo, "log", "--first-parent", "--follow", "--format=%H %cI", "--name-only", rev, "--", path)
    last_of_day: dict[date, tuple[str, str]] = {}
    commit = None
    for line in log.splitlines():
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) == 2 and re.fullmatch(r"[0-9a-f]{40}", parts[0]):
            commit = (parts[0], parts[1])
            continue
        if commit:  # the file's name at that commit (it may have moved)
            day = datetime.fromisoformat(commit[1]).date()
            last_of_day.setdefault(day, (commit[0], line.strip()))  # log is newest first: keep the day's last
            commit = None
    return [(day, f"{sha}:{name}") for day, (sha, name) in sorted(last_of_day.items())]


def git_snapshot(repo: Path, day: date, ref: str) -> Snapshot:
    sha, name = ref.split(":", 1)
    return Snapshot(day, f"BerriAI/litellm@{sha[:8]}", f"{REPO_URL}/blob/{sha}/{name}",
                    lambda: _parse_map(_git(repo, "show", ref)))


def listed_snapshots(list_file: Path, base: Path | None = None) -> list[Snapshot]:
    """Copies named in a file, one a line: `DAY LABEL PATH` (PATH a JSON map or a release wheel bundling one,
    relative to `base`, default the list's folder). A label `v1.53.1` (a release) gets the release tag's URL."""
    snapshots = []
    for line in list_file.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        day, label, path = line.split(None, 2)
        file = ((base or list_file.parent) / path).resolve()
        release = re.fullmatch(r"v?(\d+(?:\.\d+)+)", label)
        source = f"{REPO_URL}/blob/v{release.group(1)}/{MAP_PATH}" if release else str(path)
        snapshots.append(Snapshot(date.fromisoformat(day[:10]), f"LiteLLM {release.group(1)}" if release else label,
                                  source, lambda file=file: _read_copy(file)))
    return sorted(snapshots, key=lambda s: s.day)


def _read_copy(file: Path) -> dict[str, Any]:
    if file.suffix == ".whl":
        import zipfile

        with zipfile.ZipFile(file) as wheel:
            return _parse_map(wheel.read(WHEEL_MAP_PATH).decode())
    return _parse_map(file.read_text())


# ---- histories --------------------------------------------------------------------------------------------------

@dataclass
class Version:
    first: Snapshot  # first copy showing these prices
    last: Snapshot  # last copy (so far) showing them
    before: Snapshot | None  # the copy before `first` (the bound of an unknown change day)
    previous: dict[str, Decimal] | None  # the prices before (None: the model's first version)
    map_key: str
    spec: dict[str, Any]  # converted catalog version
    stated: dict[str, Decimal]


@dataclass
class History:
    provider: str
    model: str
    mode: str
    versions: list[Version] = field(default_factory=list)
    missing_since: Snapshot | None = None  # first copy without the model after it was listed (retired or renamed)


def _entries(snapshot: Snapshot, providers: set[str] | None) -> dict[tuple[str, str], tuple[str, dict, dict]]:
    """(provider, model) -> (map key, converted entry, stated prices) for one copy; the first key of a model wins."""
    found: dict[tuple[str, str], tuple[str, dict, dict]] = {}
    for key, raw in snapshot.data().items():
        if key == "sample_spec" or not isinstance(raw, dict):
            continue
        litellm_provider = str(raw.get("litellm_provider") or "")
        provider = _provider_of(litellm_provider)
        if not provider or (providers and provider not in providers):
            continue
        model = _bare_model(provider, _model_id(key, litellm_provider))
        if not model or (provider, model) in found:  # `accounts/fireworks/models/` names no model
            continue
        spec, _ = convert_entry(raw, snapshot.day.isoformat(), snapshot.source)
        if spec is None:
            continue
        found[(provider, model)] = (key, spec, stated_prices(spec["versions"][0]))
    return found


def _bare_model(provider: str, model: str) -> str:
    """The model id without leading segments naming its own provider (`vertex_ai/mistralai/codestral-2` ->
    `mistralai/codestral-2`; the resolver strips them from an event's model the same way). An author's segment
    (`qwen/` on Together) stays: it is part of the host's model id."""
    model = model.rsplit("models/", 1)[-1]  # accounts/fireworks/models/<id>: the resolver keeps the part after it
    head, slash, rest = model.partition("/")
    while slash and rest and canonical_provider(head) == provider:
        model = rest
        head, slash, rest = model.partition("/")
    return model


def build_histories(snapshots: Iterable[Snapshot], providers: Iterable[str] | None = None,
                    refine: Callable[[Snapshot, Snapshot, tuple[str, str], dict],
                                     tuple[Snapshot, Snapshot]] | None = None
                    ) -> dict[tuple[str, str], History]:
    """Walk the copies oldest first; a model's prices that differ from its previous version start a new one.

    `refine(before, after, key, stated)` may return an intermediate copy, the first one that shows `stated`
    for `key` (bisection over a git history), with the copy just before it; without it the change starts at
    `after`."""
    providers_set = set(providers) if providers else None
    histories: dict[tuple[str, str], History] = {}
    previous: Snapshot | None = None
    for snapshot in sorted(snapshots, key=lambda s: s.day):
        try:
            entries = _entries(snapshot, providers_set)
        except ValueError as error:  # a commit that broke the file: LiteLLM could not load that copy either
            print(f"  unreadable, left out: {snapshot.describe()}: {error}", file=sys.stderr)
            snapshot.unreadable = True
            continue
        for key, (map_key, spec, stated) in entries.items():
            history = histories.get(key)
            if history is None:
                history = histories[key] = History(key[0], key[1], spec["mode"])
            last = history.versions[-1] if history.versions else None
            history.missing_since = None
            if last is not None and last.stated == stated:
                last.last = snapshot
                continue
            first, before = snapshot, previous
            if refine is not None and previous is not None:
                first, before = refine(previous, snapshot, key, stated)
            version = dict(spec["versions"][0], effective_from=first.day.isoformat(), source=first.source)
            history.versions.append(Version(first, snapshot, before, last.stated if last else None, map_key,
                                            version, stated))
        for key, history in histories.items():
            if key not in entries and history.missing_since is None:
                history.missing_since = snapshot
        if previous is not None:
            previous.forget()
        previous = snapshot
    return histories


def git_refiner(repo: Path, days: list[tuple[date, str]], providers: Iterable[str] | None
                ) -> Callable[[Snapshot, Snapshot, tuple[str, str], dict], tuple[Snapshot, Snapshot]]:
    """Bisection over the days between two sampled copies: the first day whose copy shows `stated` for `key`,
    and the day before it."""
    index = {day: i for i, (day, _) in enumerate(days)}
    cache: dict[int, dict] = {}  # parsed copies of the interval being bisected (every change in it shares them)
    providers_set = set(providers) if providers else None

    def copy_at(i: int) -> Snapshot:
        return git_snapshot(repo, *days[i])

    def shows(i: int, key: tuple[str, str], stated: dict) -> bool:
        if i not in cache:
            cache[i] = _entries(copy_at(i), providers_set)
        found = cache[i].get(key)
        return found is not None and found[2] == stated

    def refine(before: Snapshot, after: Snapshot, key: tuple[str, str], stated: dict) -> tuple[Snapshot, Snapshot]:
        if before.day not in index or after.day not in index:  # a listed copy after the git history: no commits
            return after, before
        low, high = index[before.day], index[after.day]  # copy `low` does not show it, copy `high` does
        for i in [i for i in cache if not low < i < high]:
            del cache[i]
        while high - low > 1:
            middle = (low + high) // 2
            if shows(middle, key, stated):
                high = middle
            else:
                low = middle
        first = after if high == index[after.day] else copy_at(high)
        return first, (before if low == index[before.day] else copy_at(low))

    return refine


def sample_days(days: list[tuple[date, str]], step_days: int) -> list[tuple[date, str]]:
    """The first and last day and one day at least `step_days` after the previous sample."""
    if step_days <= 1 or len(days) <= 2:
        return days
    sampled = [days[0]]
    for day in days[1:-1]:
        if (day[0] - sampled[-1][0]).days >= step_days:
            sampled.append(day)
    return sampled + [days[-1]]


# ---- which models, and the catalog files ------------------------------------------------------------------------

# LiteLLM keys that name a deployment, a price bucket or an offer rather than a billed text model, and models that
# are billed by something a usage record does not carry (audio seconds, characters, searches, images).
_SKIPS = (
    (re.compile(r"(^|/)(fireworks-ai-|fireworks_ai-)"), "Fireworks size-tier bucket (fireworks.yaml prices the tiers)"),
    (re.compile(r"(^|/)(together-ai-|together_ai-)"), "Together size-tier bucket"),
    (re.compile(r"(^|/)(\d+-month-commitment|us-gov(-[a-z]+-\d)?|[a-z]{2}-[a-z]+-\d)/"), "region or commitment key"),
    (re.compile(r"^(us|eu|apac|jp|au|ca|in|us-gov|global)\."), "regional inference profile (priced as its base model)"),
    (re.compile(r"^(us|eu|global|apac|global-standard|claude_platform|invoke|azure)/"), "deployment-type key"),
    (re.compile(r"(^|[-/:])ft[-:]|fine-?tun"), "fine-tune tier"),
    (re.compile(r"(-exp(-|$)|experimental|:free$|-free$)"), "free or experimental offer"),
    (re.compile(r"audio|realtime|tts|-live|live-|image|search-preview|search-api|deep-research|computer-use|robotics|"
                r"prompt-guard|safeguard|marengo|multimodal-?embedding|model-router|flux-|ocr"),
     "not billed per text token alone (audio, realtime, images, searches, safety classifiers, routers)"),
    (re.compile(r"(^|/)(chat-|code-|codechat-|text-)?(bison|gecko|unicorn)|^gemini-pro(-vision)?$|^gemini-1\.|"
                r"embedding-preview-0409|^text-(multilingual-)?embedding-00"),
     "Vertex per-character billing (PaLM, Gemini 1.x)"),
)


# Single models left out on purpose (docs/rounds/price-history.md, "history12").
_MYTHOS_PREVIEW = "conflicting figures (Anthropic $10 / $50, Bedrock $27.50 / $137.50)"
_DECIDED = {
    ("anthropic", "claude-mythos-preview"): _MYTHOS_PREVIEW,
    ("bedrock", "anthropic.claude-mythos-preview"): _MYTHOS_PREVIEW,
    ("deepseek", "deepseek-r1"): "LiteLLM's name for deepseek-reasoner, which the catalog prices first-party",
    ("deepseek", "deepseek-v3"): "LiteLLM's name for deepseek-chat, which the catalog prices first-party",
    ("mistral", "mistral-small"): "LiteLLM's 2023-2024 figures ($0.66 / $1.97, then $1 / $3) disagree with Mistral's "
                                  "own 2024-02-26 table ($2 / $6, mistral_2024.yaml)",
    ("mistral", "mistral-small-3-2-2506"): "LiteLLM's spelling of mistral-small-2506, at $0.06 / $0.18 against the "
                                           "$0.10 / $0.30 of Mistral's own docs source (mistral.yaml)",
    **{("mistral", name): "Mistral's own docs source gives no price in any version (docs/price-history.md, third "
                          "pass): LiteLLM's $0.25 is not taken over it"
       for name in ("open-codestral-mamba", "codestral-mamba-latest")},
    **{("openai", name): "GPT-3 completion model retired 2024-01-04; LiteLLM's only copy (2023-12) disagrees with "
                         "OpenAI's list prices (text-davinci-003 $20, text-babbage-001 $0.50 per 1M)"
       for name in ("text-ada-001", "text-babbage-001", "text-curie-001", "text-davinci-003")},
    **{("cohere", name): "Cohere beta name of 2022-2023, gone before 2024"
       for name in ("command-medium-beta", "command-xlarge-beta")},
}


# Azure events name a deployment: a bare, moving name stays unpriced until mapped to a pinned model (azure_2024.yaml).
_AZURE_UNPINNED = re.compile(r"(.*-)?latest|gpt-3\.5-turbo(-16k)?|gpt-35-turbo(-16k)?|ada")


def skip_reason(provider: str, model: str, version: dict[str, Any]) -> str | None:
    if decided := _DECIDED.get((provider, model)):
        return decided
    if provider == "azure" and _AZURE_UNPINNED.fullmatch(model):
        return "Azure deployment-like name without a pinned version (map the deployment in azure_deployments)"
    for pattern, reason in _SKIPS:
        if pattern.search(model) and (provider == "vertex_ai" or not reason.startswith("Vertex")):
            return reason
    if all(Decimal(str(version.get(part, "0"))) == 0 for part in ("input", "output")):
        return "listed at $0"
    return None


def _money(value: Decimal) -> str:
    return "$" + format(value.normalize(), "f")


def _price_words(stated: dict[str, Decimal]) -> str:
    parts = [_money(stated["input"])] if "input" in stated else []
    if "cached_input" in stated:
        parts.append(f"cached {_money(stated['cached_input'])}")
    if stated.get("output"):
        parts.append(_money(stated["output"]))
    return " / ".join(parts)


def _far_apart(before: Decimal | None, after: Decimal | None) -> bool:
    return bool(before and after) and not Decimal(1) / 3 <= after / before <= 3


def version_notes(history: History, position: int) -> str:
    version = history.versions[position]
    span = version.first.describe() if version.first is version.last else \
        f"{version.first.describe()} .. {version.last.describe()}"
    words = [f"{_price_words(version.stated)} as `{version.map_key}` in LiteLLM's cost map, {span}"]
    if version.previous is None:
        words.append("start = the first dated copy showing it (earlier traffic unpriced)")
    else:
        bound = f" after {version.before.describe()}" if version.before else ""
        changes = _describe(version.previous, version.stated) + [
            f"{name}: {_money(value)[1:]} -> -" for name, value in sorted(version.previous.items())
            if name not in version.stated]
        words.append(f"changed ({'; '.join(changes)}); the change's day is not known: it switches on the first dated "
                     f"copy with the new price{bound}")
    if version.previous and _far_apart(version.previous.get("input"), version.stated.get("input")):
        words.append("a change of more than 3x may be the map correcting an earlier error (then earlier traffic is "
                     "mispriced by it); no first-party figure found to tell")
    if 0 < position < len(history.versions) - 1 and history.versions[position + 1].stated == version.previous:
        words.append("the next copy returns to the earlier price: this version may be an error in the map")
    if position == len(history.versions) - 1 and history.missing_since is not None:
        words.append(f"no longer listed in {history.missing_since.describe()} (retired or renamed: the price stays for "
                     "its dates)")
    if extra := version.spec.get("notes"):
        words.append(extra)
    words.append(THIRD_PARTY)
    return "; ".join(words)


def catalog_documents(histories: Iterable[History]) -> dict[str, dict[str, Any]]:
    """provider -> catalog document (`provider`, `source`, `models`) in the house format."""
    documents: dict[str, dict[str, Any]] = {}
    for history in sorted(histories, key=lambda h: (h.provider, h.model)):
        document = documents.setdefault(history.provider, {"provider": history.provider,
                                                           "source": f"{REPO_URL}/blob/main/{MAP_PATH}",
                                                           "models": {}})
        versions = []
        for position, version in enumerate(history.versions):
            spec = {k: v for k, v in version.spec.items() if k != "notes"}
            spec["notes"] = version_notes(history, position)
            check_version(spec, f"{history.provider}/{history.model}")
            versions.append(spec)
        entry: dict[str, Any] = {}
        if history.mode != "chat":
            entry["mode"] = history.mode
        entry["versions"] = versions
        document["models"][history.model] = entry
    return documents


HEADER = """\
# {provider}: models billed since 2024 that no first-party or other dated source in this catalog prices, with
# the price history read from dated copies of LiteLLM's community cost map. Format: see streams/pricing/__init__.py.
# GENERATED by `python -m streams.pricing.litellm_history` (docs/price-history.md, "The generated files"): edit the tool or its
# inputs and re-run it rather than editing this file. A version starts on the first dated copy showing its price (the
# copy's day is its release upload or commit day); earlier traffic is unpriced with a reason. Every version is
# third-party: unverified first-party. Copies read: {copies}.
"""


_PLAIN_KEY = re.compile(r"[a-z0-9][a-z0-9._/@-]*")


def _flow(value: Any) -> str:
    """A value in YAML flow style as the hand-written files have it: strings double-quoted (JSON is YAML)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):  # input_tiers
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return str(value) if isinstance(value, int) else json.dumps(str(value), ensure_ascii=False)


def render(document: dict[str, Any], header: str) -> str:
    """A catalog file in the house format: one flow mapping per version, its notes on the next line."""
    lines = [header.rstrip("\n"), f"provider: {document['provider']}", f"source: {document['source']}", "models:"]
    for model, entry in document["models"].items():
        lines.append(f"  {model if _PLAIN_KEY.fullmatch(model) else json.dumps(model)}:")
        if "mode" in entry:
            lines.append(f"    mode: {entry['mode']}")
        lines.append("    versions:")
        for version in entry["versions"]:
            prices = {k: v for k, v in version.items() if k not in ("effective_from", "source", "notes")}
            head = {"source": version["source"], **prices}
            lines.append(f"      - {{effective_from: {version['effective_from']}, {_flow(head)[1:-1]},")
            lines.append(f"         notes: {_flow(version['notes'])}}}")
    return "\n".join(lines) + "\n"


def write_catalog(documents: dict[str, dict[str, Any]], out_dir: Path, copies: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for provider, document in sorted(documents.items()):
        path = out_dir / f"{provider}{OUTPUT_SUFFIX}"
        path.write_text(render(document, HEADER.format(provider=provider, copies=copies)))
        written.append(path)
    for stale in set(out_dir.glob(f"*{OUTPUT_SUFFIX}")) - set(written):  # a provider none of whose models is kept
        stale.unlink()
    return written


def unpriced_filter(catalog_dir: Path) -> Callable[[str, str], bool]:
    """True for a (provider, model) the catalog in `catalog_dir` cannot price, this tool's own outputs left out."""
    import tempfile

    from .book import load_price_book

    with tempfile.TemporaryDirectory() as scratch:
        for file in catalog_dir.glob("*.yaml"):
            if not file.name.endswith(OUTPUT_SUFFIX):
                (Path(scratch) / file.name).write_bytes(file.read_bytes())
        book = load_price_book(catalog_dir=scratch)

    def unpriced(provider: str, model: str) -> bool:
        if provider not in book.resolver.providers:
            return False
        resolution = book.resolve(provider, model)
        # "unknown ...": no entry; other reasons are decisions (billed per character, free variants): not gaps
        return resolution.entry is None and (resolution.reason or "").startswith("unknown")

    return unpriced


def _drop_leading_zero_prices(history: History) -> None:
    """A model the map listed at $0 before it had a price (a placeholder, not a free offer: the catalog prices
    nothing at $0) starts on its first priced copy."""
    dropped = None
    while len(history.versions) > 1 and not any(history.versions[0].stated.get(k) for k in ("input", "output")):
        dropped = history.versions.pop(0)
    if dropped is not None:
        first = history.versions[0]
        first.previous = None
        note = f"listed at $0 from {dropped.first.describe()}: a placeholder, left out (no price before this version)"
        first.spec["notes"] = "; ".join(filter(None, [first.spec.get("notes"), note]))


CORRECTED_WITHIN_DAYS = 2


def _drop_corrected_errors(history: History) -> None:
    """A price only one copy (commit) showed, replaced within CORRECTED_WITHIN_DAYS by one more than 3x apart, is an
    error the map corrected (LiteLLM listed gpt-5-chat at $5 / $20 on GPT-5's launch day, 2025-08-07, and $1.25 / $10,
    OpenAI's price, the next day): the corrected price starts on the erroneous copy's day."""
    position = 0
    while position < len(history.versions) - 1:
        wrong, fixed = history.versions[position], history.versions[position + 1]
        if (wrong.first is wrong.last and (fixed.first.day - wrong.first.day).days <= CORRECTED_WITHIN_DAYS
                and _far_apart(wrong.stated.get("input"), fixed.stated.get("input"))):
            note = (f"{_price_words(wrong.stated)} in {wrong.first.describe()} only, corrected in "
                    f"{fixed.first.describe()}: a map error, left out (this price from the earlier copy's day)")
            fixed.spec = dict(fixed.spec, effective_from=wrong.spec["effective_from"],
                              notes="; ".join(filter(None, [fixed.spec.get("notes"), note])))
            fixed.before, fixed.previous = wrong.before, wrong.previous
            del history.versions[position]
            continue
        position += 1


def select(histories: dict[tuple[str, str], History], keep: Callable[[str, str], bool] | None,
           report: dict[str, int]) -> list[History]:
    chosen = []
    for (provider, model), history in sorted(histories.items()):
        if keep is not None and not keep(provider, model):
            continue
        why = skip_reason(provider, model, history.versions[-1].spec)
        if why:
            report[why] = report.get(why, 0) + 1
            continue
        _drop_leading_zero_prices(history)
        _drop_corrected_errors(history)
        chosen.append(history)
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.pricing.litellm_history", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mirror", type=Path, help="a git repository (bare or not) holding LiteLLM's history")
    parser.add_argument("--snapshots", type=Path, help="a file of dated copies: DAY LABEL PATH per line (with "
                                                       "--mirror: those after the git history's last day)")
    parser.add_argument("--copies-dir", type=Path, help="where the --snapshots list's relative paths are")
    parser.add_argument("--mirror-from", metavar="OWNER/NAME",
                        help="the repository --mirror was copied from, named in the files' headers (e.g. a fork "
                             "holding LiteLLM's commits up to the day it was last synced)")
    parser.add_argument("--rev", default="HEAD",
                        help="--mirror: the commit whose main line is read (e.g. the second parent of a fork's merge "
                             "of LiteLLM's main, when the fork merges rather than fast-forwards)")
    parser.add_argument("--path", default=MAP_PATH, help="the map's path in the repository (renames are followed)")
    parser.add_argument("--step-days", type=int, default=1, help="git: sample one day in N, then bisect changes")
    parser.add_argument("--provider", action="append", help="only these providers (repeatable)")
    parser.add_argument("--only-unpriced", type=Path, metavar="CATALOG_DIR",
                        help="keep models this catalog cannot price (its *_litellm_history.yaml files ignored)")
    parser.add_argument("--out", type=Path, required=True, help="directory for <provider>_litellm_history.yaml")
    args = parser.parse_args(argv)
    if not (args.mirror or args.snapshots):
        parser.error("give --mirror, --snapshots or both")
    refine = None
    snapshots: list[Snapshot] = []
    git_until = None  # the git history's last day
    if args.mirror:
        days = git_days(args.mirror, args.path, args.rev)
        git_until = days[-1][0] if days else None
        snapshots = [git_snapshot(args.mirror, day, ref) for day, ref in sample_days(days, args.step_days)]
        if args.step_days > 1:
            refine = git_refiner(args.mirror, days, args.provider)
    if args.snapshots:
        # a git history (e.g. a fork frozen on some day) dates a copy to its commit day; listed copies (releases)
        # carry on after its last day
        snapshots += [copy for copy in listed_snapshots(args.snapshots, args.copies_dir)
                      if git_until is None or copy.day > git_until]
    if not snapshots:
        parser.error("no dated copies of the map found")
    histories = build_histories(snapshots, args.provider, refine)
    keep = unpriced_filter(args.only_unpriced) if args.only_unpriced else None
    skipped: dict[str, int] = {}
    chosen = select(histories, keep, skipped)
    read = [copy for copy in snapshots if not copy.unreadable]
    copies = f"{read[0].describe()} .. {read[-1].describe()}, {len(read)} copies"
    if args.mirror_from and git_until:
        git_copies = [copy for copy in read if copy.day <= git_until]
        copies += (f" ({len(git_copies)} of them commits of {git_copies[0].day} .. {git_copies[-1].day} read from "
                   f"{args.mirror_from}'s git history)") if git_copies else ""
    written = write_catalog(catalog_documents(chosen), args.out, copies)
    print(f"{len(read)} copies, {len(histories)} models seen, {len(chosen)} written "
          f"({sum(len(h.versions) for h in chosen)} versions) to {len(written)} files")
    for why, count in sorted(skipped.items()):
        print(f"  skipped {count}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
