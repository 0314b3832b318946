"""How far token estimates are from what providers report, per model family.

A corpus (JSON lines) holds calls whose text and provider-reported usage are both known; each call is counted
with the same code the worker uses for events without usage (`count_content`), and the estimate is compared
with the reported numbers. One record:

```json
{"id": "cookbook-chat-gpt-4o", "provider": "openai", "model": "gpt-4o",
 "content": {"prompt": [{"role": "user", "content": "..."}], "tools": [...], "completion": "..."},
 "usage": {"input_tokens": 124, "output_tokens": null},
 "provenance": {"kind": "published", "source": "https://...", "notes": "..."}}
```

`usage.output_tokens` may be null (or the completion absent) when the source publishes no output text; such a
call counts for input only. `provenance.kind` is `published` (numbers a provider or its docs printed) or
`computed` (numbers computed with the provider's own public tokenizer, e.g. tiktoken for OpenAI output).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import orjson
from pydantic import ValidationError

from tokenmeter.events import Content

from .counting import profile_for_model
from .meter import count_content

DEFAULT_CORPUS = Path(__file__).with_name("corpus") / "estimation_corpus.jsonl"
PROVENANCE_KINDS = ("published", "computed")


class CorpusError(ValueError):
    """A corpus line that cannot be used; the message names the line and field."""


@dataclass(frozen=True)
class CorpusCall:
    id: str
    provider: str
    model: str
    content: Content
    input_tokens: int
    output_tokens: int | None
    provenance: dict[str, Any]


@dataclass(frozen=True)
class CallError:
    id: str
    family: str
    model: str
    kind: str
    input_reported: int
    input_estimated: int
    output_reported: int | None
    output_estimated: int | None

    @property
    def input_pct(self) -> float:
        return _pct(self.input_estimated, self.input_reported)

    @property
    def output_pct(self) -> float | None:
        if self.output_reported is None or self.output_estimated is None:
            return None
        return _pct(self.output_estimated, self.output_reported)


@dataclass(frozen=True)
class FamilyAccuracy:
    family: str
    calls: int
    published_calls: int  # calls whose numbers a provider printed (the rest are tokenizer-computed)
    mean_abs_pct_error_input: float
    mean_abs_pct_error_output: float | None  # None: no call of the family has a reported output count
    max_abs_pct_error: float
    exact: bool  # every estimate equals the reported count


def _pct(estimated: int, reported: int) -> float:
    if reported == 0:
        return 0.0 if estimated == 0 else 100.0
    return abs(estimated - reported) * 100.0 / reported


def _count(value: Any, field: str, where: str, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CorpusError(f"{where}: {field} must be a non-negative integer, got {value!r}")
    return value


def load_corpus(path: str | Path = DEFAULT_CORPUS) -> list[CorpusCall]:
    path = Path(path)
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read the corpus: {exc}") from exc
    calls: list[CorpusCall] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        where = f"{path.name}:{number}"
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise CorpusError(f"{where}: not JSON: {exc}") from None
        if not isinstance(record, dict):
            raise CorpusError(f"{where}: expected a JSON object")
        for field in ("id", "model", "content", "usage", "provenance"):
            if field not in record:
                raise CorpusError(f"{where}: missing field {field!r}")
        try:
            content = Content.model_validate(record["content"])
        except ValidationError as exc:
            raise CorpusError(f"{where}: content: {exc.errors(include_url=False)[0]['msg']}") from None
        usage = record["usage"] if isinstance(record["usage"], dict) else {}
        provenance = record["provenance"] if isinstance(record["provenance"], dict) else {}
        if provenance.get("kind") not in PROVENANCE_KINDS or not provenance.get("source"):
            raise CorpusError(f"{where}: provenance needs kind ({' or '.join(PROVENANCE_KINDS)}) and source")
        output = _count(usage.get("output_tokens"), "usage.output_tokens", where, optional=True)
        if output is not None and content.completion is None:
            raise CorpusError(f"{where}: usage.output_tokens is given but content.completion is missing")
        calls.append(CorpusCall(
            id=str(record["id"]), provider=str(record.get("provider") or ""), model=str(record["model"]),
            content=content, input_tokens=_count(usage.get("input_tokens"), "usage.input_tokens", where),
            output_tokens=output, provenance=provenance))
    if not calls:
        raise CorpusError(f"{path}: the corpus has no calls")
    return calls


def call_errors(calls: Iterable[CorpusCall]) -> list[CallError]:
    """Each call counted exactly as the worker counts an event without usage."""
    errors = []
    for call in calls:
        estimate = count_content(call.content, call.model)
        has_output = call.output_tokens is not None
        errors.append(CallError(
            id=call.id, family=profile_for_model(call.model).family, model=call.model,
            kind=call.provenance["kind"], input_reported=call.input_tokens, input_estimated=estimate.input_tokens,
            output_reported=call.output_tokens, output_estimated=estimate.output_tokens if has_output else None))
    return errors


def estimation_error_table(corpus_path: str | Path = DEFAULT_CORPUS) -> list[FamilyAccuracy]:
    """One row per model family in the corpus: mean absolute % error of input and output estimates."""
    by_family: dict[str, list[CallError]] = {}
    for error in call_errors(load_corpus(corpus_path)):
        by_family.setdefault(error.family, []).append(error)
    rows = []
    for family in sorted(by_family):
        errors = by_family[family]
        inputs = [e.input_pct for e in errors]
        outputs = [p for e in errors if (p := e.output_pct) is not None]
        rows.append(FamilyAccuracy(
            family=family,
            calls=len(errors),
            published_calls=sum(e.kind == "published" for e in errors),
            mean_abs_pct_error_input=round(sum(inputs) / len(inputs), 1),
            mean_abs_pct_error_output=round(sum(outputs) / len(outputs), 1) if outputs else None,
            max_abs_pct_error=round(max(inputs + outputs), 1),
            exact=all(p == 0 for p in inputs + outputs),
        ))
    return rows


# Rendering ----------------------------------------------------------------------------------------------

_HEADERS = ("family", "calls", "published", "input err (mean abs %)", "output err (mean abs %)", "max err %")


def _cells(row: FamilyAccuracy) -> tuple[str, ...]:
    output = "n/a" if row.mean_abs_pct_error_output is None else f"{row.mean_abs_pct_error_output:.1f}"
    return (row.family, str(row.calls), str(row.published_calls), f"{row.mean_abs_pct_error_input:.1f}", output,
            f"{row.max_abs_pct_error:.1f}")


def render_table(rows: list[FamilyAccuracy], fmt: str = "table") -> str:
    """`table` (aligned text), `markdown` or `json`."""
    if fmt == "json":
        return orjson.dumps([asdict(r) for r in rows], option=orjson.OPT_INDENT_2).decode()
    body = [_cells(r) for r in rows]
    if fmt == "markdown":
        lines = ["| " + " | ".join(_HEADERS) + " |", "|" + "|".join("---" if i == 0 else "---:"
                                                                   for i in range(len(_HEADERS))) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(c[i]) for c in body)) for i, h in enumerate(_HEADERS)]
    fmt_row = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                      for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt_row(_HEADERS), *(fmt_row(c) for c in body)])


__all__ = [
    "DEFAULT_CORPUS",
    "CallError",
    "CorpusCall",
    "CorpusError",
    "FamilyAccuracy",
    "call_errors",
    "estimation_error_table",
    "load_corpus",
    "render_table",
]
