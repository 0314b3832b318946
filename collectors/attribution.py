"""Which header, field or attribute of a record names the team, project, feature, user, org, api key, route.

A selector is `kind:key`, tried in order, first non-empty value wins:
  header:x-team        request header (case-insensitive; where a dialect logs headers)
  field:consumer.username   dotted path into the record (digits index arrays: consumer_groups.0.name)
  attr:tokenmeter.team  OTel attribute, span first then resource;  span:KEY / resource:KEY for one of them
  const:acme            a fixed value (e.g. every record of this source belongs to org acme)
A bare selector without `kind:` is a field path.

Per source, a mapping (YAML/dict) overrides the dialect defaults dimension by dimension:
    team: [header:x-my-team, field:consumer_groups.0.name]
    org: const:acme
    project: null               # never attribute a project for this source
    tags: {env: header:x-env}
    provider: openai            # provider when a record names none (e.g. APISIX summaries)
    inherit_defaults: true      # false: only the dimensions listed here
Attribution carried by the record itself (canonical events, CloudEvents `data.attribution`, the `tokenmeter`
wrapper of provider responses) always wins over selectors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

from pydantic import ValidationError

from collectors.coerce import dig_steps
from collectors.errors import DialectError
from tokenmeter.events import ATTRIBUTION_DIMENSIONS, Attribution, describe_validation_error

SELECTOR_KINDS = ("header", "field", "attr", "span", "resource", "const")


def _headers(dim: str, *aliases: str) -> list[str]:
    """Our own `x-tokenmeter-<dim>` header first, then common short spellings."""
    return [f"header:x-tokenmeter-{dim.replace('_', '-')}", *(f"header:{alias}" for alias in aliases)]


# Authenticated identities (consumer, key owner) come before self-declared headers for user and api_key;
# headers come first for team/project/feature, which gateways rarely know.
DEFAULT_SELECTORS: dict[str, dict[str, list[str]]] = {
    "canonical": {},
    "kong": {
        "org": _headers("org", "x-org"),  # not workspace_name: every OSS Kong is workspace "default"
        "team": [*_headers("team", "x-team"), "field:consumer_groups.0.name"],
        "project": [*_headers("project", "x-project"), "field:service.name"],
        "user": ["field:consumer.username", "field:consumer.id", *_headers("user", "x-user-id")],
        "api_key": ["field:authenticated_entity.id", *_headers("api_key")],
        "feature": _headers("feature", "x-feature"),
        "route": ["field:route.name", "field:route.id"],
    },
    # APISIX's loggers write `consumer` as {username} only (log-util.lua get_full_log): its group reaches an entry
    # only as a field the operator adds (`log_format_extra` (3.18+) or `log_format`: consumer_group_id =
    # "$consumer_group_id"); `consumer.group_id` stays for entries that carry the whole consumer. ai-proxy logs the
    # request's end user (`safety_identifier` / `user`) as llm_summary.end_user_id.
    "apisix": {
        "org": _headers("org", "x-org"),
        "team": [*_headers("team", "x-team"), "field:consumer_group_id", "field:consumer.group_id"],
        "project": [*_headers("project", "x-project"), "field:service_id"],
        "user": ["field:consumer.username", "field:llm_summary.end_user_id", *_headers("user", "x-user-id")],
        "api_key": _headers("api_key"),
        "feature": _headers("feature", "x-feature"),
        "route": ["field:route_name", "field:route_id"],
    },
    "litellm": {
        "org": ["field:metadata.user_api_key_org_id", "field:metadata.user_api_key_org_alias", *_headers("org")],
        "team": ["field:metadata.user_api_key_team_id", "field:metadata.user_api_key_team_alias",
                 "field:metadata.team_id", *_headers("team", "x-team")],
        "project": ["field:metadata.user_api_key_project_id", *_headers("project", "x-project")],
        "user": ["field:metadata.user_api_key_user_id", "field:end_user", "field:metadata.user_api_key_end_user_id",
                 *_headers("user", "x-user-id")],
        "api_key": ["field:metadata.user_api_key_hash", "field:metadata.user_api_key_alias"],
        "feature": [*_headers("feature", "x-feature"), "field:metadata.spend_logs_metadata.feature",
                    "field:metadata.requester_metadata.feature"],
        "route": ["field:metadata.user_api_key_request_route"],
    },
    "otel": {
        "org": ["attr:tokenmeter.org", "attr:org"],
        "team": ["attr:tokenmeter.team", "attr:team"],
        "project": ["attr:tokenmeter.project", "attr:project", "resource:service.name"],
        "user": ["attr:tokenmeter.user", "attr:user.id", "attr:enduser.id"],
        "api_key": ["attr:tokenmeter.api_key"],
        "feature": ["attr:tokenmeter.feature", "attr:feature"],
        "route": ["attr:tokenmeter.route", "attr:http.route"],
    },
    # CloudEvents extension attributes (lower-case alphanumerics) first, then fields of `data`.
    "cloudevents": {
        "org": ["field:org", "field:data.org"],
        "team": ["field:team", "field:data.team"],
        "project": ["field:project", "field:data.project", "field:source"],
        "user": ["field:user", "field:data.user", "field:subject"],
        "api_key": ["field:apikey", "field:data.api_key"],
        "feature": ["field:feature", "field:data.feature"],
        "route": ["field:route", "field:data.route"],
    },
    # Raw provider responses carry no attribution; only the `tokenmeter` wrapper field provides it.
    "openai": {},
    "anthropic": {},
    "gemini": {},
}


class RecordView:
    """What selectors can see of one record: its fields, request headers, OTel span/resource attributes."""

    def __init__(self, record: Any, headers: Mapping[str, Any] | None = None,
                 span_attrs: Mapping[str, Any] | None = None, resource_attrs: Mapping[str, Any] | None = None):
        self.record = record
        self.headers = view_headers(headers)
        self.span_attrs = span_attrs or {}
        self.resource_attrs = resource_attrs or {}

    def lookup(self, selector: str) -> str | None:
        return self.lookup_split(*_compile(selector))

    def lookup_split(self, kind: str, key: Any) -> str | None:
        """`lookup` of a selector compiled by `_compile` (mappings compile theirs once, not per record)."""
        if kind == "const":
            value: Any = key
        elif kind == "header":
            value = self.headers.get(key)  # compiled lower-case
            if isinstance(value, list):  # Kong logs repeated headers as arrays
                value = value[0] if value else None
        elif kind == "field":
            value = dig_steps(self.record, key)  # compiled to its steps
        elif kind == "span":
            value = self.span_attrs.get(key)
        elif kind == "resource":
            value = self.resource_attrs.get(key)
        else:  # attr
            value = self.span_attrs.get(key)
            if value is None:
                value = self.resource_attrs.get(key)
        return scalar_text(value)


def view_headers(headers: Any) -> Mapping[str, Any]:
    """The headers as `RecordView.headers` holds them (lower-cased names; {} for none or a non-mapping). Read only:
    a dict whose names are all lower-case text already (what Kong and most loggers write) comes back as it is."""
    if not headers:
        return {}
    if type(headers) is dict:
        names = tuple(headers)
        lower = _ALREADY_LOWER.get(names)
        if lower is None:
            if len(_ALREADY_LOWER) >= 1024:  # a bounded cache of the header name sets seen
                _ALREADY_LOWER.clear()
            lower = _ALREADY_LOWER[names] = all(type(name) is str and name.lower() == name for name in names)
        # lower-casing every name of every entry was ~7% of a Kong entry's time; a name set repeats
        return headers if lower else _lower_keys(headers)
    return _lower_keys(headers) if isinstance(headers, Mapping) else {}


_ALREADY_LOWER: dict[tuple[Any, ...], bool] = {}  # header names in record order -> all lower-case text


NO_ATTRIBUTES: Mapping[str, Any] = MappingProxyType({})  # `resolve_parts`' span/resource for a record without


def _view_of(record: Any, headers: Mapping[str, Any], span: Mapping[str, Any],
             resource: Mapping[str, Any]) -> RecordView:
    """A RecordView of parts already in its form (headers lower-cased): for `resolve_parts`' rare getter calls."""
    view = RecordView.__new__(RecordView)
    view.record, view.headers, view.span_attrs, view.resource_attrs = record, headers, span, resource
    return view


def _lower_keys(headers: Mapping[str, Any]) -> dict[str, Any]:
    """The headers with lower-cased names; all-text names (JSON's) in one C-level pass."""
    try:
        return dict(zip(map(str.lower, headers.keys()), headers.values()))
    except TypeError:  # a name that is not text
        return {str(k).lower(): v for k, v in headers.items()}


def scalar_text(value: Any) -> str | None:
    if type(value) is str:  # the common case, first
        value = value.strip()
        return value or None
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        return None
    text = str(value).strip()
    return text or None


def split_selector(selector: str) -> tuple[str, str]:
    kind, sep, key = selector.partition(":")
    if sep and kind in SELECTOR_KINDS:
        return kind, key
    return "field", selector


def _compile(selector: str) -> tuple[str, Any]:
    """(kind, key) ready for RecordView.lookup_split: header names lower-cased, field paths split."""
    kind, key = split_selector(selector)
    if kind == "header":
        return kind, key.lower()
    if kind == "field":
        return kind, tuple(key.split("."))
    return kind, key


def _selector_list(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) and item.strip() for item in items):
        raise ValueError(f"attribution mapping {where}: expected a selector string or a list of them")
    for item in items:
        kind, sep, key = item.partition(":")
        if sep and kind not in SELECTOR_KINDS and "." not in kind:
            raise ValueError(f"attribution mapping {where}: unknown selector kind {kind!r} in {item!r} "
                             f"(use one of {', '.join(SELECTOR_KINDS)})")
        if sep and kind in SELECTOR_KINDS and not key:
            raise ValueError(f"attribution mapping {where}: selector {item!r} names no key")
    return tuple(item.strip() for item in items)


@dataclass(frozen=True)
class AttributionMapping:
    """Per-source overrides of the dialect defaults (see module doc for the YAML form)."""

    dimensions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # () disables a dimension
    tags: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    provider: str | None = None
    inherit_defaults: bool = True
    # dialect -> (dimension getters, tag getters), compiled once: resolve() runs once per event.
    _plans: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "AttributionMapping":
        data = dict(data or {})
        dimensions: dict[str, tuple[str, ...]] = {}
        for dim in ATTRIBUTION_DIMENSIONS:
            if dim in data:
                dimensions[dim] = _selector_list(data.pop(dim), dim)
        raw_tags = data.pop("tags", None) or {}
        if not isinstance(raw_tags, Mapping):
            raise ValueError("attribution mapping tags: expected a mapping of tag name to selector(s)")
        tags = {str(name): _selector_list(sels, f"tags.{name}") for name, sels in raw_tags.items()}
        provider = data.pop("provider", None)
        if provider is not None and (not isinstance(provider, str) or not provider.strip()):
            raise ValueError("attribution mapping provider: expected a provider name")
        inherit = data.pop("inherit_defaults", True)
        if not isinstance(inherit, bool):
            raise ValueError("attribution mapping inherit_defaults: expected true or false")
        if data:
            known = ", ".join([*ATTRIBUTION_DIMENSIONS, "tags", "provider", "inherit_defaults"])
            raise ValueError(f"attribution mapping: unknown key(s) {', '.join(map(repr, data))} (known: {known})")
        return cls(dimensions=dimensions, tags=tags, provider=provider, inherit_defaults=inherit)

    def selectors(self, dialect: str) -> dict[str, tuple[str, ...]]:
        """The effective selectors of every dimension for one dialect."""
        base = DEFAULT_SELECTORS.get(dialect, {}) if self.inherit_defaults else {}
        merged = {dim: tuple(base.get(dim, ())) for dim in ATTRIBUTION_DIMENSIONS}
        merged.update(self.dimensions)
        return merged

    def resolve(self, dialect: str, view: RecordView, native: Mapping[str, Any] | Attribution | None = None,
                auto_tags: Mapping[str, str] | None = None) -> Attribution:
        """Attribution for one event: native values, then selectors; tags: automatic < mapped < native."""
        if isinstance(native, Attribution):
            native = native.model_dump()
        values = self.resolve_values(dialect, view, native, auto_tags)
        try:
            return Attribution(**values)
        except ValidationError as exc:  # past the contract's bounds (a 5 MB header, 100,000 tags): this entry's error
            raise DialectError(f"invalid event: {describe_validation_error(exc, 'attribution')}") from None

    def resolve_values(self, dialect: str, view: RecordView, native: Mapping[str, Any] | None = None,
                       auto_tags: Mapping[str, str] | None = None) -> dict[str, Any]:
        """`resolve` as the attribution's JSON form (`model_dump(exclude_none=True)`): the dimensions found, in
        model order, then `tags`. The batch form writes it into the event as it is."""
        if not native:
            return self._resolver(dialect)(view, auto_tags)
        dimension_plan, tag_plan = self._plan(dialect)
        values: dict[str, Any] = {}
        for dim, getters in dimension_plan:
            value = scalar_text(native.get(dim)) if native else None
            if value is None:
                for get in getters:
                    value = get(view)
                    if value is not None:
                        break
            if value is not None:
                values[dim] = value
        tags = {k: v for k, v in auto_tags.items() if v} if auto_tags else {}
        for name, getters in tag_plan:
            for get in getters:
                value = get(view)
                if value is not None:
                    tags[name] = value
                    break
        native_tags = native.get("tags") if native else None
        if native_tags and isinstance(native_tags, Mapping):
            tags.update({str(k): str(v) for k, v in native_tags.items() if v is not None})
        values["tags"] = tags
        return values

    def _plan(self, dialect: str) -> tuple[tuple[tuple[str, tuple[tuple[str, Any], ...]], ...], ...]:
        plan = self._plans.get(dialect)
        if plan is None:
            dims = tuple((dim, tuple(_getter(s) for s in sels)) for dim, sels in self.selectors(dialect).items())
            tags = tuple((name, tuple(_getter(s) for s in sels)) for name, sels in self.tags.items())
            plan = self._plans[dialect] = (dims, tags)
        return plan

    def reads_fields(self, dialect: str) -> bool:
        """Whether a selector of this dialect (dimension or tag) reads the record's own fields (`field:`)."""
        found = self._plans.get((dialect, "reads_fields"))
        if found is None:
            groups = [*self.selectors(dialect).values(), *self.tags.values()]
            found = self._plans[(dialect, "reads_fields")] = any(
                split_selector(selector)[0] == "field" for group in groups for selector in group)
        return found

    def _resolver(self, dialect: str) -> Callable[[RecordView, Mapping[str, str] | None], dict[str, Any]]:
        resolver = self._plans.get((dialect, "resolver"))
        if resolver is None:
            dims = {dim: sels for dim, sels in self.selectors(dialect).items()}
            resolver, parts = _compile_resolver(dims, self.tags)
            self._plans[(dialect, "resolver")], self._plans[(dialect, "parts")] = resolver, parts
        return resolver

    def resolve_parts(self, dialect: str) -> Callable[..., dict[str, Any]]:
        """`resolve_values(dialect, RecordView(record, headers, span, resource), auto_tags=...)` as a function
        `(record, headers, span, resource, auto_tags)` of the view's parts already in its form (headers by
        `view_headers`, `NO_ATTRIBUTES` for none): the batch form's readers make no view per event."""
        parts = self._plans.get((dialect, "parts"))
        if parts is None:
            self._resolver(dialect)
            parts = self._plans[(dialect, "parts")]
        return parts


def _getter(selector: str) -> Callable[[RecordView], str | None]:
    """`RecordView.lookup(selector)` as a function of the view, specialised once per mapping: a mapping resolves
    every event of a batch, and the kind dispatch and path walk of `lookup_split` were a third of that."""
    kind, key = _compile(selector)
    if kind == "header":
        def header(view: RecordView) -> str | None:
            value = view.headers.get(key)
            if value is None:  # the common case: most selectors' headers are not sent
                return None
            if type(value) is str:
                value = value.strip()
                return value or None
            return view.lookup_split(kind, key)
        return header
    if kind == "field" and len(key) <= 2 and not any(step.lstrip("-").isdigit() for step in key):
        first, second = key[0], key[-1]
        nested = len(key) == 2

        def field(view: RecordView) -> str | None:  # dig_steps over dicts, one or two steps
            value = view.record.get(first) if isinstance(view.record, dict) else None
            if nested:
                value = value.get(second) if isinstance(value, dict) else None
            return scalar_text(value)
        return field
    if kind == "span":
        return lambda view: scalar_text(view.span_attrs.get(key))
    if kind == "resource":
        return lambda view: scalar_text(view.resource_attrs.get(key))
    if kind == "attr":
        def attribute(view: RecordView) -> str | None:  # span first, then resource
            value = view.span_attrs.get(key)
            if value is None:
                value = view.resource_attrs.get(key)
            return scalar_text(value)
        return attribute
    if kind == "const":
        text = scalar_text(key)
        return lambda view: text
    return lambda view: view.lookup_split(kind, key)


def _compile_resolver(dims: Mapping[str, tuple[str, ...]],
                      tags: Mapping[str, tuple[str, ...]]) -> tuple[Callable[..., dict], Callable[..., dict]]:
    """`resolve_values` without native attribution, as one function of the view written for this mapping.

    A record misses most selectors (no `x-tokenmeter-org` header, no `tokenmeter.org` attribute); looping over
    the getters and calling each was a third of a Kong or OTel event's conversion. The function tests each
    header/attribute selector's key for presence inline and calls the getter only when the key is there (a
    getter of an absent key returns None), the first value found winning as in the loop; a present key's text
    value (or a span/resource attribute's) is read inline, as its getter would, which is called only for the
    other types. Only names are put into the code; selector keys, tag names and getters are passed in as values.
    Returns `resolve(view, auto_tags)` and `resolve_parts(record, headers, span, resource, auto_tags)`, the same
    function of the view's parts (AttributionMapping.resolve_parts)."""
    env: dict[str, Any] = {"scalar_text": scalar_text, "empty": {}, "view_of": _view_of}
    lines = ["def resolve_parts(record, headers, span, resource, auto_tags):",
             "    values = {}"]

    firsts: dict[str, str] = {}  # a field path's first step -> the variable holding the record's value there
    prologue: list[str] = []
    mapped: set[str] = set()  # the first-step variables also read as a dict once (`<name>_map`)

    def step_read(key_name: str, number: int, step: str) -> str:
        env[f"{key_name}_s{number}"] = step  # a name of its own: no tuple subscript per read
        read = f"x.get({key_name}_s{number}) if isinstance(x, dict) else "
        if step.lstrip("-").isdigit():  # a list index (dict keys first, as dig_steps)
            env[f"{key_name}_i{number}"] = int(step)
            return read + (f"(x[{key_name}_i{number}] if isinstance(x, list) and "
                           f"-len(x) <= {key_name}_i{number} < len(x) else None)")
        return read + "None"

    def first_found(selectors: tuple[str, ...], prefix: str) -> None:
        lines.append("    v = None")
        for index, selector in enumerate(selectors):
            kind, key = _compile(selector)
            getter, key_name = f"{prefix}_get{index}", f"{prefix}_key{index}"
            env[getter], env[key_name] = _getter(selector), key
            if kind == "field":  # dig_steps, inline: most events read a few fields
                first = firsts.get(key[0])
                if first is None:  # the record's value at this first step, read once for every selector
                    first = firsts[key[0]] = f"first{len(firsts)}"
                    if key[0].lstrip("-").isdigit():  # a list record's index (dig_steps): the general read
                        prologue.extend(["    x = record", f"    {first} = {step_read(key_name, 0, key[0])}"])
                    else:
                        env[f"{first}_step"] = key[0]
                        prologue.append(f"    {first} = record_map.get({first}_step)")
                if len(key) == 2 and not key[1].lstrip("-").isdigit():  # the common `a.b`: one get, the key a constant
                    if first not in mapped:
                        mapped.add(first)
                        prologue.append(f"    {first}_map = {first} if isinstance({first}, dict) else empty")
                    env[f"{key_name}_1"] = key[1]
                    lines.extend(["    if v is None:", f"        x = {first}_map.get({key_name}_1)"])
                else:
                    lines.extend(["    if v is None:", f"        x = {first}"])
                    for number, step in enumerate(key[1:], 1):
                        lines.append(f"        x = {step_read(key_name, number, step)}")
                lines.append("        if x is not None:")  # scalar_text, its common case inline
                lines.append("            if type(x) is str: v = x.strip() or None")
                lines.append("            else: v = scalar_text(x)")
                continue
            view = "view_of(record, headers, span, resource)"  # only for a value of an uncommon type
            if kind == "header":  # a text value read inline (the getter's common case)
                lines.extend([f"    if v is None and {key_name} in headers:", f"        x = headers[{key_name}]",
                              "        if type(x) is str: v = x.strip() or None",
                              f"        else: v = {getter}({view})"])
                continue
            if kind in ("span", "resource", "attr"):  # the getters' reading, inline
                present = {"span": f"{key_name} in span", "resource": f"{key_name} in resource",
                           "attr": f"({key_name} in span or {key_name} in resource)"}[kind]
                lines.extend([f"    if v is None and {present}:",
                              f"        x = {'resource' if kind == 'resource' else 'span'}.get({key_name})"])
                if kind == "attr":
                    lines.append(f"        if x is None: x = resource.get({key_name})")
                lines.extend(["        if x is not None:", "            if type(x) is str: v = x.strip() or None",
                              "            else: v = scalar_text(x)"])
                continue
            lines.append(f"    if v is None: v = {getter}({view})")

    for number, (dim, selectors) in enumerate(dims.items()):
        env[f"dim{number}"] = dim
        first_found(selectors, f"dim{number}")
        lines.append(f"    if v is not None: values[dim{number}] = v")
    lines.append("    tags = {k: v for k, v in auto_tags.items() if v} if auto_tags else {}")
    for number, (name, selectors) in enumerate(tags.items()):
        env[f"tag{number}"] = name
        first_found(selectors, f"tag{number}")
        lines.append(f"    if v is not None: tags[tag{number}] = v")
    lines += ["    values['tags'] = tags", "    return values", "",
              "def resolve(view, auto_tags):",
              "    return resolve_parts(view.record, view.headers, view.span_attrs, view.resource_attrs, auto_tags)"]
    if prologue:  # the record tested for a dict once, not once per first step (dig_steps: None otherwise)
        prologue.insert(0, "    record_map = record if isinstance(record, dict) else empty")
    lines[1:1] = prologue
    exec(compile("\n".join(lines), "<attribution resolver>", "exec"), env)  # noqa: S102 - our own text
    return env["resolve"], env["resolve_parts"]


DEFAULT_MAPPING = AttributionMapping()
