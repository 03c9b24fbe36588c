"""`otel-cycles demo`: budget governance end to end, offline (most of its time is spent importing AnyAgent).

It starts the embedded Cycles authority and the scripted model on loopback, creates a tenant, an API key and a
three-level budget (tenant > workflow > agent), and runs a research agent with two tools under
`CyclesBudgetCallback` until the budget stops it (the scripted agent finishes its research after `RESEARCH_ROUNDS`
tool rounds, so a large `--budget` ends with its answer). Every call is printed as it finishes (reserved, committed,
budget left); at the end come the spend per span and per scope, where and why the agent was stopped, and the balances
read back from the authority. Everything it started is stopped on exit; the ledger lives in memory unless `--db` or
`--keep-db` asks to keep it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import sys
import warnings
from contextlib import ExitStack
from dataclasses import asdict
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["add_demo_command", "run_demo"]

TENANT = "demo"
WORKFLOW = "research"
AGENT = "researcher"
DEFAULT_BUDGET_USD = "0.02"
KEPT_DB = "otel-cycles-demo.db"
FRAMEWORKS = ("tinyagent", "openai", "langchain", "llama_index", "google", "agno", "smolagents")
TOOL_COSTS = {"search_web": 250_000, "visit_webpage": 150_000}
"""USD_MICROCENTS per tool call (a paid search API, a page fetch), reserved and committed as is."""
INSTRUCTIONS = (
    "You are a research agent. Research the question thoroughly: call search_web and visit_webpage many times "
    "and cross-check sources before you answer."
)
QUESTION = "What is the state of the art in budget governance for AI agents?"
RESEARCH_ROUNDS = 20
"""Tool rounds after which the scripted model answers: the run ends even when the budget never runs out."""
_QUIET_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    # Known, harmless warnings google-adk's imports print on every run; they are not the user's to act on.
    (r"Support for google-cloud-storage < 3\.0\.0", FutureWarning),
    (r"The `vertexai\.preview\.rag` module is deprecated", UserWarning),
)
FRAMEWORK_MODULES = {
    "openai": ("agents",),
    "langchain": ("langchain_core", "langgraph"),
    "llama_index": ("llama_index.core",),
    "google": ("google.adk",),
    "agno": ("agno",),
    "smolagents": ("smolagents",),
}
"""What each framework's extra installs (the modules AnyAgent imports for it); tinyagent needs nothing extra."""
# API-key variables of common any-llm providers; other providers are passed through unchecked.
_PROVIDER_KEYS = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "google": "GEMINI_API_KEY",
    "mistral": "MISTRAL_API_KEY",
    "groq": "GROQ_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
}


def search_web(query: str) -> str:
    """Search the web and return the top results.

    Args:
        query: What to search for.
    """
    return f"Top results for {query!r}: 'Budgets before tokens' (runcycles.io), 'Reserve, commit, release' (arXiv)."


def visit_webpage(url: str) -> str:
    """Fetch a web page and return its text.

    Args:
        url: The page to fetch.
    """
    return f"{url}: reserve the estimate before each call, commit the actual cost after it, release on failure."


def _microcents(text: str) -> int:
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not an amount in USD: {text!r}") from None
    if not amount.is_finite() or amount <= 0:
        raise argparse.ArgumentTypeError(f"the budget must be a positive amount in USD, not {text!r}")
    return int(amount * 100_000_000)


def add_demo_command(subparsers: Any) -> None:
    """Add the `demo` command."""
    summary = "run a research agent on the embedded authority and the scripted model until its budget stops it"
    demo = subparsers.add_parser("demo", help=summary, description=__doc__.split("\n\n")[0] if __doc__ else summary)
    demo.add_argument("--framework", choices=FRAMEWORKS, default="tinyagent", help="AnyAgent framework (tinyagent)")
    demo.add_argument(
        "--budget",
        type=_microcents,
        default=_microcents(DEFAULT_BUDGET_USD),
        metavar="USD",
        help=f"the agent's budget in USD (default {DEFAULT_BUDGET_USD}; the workflow gets 2.5x, the tenant 5x); the "
        f"scripted agent answers after {RESEARCH_ROUNDS} tool rounds, so a large budget ends with its answer",
    )
    demo.add_argument(
        "--otlp",
        metavar="ENDPOINT",
        help="also export traces and metrics over OTLP/HTTP, e.g. http://localhost:4318 (the collector/ stack)",
    )
    demo.add_argument(
        "--model",
        metavar="PROVIDER:MODEL",
        help="use a real model instead of the scripted one; its API key must be set (e.g. OPENAI_API_KEY)",
    )
    demo.add_argument("--db", metavar="PATH", help="keep the SQLite ledger in PATH (must not exist yet)")
    demo.add_argument("--keep-db", action="store_true", help=f"keep the ledger in ./{KEPT_DB}")
    demo.add_argument(
        "--json", action="store_true", help="print the summary and balances as JSON on stdout (the rest on stderr)"
    )
    demo.add_argument(
        "--soft-landing",
        action="store_true",
        help="when an LLM call no longer fits, reserve what is left and clamp its output tokens instead of stopping",
    )
    demo.set_defaults(handler=_cmd_demo)


class DemoError(Exception):
    """A problem the user can fix, reported as one line on stderr (no traceback)."""


def _cmd_demo(args: argparse.Namespace) -> int:
    db = args.db or (KEPT_DB if args.keep_db else None)
    problem = _usage_problem(args.framework, args.model, db)
    if problem is not None:
        print(f"otel-cycles demo: error: {problem}", file=sys.stderr)
        return 2
    from rich.console import Console

    # With --json, stdout carries the JSON alone (`demo --json | jq`); the human output goes to stderr.
    console = Console(highlight=False, stderr=args.json)
    otlp = args.otlp
    if otlp and not _listening(otlp):
        print(f"otel-cycles demo: warning: nothing listens at {otlp}; running without OTLP export", file=sys.stderr)
        otlp = None
    try:
        summary = run_demo(
            console,
            framework=args.framework,
            budget=args.budget,
            otlp=otlp,
            model=args.model,
            db_path=db,
            soft_landing=args.soft_landing,
        )
    except DemoError as exc:
        print(f"otel-cycles demo: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary), flush=True)
    return 0


def _usage_problem(framework: str, model: str | None, db: str | None) -> str | None:
    """What is wrong with the demo's arguments, in one line, or None. Checked before anything heavy is imported."""
    if db is not None and os.path.exists(db):
        return f"{db} exists; remove it or pass another --db PATH"
    if db is not None and not os.path.isdir(os.path.dirname(os.path.abspath(db))):
        return f"--db {db}: directory {os.path.dirname(os.path.abspath(db))} does not exist"
    missing = [module for module in FRAMEWORK_MODULES.get(framework, ()) if not _importable(module)]
    if missing:
        return (
            f"--framework {framework} needs the {framework} extra ({', '.join(missing)} is not installed): "
            f"pip install 'otel-cycles[{framework}]'"
        )
    if model:
        provider, colon, name = model.partition(":")
        if not colon or not provider or not name:
            return f"--model {model}: use the form provider:model, e.g. openai:gpt-4o-mini"
        key = _PROVIDER_KEYS.get(provider)
        if key is not None and not os.environ.get(key):
            return f"--model {model}: set {key} (or leave --model out for the scripted model)"
        if key is None and not _known_provider(provider):
            return f"--model {model}: unknown provider {provider!r} (e.g. openai, anthropic, gemini, mistral, groq)"
    return None


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package is missing (google.adk without google)
        return False


def _known_provider(provider: str) -> bool:
    from any_llm.constants import LLMProvider

    try:
        LLMProvider(provider)
    except ValueError:
        return False
    return True


def _listening(endpoint: str) -> bool:
    """Whether something accepts TCP connections at an OTLP endpoint URL (a one-second probe)."""
    from urllib.parse import urlsplit

    parts = urlsplit(endpoint)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 4318)
        with socket.create_connection((parts.hostname or "localhost", port), timeout=1.0):
            return True
    except (OSError, ValueError):
        return False


def run_demo(
    console: Any,
    *,
    framework: str = "tinyagent",
    budget: int = 2_000_000,
    otlp: str | None = None,
    model: str | None = None,
    db_path: str | None = None,
    soft_landing: bool = False,
) -> dict[str, Any]:
    """Run the demo, printing to the rich `console`; return its summary (what it printed, as plain data).

    Args:
        console: A `rich.console.Console`.
        framework: AnyAgent framework of the research agent.
        budget: The agent's budget in USD_MICROCENTS; the workflow gets 2.5x, the tenant 5x.
        otlp: OTLP/HTTP endpoint to export traces and metrics to, if any.
        model: `provider:model` of a real model; None serves `openai:gpt-4o` from the scripted model.
        db_path: SQLite file to keep the ledger in; None keeps it in memory.
        soft_landing: Let the budget callback soft-land LLM calls that no longer fit (`soft_landing=True`).
    """
    if model is None:
        os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")  # the OpenAI Agents SDK would upload traces
    for message, category in _QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message, category)

    from any_agent import AgentConfig, AgentRunError, AnyAgent
    from any_agent.tracing.agent_trace import AgentTrace
    from runcycles import CyclesClient, CyclesConfig

    from otel_cycles import CyclesBudgetCallback, GovernanceStop, balances, configure_export
    from otel_cycles._demo_view import ProgressPrinter, call_rows, money, render_budgets, render_summary
    from otel_cycles.authority import LocalAuthority
    from otel_cycles.testing import ScriptedModel

    scopes = [
        (f"tenant:{TENANT}", budget * 5),
        (f"tenant:{TENANT}/workflow:{WORKFLOW}", budget * 5 // 2),
        (f"tenant:{TENANT}/workflow:{WORKFLOW}/agent:{AGENT}", budget),
    ]
    with ExitStack() as stack:
        authority = stack.enter_context(LocalAuthority(db_path))
        authority.create_tenant(TENANT, "Demo tenant")
        api_key = authority.create_api_key(TENANT, "demo")
        for scope, amount in scopes:
            authority.create_budget(scope, amount)
        model_config: dict[str, Any] = {"model_id": model}
        if model is None:
            scripted = stack.enter_context(
                ScriptedModel(
                    tool_rounds=RESEARCH_ROUNDS,  # the budget stops it first, unless --budget is large
                    tools=list(TOOL_COSTS),
                    tool_args={
                        "search_web": {"query": "AI agent budget governance"},
                        "visit_webpage": {"url": "https://runcycles.io/docs"},
                    },
                    delay=0.15,  # a model is not instant; lets the progress be followed
                )  # fmt: skip
            )
            model_config = {"model_id": "openai:gpt-4o", "api_base": scripted.base_url, "api_key": "sk-scripted"}
        export = configure_export(otlp, service_name="otel-cycles-demo", metric_interval_ms=1_000) if otlp else None
        if export is not None:
            stack.callback(export.shutdown)

        console.rule("[bold]otel-cycles demo: budget governance for AnyAgent")
        console.print(f"authority  {authority.base_url}  (embedded, ledger {db_path or 'in memory'})")
        console.print(f"model      {model or 'openai:gpt-4o, scripted on ' + model_config['api_base']}")
        console.print(f"agent      {framework}, tools {', '.join(TOOL_COSTS)}" + (f", OTLP → {otlp}" if otlp else ""))
        render_budgets(console, scopes)
        console.print(f"[dim]Q: {QUESTION}[/]\n")

        client = CyclesClient(CyclesConfig(base_url=authority.base_url, api_key=api_key, journal_enabled=False))
        progress = ProgressPrinter(console, scopes[-1][0], budget)
        callback = CyclesBudgetCallback(
            client=client,
            tenant=TENANT,
            workflow=WORKFLOW,
            agent=AGENT,
            tool_estimate=TOOL_COSTS,
            soft_landing=soft_landing,
        )
        agent = AnyAgent.create(
            framework,
            AgentConfig(
                **model_config,
                instructions=INSTRUCTIONS,
                tools=[search_web, visit_webpage],
                callbacks=[callback, progress],  # progress after the budget callback: it reads what that stamped
            ),
        )
        stop: GovernanceStop | None = None
        trace: AgentTrace | None
        try:
            trace = agent.run(QUESTION)
        except GovernanceStop as exc:
            stop, trace = exc, exc.trace
        except AgentRunError as exc:  # the model or framework failed (bad model id, network): say why in one line
            cause = exc.original_exception
            first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
            raise DemoError(f"the agent run failed: {type(cause).__name__}: {first[:300]}") from None
        rows = call_rows(trace.spans if trace is not None else [])
        if export is not None:
            export.force_flush()
        final = balances(client, TENANT)
        render_summary(console, rows, final, stop, callback.estimates.output_allowance)
        if stop is None and trace is not None:
            console.print(f"[dim]answer: {trace.final_output}[/]")
        if db_path:
            console.print(f"ledger kept in {db_path}: `otel-cycles authority serve --db {db_path}` serves it again")
        agent_left, agent_spent = next((b.remaining, b.spent) for b in final if b.scope_path == scopes[-1][0])
        console.print(f"[bold]{AGENT} has {money(agent_left)} left[/] (used {agent_spent / budget:.0%} of its budget).")
        return {
            "stopped": stop is not None,
            "reason_code": stop.reason_code if stop else None,
            "stopped_at": getattr(stop, "scope", None),
            "action": f"{stop.action_kind} {stop.action_name}" if stop else None,
            "remaining_printed": progress.remaining,
            "committed": sum(row.committed or 0 for row in rows),
            "budget_used": agent_spent / budget,
            "calls": [asdict(row) for row in rows],
            "balances": [asdict(b) for b in final],
        }
    raise AssertionError("unreachable")  # pragma: no cover  (mypy: ExitStack may swallow exceptions)


def main() -> None:  # pragma: no cover
    """`python -m otel_cycles.demo`: same as `otel-cycles demo`."""
    from otel_cycles._cli import main as cli_main

    sys.exit(cli_main(["demo", *sys.argv[1:]]))


if __name__ == "__main__":  # pragma: no cover
    main()
