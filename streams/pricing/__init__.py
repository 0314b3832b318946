"""Pricing: an effective-dated price catalog as data, and the PriceBook that costs metered events.

Catalog format (`streams/pricing/catalog/*.yaml`, one provider per file; imports may use
`providers: {<provider>: <block>}` to hold several). Prices are USD per 1M tokens, written as quoted
decimal strings (a YAML float is an error, so no price ever passes through binary floating point):

```yaml
provider: openai                 # canonical provider id (see resolve.PROVIDER_ALIASES for accepted spellings)
first_party: true                # the model maker's own API; used when an event's provider is unknown
source: https://platform.openai.com/docs/pricing   # default source of every version below
models:
  gpt-4o:                        # entry key: openai/gpt-4o
    aliases: [gpt-4o-2024-11-20] # exact names, case-insensitive
    match: ['gpt-4o-\\d{4}-\\d{2}-\\d{2}']   # optional full-match regexes
    mode: chat                   # chat | embedding | ...
    max_output_tokens: 16384     # optional: the model's documented output limit (held by a reservation that
                                 # names none, and the most one holds; based_on entries inherit it)
    versions:                    # price history; the version in force at the event's ts applies
      - effective_from: 2024-10-02   # a date (00:00 UTC) or an ISO datetime
        input: "2.50"                # uncached input
        cached_input: "1.25"         # cache reads          (default: input)
        cache_write_5m: "3.75"       # cache writes, 5 min  (default: input)
        cache_write_1h: "6.00"       # cache writes, 1 hour (default: cache_write_5m)
        output: "10.00"              # visible output
        reasoning: "10.00"           # reasoning tokens     (default: output)
        request: "0.01"              # optional USD per successful request
        long_context: {above_input_tokens: 200000, input: "5.00", output: "15.00", ...}  # whole call
        # or, several thresholds (strictly rising; whole call at the highest one its input exceeds):
        # input_tiers: [{above_input_tokens: 32768, input: "2.40", output: "12.00"}, {above_input_tokens: ...}]
        # thinking_output: "3.50"    # instead of reasoning: ALL output of a call with reasoning tokens at this rate
        batch: {multiplier: "0.5"}   # batch / flex / priority: a multiplier or explicit prices
        priority: {input: "4.25", cached_input: "2.125", output: "17.00"}
        source: https://...          # where the numbers come from (required here or above)
        notes: free text, e.g. what is unverified
  gpt-4o-azure-like:
    based_on: openai/gpt-4o      # reuse another entry's history (resellers), optionally
    multiplier: "1.1"            #   scaled, and keeping only some service tiers:
    tiers: [batch]
```

Explicit tier and long-context prices must list every price the base version lists (no guessing).

Costing: uncached input = input - cached - cache writes; visible output = output - reasoning; each part at
its price; `long_context` applies when the call's input tokens exceed the threshold; `event.batch` selects
`batch`, `service_tier` flex/priority select those (default/auto/standard: the base prices); a tier the
entry lacks makes the event unpriced with a reason. Unknown or ambiguous models are unpriced with a
reason, never $0. Overrides (negotiated discounts, custom prices, self-hosted models): see `overrides`.
LiteLLM cost map import: see `litellm_import`.
"""

from .book import (
    BREAKDOWN_PARTS,
    COST_QUANTUM,
    PriceBook,
    PriceResult,
    cost_lines,
    imported_catalog_dir,
    load_price_book,
    service_tier_of,
)
from .catalog import BUNDLED_CATALOG_DIR, CatalogEntry
from .litellm_import import ImportedEntry, ImportReport, import_litellm_cost_map
from .overrides import Overrides, load_overrides
from .resolve import PROVIDER_ALIASES, Resolution, candidate_names, canonical_provider
from .schema import CatalogError, PriceVersion

__all__ = [
    "BREAKDOWN_PARTS",
    "BUNDLED_CATALOG_DIR",
    "COST_QUANTUM",
    "PROVIDER_ALIASES",
    "CatalogEntry",
    "CatalogError",
    "ImportReport",
    "ImportedEntry",
    "Overrides",
    "PriceBook",
    "PriceResult",
    "PriceVersion",
    "Resolution",
    "candidate_names",
    "canonical_provider",
    "cost_lines",
    "import_litellm_cost_map",
    "imported_catalog_dir",
    "load_overrides",
    "load_price_book",
    "service_tier_of",
]
