"""hostile24: a 2 MB body of one million tiny bad records (`[1,1,...]`) took `collect http`'s only event loop for
77 s and grew it to 2.2 GB: each rejected record kept its DialectError with the traceback (the frames and their
locals, ~1.9 KB), and nothing bounded the number of records. Now a body holds at most MAX_RECORDS_PER_REQUEST
records (refused whole above, naming the limit) and a rejected record keeps only its error."""

from __future__ import annotations

import pytest

from collectors.http_ingest import MAX_RECORDS_PER_REQUEST, BadRequest, parse_keeping, split_records


@pytest.mark.parametrize("content_type", ["application/json", "application/x-ndjson"])
def test_a_body_of_more_records_than_the_limit_is_refused_naming_it(content_type):
    n = MAX_RECORDS_PER_REQUEST + 1
    body = b"[" + b",".join([b"1"] * n) + b"]" if content_type == "application/json" else b"1\n" * n
    with pytest.raises(BadRequest, match=f"{n} records; at most {MAX_RECORDS_PER_REQUEST} per request"):
        split_records(body, content_type, None)


def test_the_limit_itself_is_read():
    body = b"[" + b",".join([b"1"] * MAX_RECORDS_PER_REQUEST) + b"]"
    assert len(split_records(body, "application/json", "kong")) == MAX_RECORDS_PER_REQUEST


def test_rejected_records_keep_their_error_without_the_traceback():
    _, _, failures = parse_keeping([1] * 3, "canonical", None)
    assert [index for index, _ in failures] == [0, 1, 2]
    assert all(exc.__traceback__ is None and exc.reason for _, exc in failures)
