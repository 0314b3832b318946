"""Budgets: definitions (model), periods, the pure ledger that turns priced batches into threshold and
forecast crossings and enforcement decisions, and the compacted-topic store with its `budget` CLI group."""

from .ledger import BudgetLedger, Crossing, Decision, crossing_id, window_for_key
from .model import SCOPE_DIMENSIONS, Budget, BudgetError, parse_budget, scope_values, validate_budget
from .periods import period_window
from .store import BudgetStoreError, delete_budget, load_budgets, parse_budget_file, write_budgets

__all__ = [
    "SCOPE_DIMENSIONS",
    "Budget",
    "BudgetError",
    "BudgetLedger",
    "BudgetStoreError",
    "Crossing",
    "Decision",
    "crossing_id",
    "delete_budget",
    "load_budgets",
    "parse_budget",
    "parse_budget_file",
    "period_window",
    "scope_values",
    "validate_budget",
    "window_for_key",
    "write_budgets",
]
