"""Building blocks for core tests: a tool and an agent factory bound to the scripted model."""

from __future__ import annotations

from typing import Any

from any_agent import AgentConfig, AnyAgent
from any_agent.callbacks import Callback

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
