"""hostile24: `collect file` read each line with an unbounded readline(): a line without its newline (a 2 GB
line, or binary garbage with no newline) was read whole into memory at every poll. Lines longer than
max_line_bytes are now skipped to their newline in chunks, never held, and dead-lettered with their length;
the lines around them are read as before. Engine level: the sink is never connected."""

from __future__ import annotations

import os

import orjson

from collectors.file_tail import FileTailer, OpenFile, OverlongLine
from collectors.sink import KafkaSink

LIMIT = 1000


def _tailer(tmp_path, path):
    sink = KafkaSink("127.0.0.1:1", "collect:file")  # never connected: only reading is tested
    return FileTailer(path, "canonical", tmp_path / "cp.json", sink, max_line_bytes=LIMIT)


def _event(event_id: str) -> bytes:
    return orjson.dumps({"event_id": event_id, "ts": "2026-12-06T10:00:00Z", "source": "sdk", "provider": "openai",
                         "model": "gpt-4o", "usage": {"input_tokens": 5, "output_tokens": 1}}) + b"\n"


def test_an_overlong_line_waits_for_its_newline_without_being_held_then_is_a_dead_letter(tmp_path):
    path = tmp_path / "app.log"
    path.write_bytes(_event("before") + b"x" * (LIMIT * 50))  # no newline yet: the writer is still at it
    tailer = _tailer(tmp_path, path)
    handle = open(path, "rb")
    try:
        current = OpenFile(handle, path, os.stat(path).st_ino, 0, 0)
        first = tailer._read_lines(current, final=False)
        assert [(n, end) for n, _, end in first] == [(1, len(_event("before")))]
        current.offset, current.line = first[-1][2], 1
        assert tailer._read_lines(current, final=False) == []  # waits; nothing of it is returned
        assert current.scanned == os.path.getsize(path)  # the next poll goes on from here
        with open(path, "ab") as writer:
            writer.write(b"\xff\x00garbage\n" + _event("after"))
        lines = tailer._read_lines(current, final=False)
        overlong, after = lines
        assert isinstance(overlong[1], OverlongLine) and overlong[1].length == LIMIT * 50 + 10
        assert len(overlong[1].head) <= 1024 and overlong[2] == len(_event("before")) + LIMIT * 50 + 10
        assert after[1] == _event("after") and after[2] == os.path.getsize(path)
        events, letters = [], []
        tailer._convert(current, lines, events, letters)
        assert [e.event_id for e in events] == ["after"]
        assert len(letters) == 1 and "longer than the 1000 byte limit" in letters[0]["reason"]
        assert letters[0]["line"] == 2
    finally:
        handle.close()


def test_an_overlong_last_line_of_a_rotated_file_is_read_to_the_end(tmp_path):
    path = tmp_path / "app.log"
    path.write_bytes(b"y" * (LIMIT * 3))
    tailer = _tailer(tmp_path, path)
    with open(path, "rb") as handle:
        current = OpenFile(handle, path, os.stat(path).st_ino, 0, 0, finishing=True)
        (number, line, end), = tailer._read_lines(current, final=True)
    assert number == 1 and isinstance(line, OverlongLine) and end == LIMIT * 3
