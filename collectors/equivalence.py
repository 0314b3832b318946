"""Old path vs new path of the collectors: the same records must give byte-identical Kafka output.

What is compared is what a collector writes: the usage-topic messages (partition key and micro-batch value, in
order) and the dead letters (every field but the `at` timestamp), for a randomised corpus of valid and hostile
records (`collectors.corpus`) of the canonical, Kong, OTel, APISIX and LiteLLM dialects, run through the Kafka bridge's
conversion of a fetched batch (`KafkaBridge._convert` then the sink's encoding), which is what `tokenmeter
collect kafka` does between the fetch and the produce.

Two comparisons:
- `compare_with_records`: the batch path (a whole fetch at once, the dialects' batch form) against each record
  converted on its own by the per-entry parsers (pydantic models, `encoded=False`) and `encode_batches`, in this
  checkout (the test suite runs it at a small size);
- `compare_with_ref`: the batch path of this checkout against the same path at a git commit (`git archive` into
  a temporary directory, run in a subprocess): the check that a change of the shared parsers changed no byte.

    python -m collectors.equivalence --events 200000 --against 24ec608
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from collections import namedtuple
from pathlib import Path
from typing import Any

import orjson

# Runs in this checkout and, as a script, in an old one: only the API both have.
_RUNNER = r'''
import sys, orjson
from collections import namedtuple
from aiokafka.structs import TopicPartition
from collectors import AttributionMapping
from collectors.kafka_bridge import KafkaBridge
from collectors.sink import KafkaSink, encode_batches

Message = namedtuple("Message", "offset value")


def bridge_output(values, dialect, chunk, mapping=None):
    sink = KafkaSink("127.0.0.1:9", "collect-kafka")
    mapping = AttributionMapping.from_dict(mapping) if mapping else None
    bridge = KafkaBridge("127.0.0.1:9", "source", dialect, "group", sink, mapping=mapping)
    tp = TopicPartition("source", 0)
    messages, letters = [], []
    for start in range(0, len(values), chunk):
        batch = {tp: [Message(start + i, v) for i, v in enumerate(values[start:start + chunk])]}
        events, found = bridge._convert(batch)
        messages += [[key.decode(), value.decode()] for key, value in encode_batches(events)]
        for letter in found:
            letter = dict(letter)
            letter.pop("at", None)
            letters.append(orjson.dumps(letter, default=str).decode())
    counters = sink.counters
    return {"messages": messages, "letters": letters,
            "counts": [counters.read, counters.skipped]}


if __name__ == "__main__":
    source, dialect, chunk, target, mapping = sys.argv[1:6]
    values = [None if v is None else bytes.fromhex(v) for v in orjson.loads(open(source, "rb").read())]
    open(target, "wb").write(orjson.dumps(bridge_output(values, dialect, int(chunk), orjson.loads(mapping))))
'''

Message = namedtuple("Message", "offset value")


def _runner() -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "collectors_equivalence_runner"}
    exec(compile(_RUNNER, "<collectors.equivalence runner>", "exec"), namespace)  # noqa: S102 - our own text
    return namespace


def batch_output(values: list[bytes | None], dialect: str, chunk: int = 1000,
                 mapping: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Kafka bridge's output for `values` fetched in batches of `chunk` records (`mapping`: a source's
    attribution mapping, as in its YAML)."""
    return _runner()["bridge_output"](values, dialect, chunk, mapping)


def per_record_output(values: list[bytes | None], dialect: str,
                      mapping: dict[str, Any] | None = None) -> dict[str, Any]:
    """The same values, each converted on its own (one-record fetches) by the per-entry parsers alone: the
    dialects' batch form (collectors/encoded.py) turned off, every event built and validated as a pydantic model
    and written by the sink."""
    from collectors import kafka_bridge

    batch_form = kafka_bridge.parse_record

    def model_path(record: Any, dialect: str | None = None, mapping: Any = None, encoded: bool = False) -> Any:
        return batch_form(record, dialect, mapping)

    kafka_bridge.parse_record = model_path
    try:
        return batch_output(values, dialect, 1, mapping)
    finally:
        kafka_bridge.parse_record = batch_form


# A far-dated event's reason names the validator's clock (to the second): the one part that may differ by run.
_CLOCK = re.compile(r"latest accepted now: [0-9T:+-]+")


def _first_difference(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    for out in (old, new):
        out["letters"] = [_CLOCK.sub("latest accepted now: <clock>", letter) for letter in out["letters"]]
    for part in ("counts", "messages", "letters"):
        a, b = old[part], new[part]
        if a == b:
            continue
        if part == "counts" or len(a) != len(b):
            first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            return f"{part}: {len(a)} vs {len(b)}; first difference at {first}: " \
                   f"{a[first] if first < len(a) else '-'!r:.600} vs {b[first] if first < len(b) else '-'!r:.600}"
        first = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
        return f"{part}[{first}]: {a[first]!r:.600} vs {b[first]!r:.600}"
    return None


def compare_with_records(values: list[bytes | None], dialect: str, chunk: int = 1000,
                         mapping: dict[str, Any] | None = None) -> str | None:
    """None when the batch path and the per-record path wrote the same bytes, else the first difference.
    Messages are compared as the events they carry (one-record fetches frame them differently)."""
    old, new = per_record_output(values, dialect, mapping), batch_output(values, dialect, chunk, mapping)
    for out in (old, new):
        out["messages"] = sorted(_split(out["messages"]))  # grouped by key per fetch: order differs
    return _first_difference(old, new)


def _split(messages: list[list[str]]) -> list[tuple[str, bytes]]:
    return [(key, orjson.dumps(event)) for key, value in messages for event in orjson.loads(value)]


def extract_commit(repo: Path, ref: str, into: Path) -> Path:
    """The files of git commit `ref` of `repo`, extracted into the new directory `into` (`git archive`)."""
    into.mkdir()
    archive = subprocess.run(["git", "-C", str(repo), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def ref_output(ref: str, values: list[bytes | None], dialect: str, chunk: int, repo: Path,
               mapping: dict[str, Any] | None = None) -> dict[str, Any]:
    """The bridge's output at git commit `ref`, run in a subprocess from a `git archive` of it."""
    with tempfile.TemporaryDirectory(prefix="collectors-equivalence-") as tmp:
        tree = extract_commit(repo, ref, Path(tmp) / "tree")
        (Path(tmp) / "values.json").write_bytes(orjson.dumps([None if v is None else v.hex() for v in values]))
        (Path(tmp) / "runner.py").write_text(_RUNNER)
        subprocess.run([sys.executable, str(Path(tmp) / "runner.py"), str(Path(tmp) / "values.json"), dialect,
                        str(chunk), str(Path(tmp) / "out.json"), orjson.dumps(mapping).decode()], cwd=tree, check=True,
                       env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"})
        return orjson.loads((Path(tmp) / "out.json").read_bytes())


def compare_with_ref(ref: str, values: list[bytes | None], dialect: str, chunk: int = 1000,
                     repo: Path | None = None, mapping: dict[str, Any] | None = None) -> str | None:
    repo = repo or Path(__file__).resolve().parent.parent
    return _first_difference(ref_output(ref, values, dialect, chunk, repo, mapping),
                             batch_output(values, dialect, chunk, mapping))


def main(argv: list[str] | None = None) -> int:
    from collectors import corpus

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000, help="about this many events per dialect")
    parser.add_argument("--against", default=None, help="a git commit; default: the per-record path here")
    parser.add_argument("--seed", default="0")
    parser.add_argument("--dialects", default=",".join(corpus.DIALECTS))
    args = parser.parse_args(argv)
    failed = False
    for dialect in args.dialects.split(","):
        values = corpus.records(dialect, args.events, args.seed)
        for mapping in (None, corpus.MAPPINGS[dialect]):
            started = time.perf_counter()
            if args.against:
                difference = compare_with_ref(args.against, values, dialect, mapping=mapping)
            else:
                difference = compare_with_records(values, dialect, mapping=mapping)
            out = batch_output(values, dialect, mapping=mapping)
            events = sum(len(orjson.loads(v)) for _, v in out["messages"])
            print(f"{dialect} ({'a custom' if mapping else 'the default'} mapping): {len(values)} records, {events} "
                  f"events, {len(out['letters'])} dead letters: "
                  f"{'IDENTICAL' if difference is None else 'DIFFERENT ' + difference} "
                  f"({time.perf_counter() - started:.1f} s)", flush=True)
            failed |= difference is not None
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
