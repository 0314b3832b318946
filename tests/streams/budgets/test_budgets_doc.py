"""The budget examples of docs/budgets.md ("Defining a budget") are budgets the code accepts (walk20: the docs had
no example of defining one at all)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from streams.budgets.cli import _parse_scope, _parse_thresholds, set_budget
from streams.budgets.model import parse_budget
from streams.budgets.store import parse_budget_file

SECTION = (Path(__file__).resolve().parents[3] / "docs" / "budgets.md").read_text() \
    .split("## Defining a budget", 1)[1].split("\n## ", 1)[0]


def test_the_yaml_example_is_a_valid_budget_file(tmp_path):
    example = re.search(r"```yaml\n(.*?)```", SECTION, re.S).group(1)
    path = tmp_path / "budgets.yaml"
    path.write_text(example)
    budgets = {b.name: b for b in parse_budget_file(path)}
    assert set(budgets) == {"search-monthly", "growth-agent-daily"}
    assert budgets["growth-agent-daily"].metric == "tokens" and budgets["growth-agent-daily"].action == "block"


def test_the_budget_set_example_parses_to_a_valid_budget():
    command = re.search(r"```bash\n(tokenmeter budget set .*?)\n(?!  )", SECTION, re.S).group(1)
    args = shlex.split(command.replace("\\\n", " "))[3:]
    ctx = set_budget.make_context("set", args)
    assert ctx.params["name"] == "search-daily"
    p = ctx.params
    budget = parse_budget({"name": p["name"], "scope": _parse_scope(p["scope"]), "period": p["period"], "tz": p["tz"],
                           "metric": "cost_usd", "limit": p["limit_usd"], "action": p["action"],
                           "thresholds": _parse_thresholds(p["thresholds"]), "notify": list(p["notify"])})
    assert budget.scope == {"team": "search"} and budget.action == "block"


def test_the_litellm_hooks_make_one_http_client_and_reuse_it():
    """trust35: both LiteLLM examples opened an httpx client per call, and each loads the CA bundle (~40-50 CPU-ms
    per admitted call, measured in docs/rounds/budgets.md): one client, made when the module loads, serves every
    call."""
    import ast

    text = (Path(__file__).resolve().parents[3] / "docs" / "budgets.md").read_text()
    examples = re.findall(r"\*\*LiteLLM proxy\*\*.*?```python\n(.*?)```", text, re.S)
    assert len(examples) == 2
    for code in examples:
        tree = ast.parse(code)
        made_in_functions = [call for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                             for call in ast.walk(fn) if isinstance(call, ast.Call)
                             and ast.unparse(call.func) == "httpx.AsyncClient"]
        made = [call for call in ast.walk(tree) if isinstance(call, ast.Call)
                and ast.unparse(call.func) == "httpx.AsyncClient"]
        assert len(made) == 1 and not made_in_functions, code
