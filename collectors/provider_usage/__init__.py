"""Provider usage/cost pollers: the providers' own organization reports on Kafka `tokenmeter.provider-usage`,
so reconciliation can compare tokenmeter's metered totals with what OpenAI and Anthropic say they billed.

Record (one JSON object per Kafka message, key = provider, one per provider x bucket x kind x group values):
    id             deterministic: derive_event_id("provider-usage", provider, kind, bucket_start, bucket_end, group)
                   -> a re-fetched bucket (the current, incomplete one is re-fetched every poll) keeps its id;
                   downstream keeps the record with the latest fetched_at per id.
    provider       "openai" | "anthropic"
    kind           "usage" (token counts) | "cost" (money)
    bucket_start, bucket_end, bucket_width   RFC 3339 UTC ("2026-11-01T00:00:00Z"), "1d" | "1h"
    model, project_id (OpenAI), workspace_id (Anthropic), api_key_id, user_id, service_tier, batch,
    context_window                           group values (null when not grouped by / not reported)
    input_tokens   ALL input: OpenAI input_tokens (cached included); Anthropic uncached + cache_read + cache_creation
    cached_input_tokens (cache reads), cache_write_tokens, cache_write_1h_tokens, output_tokens,
    requests       OpenAI num_model_requests; null for Anthropic (not reported)
    cost_usd       cost records: exact decimal string of US dollars (Anthropic cents / 100)
    line_item (OpenAI), token_type, cost_type, description (Anthropic)   what a cost line is for
    group          every dimension of the provider's result row (the id's input)
    fetched_at     RFC 3339 time of the poll

Public API:
    OpenAIUsage(bucket_width="1d", group_by=("model", "project_id")), AnthropicUsage(bucket_width, group_by)
    openai_client(base_url, key, key_source, **options) / anthropic_client(...) -> AdminClient
    poll_once(spec, client, publisher, state, since, now=None) -> int   (records written)
    Publisher(bootstrap_servers), PollState(path), AuthError, ProviderApiError, ProviderFormatError
"""

from collectors.provider_usage.anthropic import AnthropicUsage
from collectors.provider_usage.anthropic import client as anthropic_client
from collectors.provider_usage.common import (
    RECORD_FIELDS,
    AdminClient,
    AuthError,
    PollState,
    ProviderApiError,
    ProviderFormatError,
    Publisher,
    poll_once,
    run_poller,
)
from collectors.provider_usage.openai import OpenAIUsage
from collectors.provider_usage.openai import client as openai_client

__all__ = [
    "RECORD_FIELDS",
    "AdminClient",
    "AnthropicUsage",
    "AuthError",
    "OpenAIUsage",
    "PollState",
    "ProviderApiError",
    "ProviderFormatError",
    "Publisher",
    "anthropic_client",
    "openai_client",
    "poll_once",
    "run_poller",
]
