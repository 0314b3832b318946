"""The parsers' fast readers answer exactly what the general helpers answer, value or error (reason and path).

`dict_field`/`str_field`/`float_field`/`int_field` (collectors/coerce.py) build the error path only off the common
type; `openai_counts` reads the common usage shape at once. Each is compared with the general reading on values
of every kind a hostile record can hold.
"""

from __future__ import annotations

import math

import pytest

from collectors.coerce import (as_dict, dict_field, float_field, int_field, str_field, to_float, to_int, to_str)
from collectors.errors import DialectError, join_path
from collectors.usage import openai_counts

VALUES = [None, "", " ", " x ", "x", "12", "0012", " 12 ", "-3", "+4", "1.0", "1.5", "1e3", "１２", "12\n", "NaN",
          0, 1, -1, 10**20, 0.0, -0.0, 2.5, -2.5, math.inf, -math.inf, math.nan, True, False, [], [1], {}, {"a": 1}]


def _outcome(read):
    try:
        value = read()
    except DialectError as exc:
        return "error", exc.reason, exc.path
    return "value", type(value).__name__, repr(value)


@pytest.mark.parametrize("value", VALUES, ids=repr)
@pytest.mark.parametrize("fast, general", [
    (dict_field, lambda v, p: as_dict(v, p)),
    (str_field, to_str),
    (float_field, to_float),
    (int_field, to_int),
], ids=["dict", "str", "float", "int"])
def test_a_fast_reader_answers_as_the_general_helper(fast, general, value):
    record = {"k": value}
    assert _outcome(lambda: fast(record, "k", "[3].ai", "meta.k")) == \
        _outcome(lambda: general(value, join_path("[3].ai", "meta.k")))
    assert _outcome(lambda: fast(record, "k", "[3].ai")) == _outcome(lambda: general(value, "[3].ai.k"))


class _Usage(dict):
    """A dict that is not exactly `dict`: openai_counts reads it the general way."""


@pytest.mark.parametrize("usage", [
    {"prompt_tokens": 10, "completion_tokens": 2},
    {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12, "cost": 0, "time_to_first_token": 30},
    {"prompt_tokens": 10, "completion_tokens": 2, "input_tokens": 99, "output_tokens": 98},
    {"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 4}},
    {"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": None},
    {"prompt_tokens": 10, "completion_tokens": 2, "cache_read_input_tokens": 3, "cache_creation_input_tokens": 1},
    {"prompt_tokens": 10, "completion_tokens": 2, "server_tool_use": {"web_search_requests": 2}},
    {"prompt_tokens": 10, "completion_tokens": 2, "completion_tokens_details": {"reasoning_tokens": 1}},
    {"prompt_tokens": True, "completion_tokens": 2}, {"prompt_tokens": -1, "completion_tokens": 2},
    {"prompt_tokens": "10", "completion_tokens": 2}, {"prompt_tokens": 10.0, "completion_tokens": 2},
    {"prompt_tokens": 10}, {"completion_tokens": 2}, {"prompt_token": 10, "completion_token": 2}, {},
    {"prompt_tokens": 10**13, "completion_tokens": 0},
], ids=repr)
def test_openai_counts_common_shape_reads_as_the_general_reading(usage):
    assert _outcome(lambda: openai_counts(dict(usage), "usage")) == \
        _outcome(lambda: openai_counts(_Usage(usage), "usage"))
