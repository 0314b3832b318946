"""Reduce one response of a VCR cassette (pydantic-ai's tests/models/cassettes) to the fields metering reads.

usage: cassette.py <repo dir> <rev> <cassette path> <interaction index> > payload.json
JSON bodies (`parsed_body`) and SSE bodies (`body.string`) are both handled; free text is left out (see reduce.py),
OpenRouter's `provider` (the upstream that served the call), Vertex's `createTime` and Anthropic's role and
stop_reason are kept."""
import json, sys

import yaml

import reduce

reduce.KEEP = (*reduce.KEEP, "provider", "createTime", "role", "stop_reason")


def response_of(repo, rev, path, index):
    interaction = yaml.safe_load(reduce.show(repo, rev, path))["interactions"][index]["response"]
    if "parsed_body" in interaction:
        return reduce.slim(interaction["parsed_body"])
    return reduce.reduce_stream(reduce.chunks_of(interaction["body"]["string"]))


if __name__ == "__main__":
    repo, rev, path, index = sys.argv[1:5]
    print(json.dumps(response_of(repo, rev, path, int(index)), indent=1))
