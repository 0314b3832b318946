"""Credential redaction for what we keep of a record we could not handle (dead letters).

Gateways log the request's headers: APISIX's http-logger / kafka-logger and LiteLLM (some versions) copy
`Authorization`, `apikey`, `x-api-key`, `cookie` ... as sent; Kong writes "REDACTED" for `authorization` but not
for the other ones. A dead letter keeps the record as sent, so without this an end user's key would sit on
`tokenmeter.deadletter` and be shown by whoever reads it. Secrets must never be shown.

Two passes, both bounded (the input is at most a dead letter's kept payload, ~16 KB):
- `redact_value`: a JSON-shaped value (dict / list); replaces the value of any credential-named key at any depth,
  of [name, value] header pairs and of OTel attribute lists ({key, value}). Iterative, depth-capped, copies.
- `redact_text`: text that is not (whole) JSON, e.g. a payload cut at 16 KB or a log line: "name": "value" pairs
  with a credential name, `Bearer <token>` / `Basic <token>` and `sk-...`-like keys, by linear regexes.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import orjson

REDACTED = "[REDACTED]"

# Header / attribute names that carry a credential (lower case). OTel names such as
# `http.request.header.authorization` are matched on their last dotted part.
CREDENTIAL_NAMES = frozenset({
    "authorization", "proxy-authorization", "x-api-key", "api-key", "apikey", "x-goog-api-key", "cookie",
    "set-cookie", "x-amz-security-token", "x-auth-token", "anthropic-api-key", "openai-api-key", "password",
    "secret", "token", "access_token", "refresh_token", "client_secret", "private_key",
})
CREDENTIAL_SUFFIXES = ("authorization", "api-key", "api_key", "apikey", "token", "secret", "password", "cookie")
# Kong's authenticated_entity / credential objects: their `key` is the consumer's key-auth credential.
CREDENTIAL_PARENTS = frozenset({"credential", "authenticated_entity"})
CREDENTIAL_IN_PARENT = frozenset({"key", "secret", "password"})

# Every redaction needs one of these in the text, lower-cased as `is_credential_name` lower-cases names: a
# credential name's ending (every name in CREDENTIAL_NAMES ends with a suffix, or is private_key) or a Kong credential
# parent where a name ENDS (before a quote, an escape, white space that strip() drops, `:`, `=` or the end: usage's
# `prompt_tokens` is no credential), `bearer`, or the start of a key-like token. Most strings and many payloads hold
# none; for them a few str.find calls replace the walk and five regex passes (suite23 measured dead letters
# 1.6-1.7x dearer to build once redaction walked every one). str.find, not one regex: an alternation of these
# words took ~130 us on a 2.4 KB payload, the finds ~1-5 us.
_NAME_ENDINGS = tuple(sorted(set(CREDENTIAL_SUFFIXES) | {"private_key"} | CREDENTIAL_PARENTS))
assert all(name.endswith(_NAME_ENDINGS) for name in CREDENTIAL_NAMES)  # so the endings cover every name
_NAME_DELIMITERS = frozenset("\"'\\:=")
_TOKEN_STARTS = ("bearer", "sk-", "pk-", "rk-", "aiza")

MAX_DEPTH = 200  # below orjson's 255 levels, so a redacted copy always encodes; deeper parts are replaced whole
MAX_NAME_CHARS = 200


def is_credential_name(name: Any) -> bool:
    if not isinstance(name, str) or len(name) > MAX_NAME_CHARS:
        return False
    return _credential_name(name)


@functools.lru_cache(maxsize=4096)  # the same few hundred key names in every dead letter of a source
def _credential_name(name: str) -> bool:
    name = name.strip().lower()
    last = name.rsplit(".", 1)[-1]  # OTel: http.request.header.x-api-key
    return (name in CREDENTIAL_NAMES or last in CREDENTIAL_NAMES
            or name.endswith(CREDENTIAL_SUFFIXES) or last.endswith(CREDENTIAL_SUFFIXES))


def _secret_shaped(value: Any) -> bool:
    """Numbers and flags named like a credential (e.g. a `*_token` count) are not secrets; keep them readable."""
    return value is not None and not isinstance(value, (bool, int, float))


def might_hold_credentials(text: str) -> bool:
    """False only when no pass of this module could replace anything in `text` (or in the value it encodes)."""
    lowered = text.lower()
    if any(start in lowered for start in _TOKEN_STARTS):
        return True
    end = len(lowered)
    for word in _NAME_ENDINGS:
        at = lowered.find(word)
        while at >= 0:
            after = at + len(word)
            if after == end or lowered[after] in _NAME_DELIMITERS or lowered[after].isspace():
                return True
            at = lowered.find(word, at + 1)
    return False


def redact_value(value: Any) -> tuple[Any, int]:
    """A copy of `value` with credential values replaced by REDACTED, and how many were replaced; `value` itself
    when its JSON holds nothing a credential needs (`might_hold_credentials`) and it is shallow enough to encode.
    Anything deeper than MAX_DEPTH is replaced whole (it cannot be encoded as JSON anyway)."""
    try:
        if not might_hold_credentials(orjson.dumps(value).decode()):
            return value, 0
    except (TypeError, orjson.JSONEncodeError):
        pass  # not JSON-shaped (a non-str key, deeper than orjson allows, an object): walk it
    return _walk(value)


def _walk(value: Any) -> tuple[Any, int]:
    count = 0
    root: list[Any] = [None]
    # (source, target container, key in target, depth, parent key name)
    stack: list[tuple[Any, Any, Any, int, str]] = [(value, root, 0, 0, "")]
    while stack:
        source, target, slot, depth, parent = stack.pop()
        if depth > MAX_DEPTH:
            target[slot] = REDACTED
            count += 1
            continue
        if isinstance(source, dict):
            copy: dict[Any, Any] = {}
            target[slot] = copy
            # OTel attribute: {"key": "http.request.header.authorization", "value": {...}}
            attribute_secret = is_credential_name(source.get("key")) and "value" in source
            in_credential = parent in CREDENTIAL_PARENTS
            for key, item in source.items():
                lowered = key.lower() if isinstance(key, str) else ""
                if _secret_shaped(item) and (is_credential_name(key) or (attribute_secret and key == "value")
                                             or (in_credential and lowered in CREDENTIAL_IN_PARENT)):
                    copy[key] = REDACTED
                    count += 1
                elif depth >= MAX_DEPTH or isinstance(item, (dict, list, tuple)):
                    copy[key] = None
                    stack.append((item, copy, key, depth + 1, lowered))
                elif isinstance(item, str):  # scalars here rather than through the stack: most of a payload
                    copy[key], replaced = redact_text(item)
                    count += replaced
                else:
                    copy[key] = item
        elif isinstance(source, (list, tuple)):
            items = list(source)
            target[slot] = items
            # A header pair: ["authorization", "Bearer ..."]
            if len(items) == 2 and is_credential_name(items[0]) and _secret_shaped(items[1]):
                items[1] = REDACTED
                count += 1
                items_to_walk = [0]
            else:
                items_to_walk = range(len(items))
            for index in items_to_walk:
                stack.append((items[index], items, index, depth + 1, parent))
        elif isinstance(source, str):
            target[slot], replaced = redact_text(source)
            count += replaced
        else:
            target[slot] = source
    return root[0], count


def _quoted_pair(quote: str) -> re.Pattern[str]:
    """"name": "value" (JSON) or 'name': 'value' (a Python repr in an exception text); the value may be cut off
    by the end of the text. Possessive, so an unterminated value costs one scan, not a backtracking search."""
    q = re.escape(quote)
    return re.compile(rf'{q}([^{q}\\\n]{{1,200}}){q}\s*:\s*{q}((?:[^{q}\\]|\\.)*+)({q}|\Z)')


_QUOTED_PAIRS = (_quoted_pair('"'), _quoted_pair("'"))
_HEADER_LINE = re.compile(r'(?im)^[ \t]*([A-Za-z0-9_.-]{1,100})[ \t]*[:=][ \t]*(\S[^\r\n]{0,4000})')
# A URL's query pair (`?apikey=...`, `&access_token=...`): Kong's key-auth takes its key from the query string and
# Kong / APISIX log the URL with it (hostile32). The value ends at the next pair, fragment, quote or white space.
_QUERY_PAIR = re.compile(r'[?&;]([A-Za-z0-9_.-]{1,100})=([^&#;\s"\'<>]++)')
_BEARER = re.compile(r'(?i)\b(Bearer)\s+[A-Za-z0-9._~+/=:-]{6,}')
_KEY_LIKE = re.compile(r'\b(?:sk|pk|rk)-[A-Za-z0-9_-]{8,}|\bAIza[0-9A-Za-z_-]{20,}')


def redact_text(text: str) -> tuple[str, int]:
    """`text` with credential-looking parts replaced, and how many. Linear in len(text)."""
    if not might_hold_credentials(text):
        return text, 0
    return _redact_text(text)


def _redact_text(text: str) -> tuple[str, int]:
    count = 0

    def name_value(match: re.Match[str]) -> str:
        nonlocal count
        if not is_credential_name(match.group(1)) or not match.group(2):
            return match.group(0)
        count += 1
        start = match.start(0)
        return match.group(0)[:match.start(2) - start] + REDACTED + match.group(3)

    def header_line(match: re.Match[str]) -> str:
        nonlocal count
        if not is_credential_name(match.group(1)) or match.group(2).startswith(("\"", "'", REDACTED)):
            return match.group(0)
        count += 1
        return match.group(0)[:match.start(2) - match.start(0)] + REDACTED

    def query_pair(match: re.Match[str]) -> str:
        nonlocal count
        if not is_credential_name(match.group(1)) or match.group(2).startswith(REDACTED):
            return match.group(0)
        count += 1
        return match.group(0)[:match.start(2) - match.start(0)] + REDACTED

    def token(match: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return f"{match.group(1)} {REDACTED}" if match.re is _BEARER else REDACTED

    for pattern in _QUOTED_PAIRS:
        text = pattern.sub(name_value, text)
    text = _HEADER_LINE.sub(header_line, text)
    text = _QUERY_PAIR.sub(query_pair, text)
    text = _BEARER.sub(token, text)
    text = _KEY_LIKE.sub(token, text)
    return text, count


def redact_url(url: str) -> str:
    """Hide the password of a URL's user info (a ClickHouse DSN) before it reaches output, a log or an error; up to
    the last `@` before the path, so a password holding `@` is hidden whole. A `password=` (or `secret=`, `token=`,
    `key=`) query value, which ClickHouse's HTTP interface also reads, is hidden too (hostile32)."""
    url = re.sub(r"(://[^:/@]+:)[^/]*@", r"\1***@", url)
    return re.sub(r"([?&](?:password|passwd|pwd|secret|token|key|access_token)=)[^&#]*", r"\1***", url,
                  flags=re.IGNORECASE)
