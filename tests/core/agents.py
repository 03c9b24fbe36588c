"""Building blocks for core tests: a tool and an agent factory bound to the scripted model, and runs whose hooks a
test drives by hand."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from any_agent import AgentConfig, AnyAgent
from any_agent.callbacks import Callback, Context
from any_agent.tracing.agent_trace import AgentTrace
from opentelemetry import trace

from otel_cycles import CyclesBudgetCallback
from otel_cycles.testing import ScriptedModel


def search_web(query: str) -> str:
    """Search the web for `query` and return the top results.

    Args:
        query: What to search for.
    """
    return f"Top results for {query}: budgets, reservations, commits."


def make_agent(
    model: ScriptedModel, callbacks: list[Callback], *, framework: str = "tinyagent", **config: Any
) -> AnyAgent:
    agent_config = AgentConfig(
        model_id=config.pop("model_id", "openai:gpt-4o"),
        api_base=model.base_url,
        api_key="sk-fake",
        tools=config.pop("tools", [search_web]),
        callbacks=callbacks,
        **config,
    )
    return AnyAgent.create(framework, agent_config)


def hand_run(callback: CyclesBudgetCallback) -> tuple[Context, Any]:
    """Start a run whose hooks the test drives by hand, as AnyAgent would: its context and its invoke span."""
    tracer = trace.get_tracer("any_agent")
    invoke = tracer.start_span("invoke_agent [t]", attributes={"gen_ai.request.model": "openai:gpt-4o"})
    context = Context(current_span=invoke, trace=AgentTrace(), tracer=tracer, shared={})
    callback.before_agent_invocation(context, "prompt")
    return context, invoke


def run_tool(callback: CyclesBudgetCallback, context: Context) -> Any:
    """One call of the tool `search`, driven by hand; its span."""
    tool = context.tracer.start_span("execute_tool search", attributes={"gen_ai.tool.name": "search"})
    context.current_span = tool
    callback.before_tool_execution(context)
    callback.after_tool_execution(context)
    tool.end()
    return tool


def answer_naming_a_tool(
    callback: CyclesBudgetCallback,
    context: Context,
    *,
    before_answer: Callable[[], object] | None = None,
    end: bool = True,
) -> Any:
    """One LLM call, driven by hand, whose answer asks for the tool `search`; its span (ended unless `end=False`).
    `before_answer` runs between the call's reservation and its answer."""
    llm = context.tracer.start_span("call_llm gpt-4o", attributes={"gen_ai.request.model": "gpt-4o"})
    context.current_span = llm
    callback.before_llm_call(context)
    if before_answer is not None:
        before_answer()
    llm.set_attributes(
        {
            "gen_ai.usage.input_tokens": 100,
            "gen_ai.usage.output_tokens": 10,
            "gen_ai.output.type": "json",
            "gen_ai.output": '[{"tool.name": "search"}]',
        }
    )
    callback.after_llm_call(context)
    if end:
        llm.end()
    return llm
