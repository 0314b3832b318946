"""Which catalog entry prices a (provider, model) pair as gateways and SDKs spell them.

Names are tried from most to least specific: the name as given, without provider/router prefixes or cloud
resource paths, without an OpenRouter variant suffix (`:nitro`) and in Anthropic's spelling of OpenRouter's Claude
names (`claude-3.7-sonnet`, `claude-4.5-sonnet-20250929`), without the Bedrock region and vendor/version parts, then
without snapshot suffixes (dates, `@version`, `-0613`). Each name is looked up exactly (ids and aliases) and then against `match` regexes.
The first hit wins, so a specific entry (`gpt-4o-2024-05-13`, `us.anthropic...` regional price) beats the
general one it would otherwise fall back to.

Which providers are searched: the event's provider when the catalog has entries for it; else a provider
named by a model prefix (`anthropic/claude-...`); else, for gateways and routers we do not price
(`openrouter`, `litellm`, unknown), the model makers' own APIs (`first_party` blocks), and only when
exactly one entry matches. Anything else is unpriced with a reason, never $0: OpenRouter's `:free` variant and
open-weight authors (`meta-llama/...`) get a reason of their own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping

from .catalog import CatalogEntry, Claim
from .schema import CatalogError

# Spellings of providers in OTel (`gen_ai.provider.name` / `gen_ai.system`), LiteLLM, Kong and SDKs.
PROVIDER_ALIASES = {
    "openai": "openai", "openai_api": "openai", "text-completion-openai": "openai",
    "azure": "azure", "azure_openai": "azure", "azure-openai": "azure", "azure.ai.openai": "azure",
    "az.ai.openai": "azure", "azure_text": "azure",
    "anthropic": "anthropic",
    "bedrock": "bedrock", "aws.bedrock": "bedrock", "aws_bedrock": "bedrock", "amazon_bedrock": "bedrock",
    "amazon-bedrock": "bedrock", "bedrock_converse": "bedrock", "bedrock-converse": "bedrock",
    "vertex_ai": "vertex_ai", "vertex": "vertex_ai", "vertexai": "vertex_ai", "gcp.vertex_ai": "vertex_ai",
    "google_vertex": "vertex_ai", "google-vertex": "vertex_ai", "vertex_ai_beta": "vertex_ai",
    "gemini": "gemini", "gcp.gemini": "gemini", "google": "gemini", "google_ai_studio": "gemini",
    "google-ai-studio": "gemini", "gcp.gen_ai": "gemini", "google_genai": "gemini",
    "mistral": "mistral", "mistral_ai": "mistral", "mistralai": "mistral",
    "deepseek": "deepseek",
    "xai": "xai", "x_ai": "xai", "x-ai": "xai", "grok": "xai",
    "together": "together", "together_ai": "together", "togetherai": "together",
    "cohere": "cohere", "cohere_chat": "cohere", "cohere_v2": "cohere",
    "groq": "groq", "groqcloud": "groq",
    "fireworks": "fireworks", "fireworks_ai": "fireworks", "fireworks-ai": "fireworks", "fireworksai": "fireworks",
    "dashscope": "dashscope", "alibaba": "dashscope", "alibaba_cloud": "dashscope", "alibaba-cloud": "dashscope",
    "aliyun": "dashscope", "qwen": "dashscope", "bailian": "dashscope",
}
# Prefixes that name a router, not who serves the model: stripped, never a provider hint.
ROUTER_PREFIXES = {"openrouter", "litellm", "litellm_proxy", "portkey", "helicone", "kong", "cloudflare"}
_BEDROCK_ID = re.compile(
    r"^(?:(?P<region>us|eu|apac|jp|au|ca|us-gov|global)\.)?"
    r"(?P<vendor>anthropic|amazon|meta|mistral|cohere|ai21|deepseek|openai|qwen|writer|twelvelabs|stability)\."
    r"(?P<model>.+?)(?:-v\d+(?::\d+)?|:\d+)?$"
)
_SNAPSHOT_SUFFIXES = (
    re.compile(r"@[a-z0-9._-]+$"),  # vertex claude-sonnet-4-5@20250929, @default
    re.compile(r"-\d{4}-\d{2}-\d{2}$"),  # gpt-4o-2024-08-06
    re.compile(r"-\d{8}$"),  # claude-sonnet-4-5-20250929
    re.compile(r"-0\d\d$"),  # gemini-2.0-flash-001
    re.compile(r"-\d{4}$"),  # gpt-4-0613, grok-4-0709, mistral-large-2411
)
# OpenRouter's variant suffixes (https://openrouter.ai/docs/guides/routing/model-variants/overview.md): routing
# variants change only how a request is routed, and `:thinking` / `:beta` (self-moderated) are the same model at
# the same list price, so the base model's price is the check. `:free` is billed $0 by OpenRouter (no list price is
# a check for it); `:extended` and others have prices of their own, so they stay unknown.
_SAME_PRICE_VARIANTS = re.compile(r":(nitro|floor|exacto|online|thinking|beta)$")
_FREE_VARIANT = re.compile(r":free$")
_FREE_VARIANT_REASON = ("OpenRouter's :free variant is billed $0 by OpenRouter, so the model maker's list price is no "
                        "check for it; OpenRouter's reported cost is the cost of record")
# OpenRouter spells Claude versions with a dot (`claude-3.7-sonnet`, `claude-sonnet-4.5`) and answers with a dated
# canonical slug that puts the version first (`claude-4.5-sonnet-20250929`, `claude-4-sonnet-20250522`); Anthropic's
# ids use dashes and, from Claude 4 on, the family first (`claude-sonnet-4-5-20250929`).
_DOTTED_VERSION = re.compile(r"(?<=\d)\.(?=\d)")
_VERSION_FIRST_CLAUDE = re.compile(r"^claude-(?P<version>[4-9](?:-\d)?)-(?P<family>opus|sonnet|haiku)(?P<rest>-.*)?$")
# Authors on OpenRouter whose models are open weights with no API of the author's own in the catalog: hosts price them
# differently, so the catalog has no single list price to check a routed call against.
_OPEN_WEIGHT_AUTHORS = {"meta-llama", "meta", "nousresearch", "microsoft", "nvidia", "allenai", "thedrummer",
                        "gryphe", "sao10k", "cognitivecomputations", "liquid"}


def canonical_provider(provider: str | None) -> str:
    name = (provider or "").strip().lower()
    return PROVIDER_ALIASES.get(name, name)


def candidate_names(model: str) -> tuple[str | None, list[str]]:
    """(provider named by the model string or None, names to try in order)."""
    name = model.strip().lower()
    names = [name]
    hint: str | None = None
    if name.startswith("arn:"):  # arn:aws:bedrock:us-east-1:123:inference-profile/us.anthropic.claude-...
        name = name.rsplit("/", 1)[-1]
        hint = "bedrock"
        names.append(name)
    if "models/" in name:  # projects/p/locations/l/publishers/google/models/gemini-2.5-pro, models/gemini-...
        publisher = re.search(r"publishers/([^/]+)/", name)
        if publisher:
            hint = "vertex_ai"
        name = name.rsplit("models/", 1)[-1]
        names.append(name)
    while "/" in name:
        head, rest = name.split("/", 1)
        if head in ROUTER_PREFIXES:
            name = rest
        elif canonical_provider(head) in set(PROVIDER_ALIASES.values()):
            hint = hint or canonical_provider(head)
            name = rest
        else:
            break
        names.append(name)
    if variant := _SAME_PRICE_VARIANTS.search(name):
        name = name[:variant.start()]
        names.append(name)
    if name.startswith("claude-"):
        respelled = _DOTTED_VERSION.sub("-", name)
        if version_first := _VERSION_FIRST_CLAUDE.match(respelled):
            respelled = f"claude-{version_first['family']}-{version_first['version']}{version_first['rest'] or ''}"
        if respelled != name:
            name = respelled
            names.append(name)
    bedrock = _BEDROCK_ID.match(name)
    if bedrock:
        if bedrock["region"]:
            names.append(name.split(".", 1)[1])  # the profile without its region: same base price
        name = bedrock["model"]
        names.append(name)
    changed = True
    while changed:
        changed = False
        for suffix in _SNAPSHOT_SUFFIXES:
            stripped = suffix.sub("", name)
            if stripped != name and stripped:
                name = stripped
                names.append(name)
                changed = True
                break
    return hint, list(dict.fromkeys(names))


@dataclass(frozen=True)
class Resolution:
    entry: CatalogEntry | None
    reason: str | None = None  # why there is no entry
    matched_name: str | None = None


class Resolver:
    def __init__(self, entries: Mapping[str, CatalogEntry], claims: Iterable[Claim],
                 azure_deployments: Mapping[str, str] | None = None):
        self.entries = entries
        self._names: dict[str, dict[str, tuple[int, str]]] = {}  # provider -> name -> (layer, key)
        self._patterns: dict[str, list[tuple[int, re.Pattern[str], str]]] = {}
        for claim in claims:
            if claim.name is not None:
                by_name = self._names.setdefault(claim.provider, {})
                previous = by_name.get(claim.name)
                if previous and previous[0] == claim.layer and previous[1] != claim.key:
                    raise CatalogError(
                        f"{claim.provider}: model name {claim.name!r} is claimed by both {previous[1]} and {claim.key}"
                    )
                if previous is None or claim.layer >= previous[0]:
                    by_name[claim.name] = (claim.layer, claim.key)
            else:
                self._patterns.setdefault(claim.provider, []).append((claim.layer, claim.pattern, claim.key))
        for patterns in self._patterns.values():
            patterns.sort(key=lambda item: -item[0])  # later layers first; stable within a layer
        self.providers = set(self._names) | set(self._patterns)
        self.first_party = sorted({e.provider for e in entries.values() if e.first_party})
        self.azure_deployments = {k.strip().lower(): v for k, v in (azure_deployments or {}).items()}

    def _lookup(self, provider: str, name: str) -> str | None:
        hit = self._names.get(provider, {}).get(name)
        if hit:
            return hit[1]
        for _, pattern, key in self._patterns.get(provider, ()):
            if pattern.fullmatch(name):
                return key
        return None

    def _search(self, providers: list[str], names: list[str]) -> Resolution | None:
        for name in names:
            keys = {key for provider in providers if (key := self._lookup(provider, name))}
            if len(keys) == 1:
                return Resolution(self.entries[keys.pop()], matched_name=name)
            if len(keys) > 1:
                return Resolution(None, f"model name {name!r} is ambiguous: {', '.join(sorted(keys))}; "
                                        "set the event's provider")
        return None

    def resolve(self, provider: str, model: str) -> Resolution:
        canonical = canonical_provider(provider)
        hint, names = candidate_names(model)
        if any(_FREE_VARIANT.search(name) for name in names):
            return Resolution(None, _FREE_VARIANT_REASON)
        if canonical == "azure":
            return self._resolve_azure(model, names)
        if canonical in self.providers:
            found = self._search([canonical], names)
            if not found and (why := _not_token_billed(canonical, names)):
                return Resolution(None, why)
            return found or Resolution(None, f"unknown model {model!r} for provider {canonical!r} "
                                             "(no catalog entry matches; add it to the overrides' custom_models "
                                             "or import the LiteLLM cost map)")
        if hint and hint in self.providers:
            found = self._search([hint], names)
            return found or Resolution(None, f"unknown model {model!r} for provider {hint!r} (from the model prefix)")
        found = self._search(self.first_party, names)
        if not found and (author := _author(names)) in _OPEN_WEIGHT_AUTHORS:
            return Resolution(None, f"open-weight model {model!r} (author {author!r}) has no model maker's API price, "
                                    "and its hosts price it differently: set the event's provider to the host that "
                                    "served it")
        return found or Resolution(None, f"unknown model {model!r}: provider {provider!r} has no catalog entries and "
                                         "no model maker's price matches")

    def _resolve_azure(self, model: str, names: list[str]) -> Resolution:
        # Azure events name a deployment, which the operator chose; the mapping says which model it runs.
        deployment = names[0].removeprefix("azure/")
        mapped = self.azure_deployments.get(deployment)
        if mapped:
            names = candidate_names(mapped)[1] + names
        found = self._search(["azure"], names)
        if found:
            return found
        return Resolution(None, f"unknown Azure deployment or model {model!r}: map the deployment name to a model "
                                "in azure_deployments")


_FREE_GEMINI_EXPERIMENTS = re.compile(r"gemini-(2\.0-flash-exp|2\.0-flash-thinking-exp(-\d{2}-\d{2}|-\d{4})?|"
                                      r"2\.0-pro-exp-02-05|2\.5-pro-exp-03-25|exp-\d{4})")
_FREE_GEMINI_REASON = ("free experimental Gemini model without a paid price; the bundled catalog prices nothing at $0 "
                       "(declare it in the overrides' custom_models to count such calls as $0; gemini_previews.yaml)")
# Models a provider billed by something logs do not carry: unpriced with this reason, never priced at token rates.
_NOT_TOKEN_BILLED = (
    ("vertex_ai", re.compile(r"gemini-1\.[05]-(pro|flash|ultra)(-vision)?(-\d{3}|-latest|-preview.*)?"),
     "Vertex AI billed Gemini 1.0/1.5 per 1,000 characters, which usage logs do not carry; not priced at token "
     "rates (vertex_ai_2024.yaml)"),
    ("vertex_ai", re.compile(r"(text-embedding-00[45]|text-multilingual-embedding-002|textembedding-gecko"
                             r"(-multilingual)?)(@\d+)?"),
     "Vertex AI bills its text embeddings per 1,000 input characters, which usage logs do not carry; not priced at "
     "token rates (vertex_ai_previews.yaml)"),
    *((provider, _FREE_GEMINI_EXPERIMENTS, _FREE_GEMINI_REASON) for provider in ("gemini", "vertex_ai")),
    ("openai", re.compile(r"gpt-4o(-mini)?-search-preview(-\d{4}-\d{2}-\d{2})?"),
     "OpenAI's Chat Completions search models bill a web search per call on top of their tokens, and the response "
     "does not show it: not priced at token rates alone (declare the call's price in the overrides' custom_models)"),
)


def _author(names: list[str]) -> str | None:
    """The `<author>/` part of an OpenRouter-style id once router prefixes are gone (`meta-llama`), if any."""
    for name in names:
        head, slash, _ = name.partition("/")
        if slash and head not in ROUTER_PREFIXES:
            return head
    return None


def _not_token_billed(provider: str, names: list[str]) -> str | None:
    for billed_provider, pattern, reason in _NOT_TOKEN_BILLED:
        if provider == billed_provider and any(pattern.fullmatch(name) for name in names):
            return reason
    return None
