"""What lets every example run as the guide writes it, with or without a Cycles server and an OpenAI key.

The guide configures everything through environment variables (`CYCLES_BASE_URL`, `CYCLES_API_KEY`,
`CYCLES_TENANT`, `OPENAI_API_KEY`), so this module only sets those:

* `CYCLES_BASE_URL` **unset** (the default): `offline(budgets)` starts the embedded Cycles authority
  (`otel_cycles.authority.LocalAuthority`) with tenant `acme`, an API key and the example's budgets, and the scripted
  OpenAI-compatible model (`otel_cycles.testing.ScriptedModel`); it points `CYCLES_*` and `OPENAI_BASE_URL` /
  `OPENAI_API_KEY` at them for the duration and stops both afterwards. The tools are offline stand-ins.
* `CYCLES_BASE_URL` **set**: nothing is started. Your server, API key and tenant (`CYCLES_TENANT=acme`) are used, and
  the budgets the example names must exist there (create them with your admin server, or `otel-cycles authority
  budget create` against the embedded one). The model is the real one (`OPENAI_API_KEY`, or `OPENAI_BASE_URL` for any
  OpenAI-compatible server) and the tools are `any_agent.tools`' real ones.

`EXAMPLES_DB=path` keeps the embedded ledger in a SQLite file (the test suite reads it back). This module imports
nothing heavy at import time: the `attach` example must set its tracer provider before `any_agent` is imported.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")  # the OpenAI Agents SDK would upload its own traces

TENANT = "acme"
OFFLINE = not os.environ.get("CYCLES_BASE_URL")
"""True when the examples run against the embedded authority and the scripted model."""


@contextmanager
def offline(budgets: Mapping[str, int], **model_options: Any) -> Iterator[None]:
    """Offline: serve the authority (tenant `acme`, `budgets` by scope path) and the scripted model for the block.

    Args:
        budgets: USD_MICROCENTS per scope path, e.g. `{"tenant:acme": 100_000_000}`; parents before children.
        model_options: `ScriptedModel` arguments (default: two tool rounds, then the answer).
    """
    if not OFFLINE:
        yield
        return
    from otel_cycles.authority import LocalAuthority
    from otel_cycles.testing import ScriptedModel

    with ExitStack() as stack:
        authority = stack.enter_context(LocalAuthority(os.environ.get("EXAMPLES_DB")))
        authority.create_tenant(TENANT)
        api_key = authority.create_api_key(TENANT)
        for scope, amount in budgets.items():
            authority.create_budget(scope, amount)
        model = stack.enter_context(ScriptedModel(**model_options))
        variables = {
            "CYCLES_BASE_URL": authority.base_url,
            "CYCLES_API_KEY": api_key,
            "CYCLES_TENANT": TENANT,
            "CYCLES_JOURNAL_ENABLED": "false",  # leave nothing behind
            "OPENAI_BASE_URL": model.base_url,
            "OPENAI_API_KEY": "sk-scripted",
        }
        saved = {name: os.environ.get(name) for name in variables}
        os.environ.update(variables)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def model_id(real: str) -> str:
    """`real` (e.g. `google:gemini-2.0-flash`), or `openai:gpt-4o` offline: the scripted model speaks OpenAI only."""
    return real if not OFFLINE or real.startswith("openai:") else "openai:gpt-4o"


def search_web(query: str) -> str:
    """Perform a web search and return the top results.

    Args:
        query: The search query.
    """
    if not OFFLINE:
        from any_agent.tools import search_web as real

        return str(real(query))
    return f"Results for {query!r}: 'Budgets before tokens', 'Reserve, commit, release', 'Agents that stop in time'."


def visit_webpage(url: str) -> str:
    """Visit a web page and return its content as markdown.

    Args:
        url: The URL of the page.
    """
    if not OFFLINE:
        from any_agent.tools import visit_webpage as real

        return str(real(url))
    return f"# {url}\nReserve the estimate before each call, commit the actual cost after it, release on failure."


def balances(client: Any, tenant: str = TENANT) -> dict[str, dict[str, int]]:
    """`{scope_path: {"spent": …, "remaining": …, "reserved": …}}` of `tenant`, read from the authority."""
    from otel_cycles import balances as read

    return {
        b.scope_path: {"spent": b.spent, "remaining": b.remaining, "reserved": b.reserved} for b in read(client, tenant)
    }


def report(**values: Any) -> None:
    """Print the example's outcome as one `RESULT {json}` line (the test suite parses the last line)."""
    print("RESULT " + json.dumps(values, default=str), flush=True)
