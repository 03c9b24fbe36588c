"""The framework support matrix: one data table that `test_frameworks.py` asserts against and README.md renders.

Regenerate the README section after changing the table: `.venv/bin/python -m tests.frameworks.support_matrix --write`.
`test_readme_support_matrix_is_current` fails when README.md and this table disagree.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
START = "<!-- support-matrix:start -->"
END = "<!-- support-matrix:end -->"


@dataclass(frozen=True)
class Support:
    framework: str
    """AnyAgent framework name, as passed to `AnyAgent.create`."""
    package: str
    """The distribution that implements it (its version is checked against `version`)."""
    version: str
    usage: str
    """`exact`: LLM calls are committed at their priced token usage; `estimated`: at the reservation estimate."""
    second_run: bool
    """Whether a second `run` on the same agent instance works."""
    parallel_tools: str
    """`parallel` (concurrent calls, the `current_span` race otel-cycles repairs) or `sequential`."""
    swallows_tool_denial: bool
    """The framework swallows a denial raised before a tool call; the next LLM call is denied instead."""
    duplicate_requests: bool
    """Under `agent.run()` model requests are sent twice and only one is in the span usage."""
    limits: tuple[str, ...]
    caps: str = "clamp"
    """`clamp`: a `max_tokens` cap (or a soft landing) bounds the request's output tokens (`otel_cycles._clamp`);
    `refuse`: calls that would need a clamp are refused."""


ANY_AGENT = "1.18.0"

MATRIX: tuple[Support, ...] = (
    Support("tinyagent", "any-agent", "1.18.0", "exact", True, "sequential", False, False, ()),
    Support(
        "openai",
        "openai-agents",
        "0.18.1",
        "exact",
        True,
        "parallel",
        False,
        False,
        ("needs `openai<2.45` (the `openai` extra pins it)",),
    ),
    Support("langchain", "langchain", "1.5.2", "exact", True, "parallel", False, False, ()),
    Support(
        "llama_index",
        "llama-index-core",
        "0.14.25",
        "estimated",
        True,
        "parallel",
        True,
        False,
        (
            "streams and drops token usage: LLM calls commit the reservation estimate "
            "(`gen_ai.usage.cost.source=estimate`); exact with `model_type=otel_cycles.llama_index_model_type()`",
        ),
    ),
    Support(
        "google",
        "google-adk",
        "1.14.1",
        "exact",
        True,
        "sequential",
        False,
        False,
        (
            "ADK emits duplicate `call_llm`/`execute_tool` spans with the same usage; only any-agent's are committed",
            "`google:*` model ids use the Gemini API, not an OpenAI-compatible one (tests use `openai:gpt-4o`)",
        ),
    ),
    Support(
        "agno",
        "agno",
        "1.8.4",
        "exact",
        True,
        "parallel",
        False,
        False,
        (
            "any-agent 1.18 breaks a second `run` of the same agent (`TypeError`, unwrap bug); otel-cycles repairs "
            "the unwrap when it is imported",
        ),
    ),
    Support(
        "smolagents",
        "smolagents",
        "1.26.0",
        "exact",
        True,
        "parallel",
        True,
        True,
        (
            "under `agent.run()` every request after an agent's first is sent twice (stale keep-alive connection, "
            "client retry); the span reports one, so one billed request per step is not committed: prefer "
            "`run_async`",
            "`stream_outputs=True` hides LLM calls from callbacks: they are not governed (a warning is logged)",
        ),
    ),
)

BY_NAME = {row.framework: row for row in MATRIX}


def render() -> str:
    """The README section between the markers (markers excluded)."""
    lines = [
        f"Tested offline with any-agent {ANY_AGENT} (`tests/frameworks/`; generated from",
        "`tests/frameworks/support_matrix.py`, do not edit by hand). `caps`: `clamp` = a `max_tokens` cap or a soft",
        "landing bounds the output tokens the model request asks for; `refuse` = such calls are refused.",
        "",
        "| framework | version tested | token usage | parallel tool calls | 2nd run, same agent | caps "
        "| known limits |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in MATRIX:
        limits = "; ".join(row.limits) or "none"
        lines.append(
            f"| {row.framework} | {row.package} {row.version} | {row.usage} | {row.parallel_tools} | "
            f"{'yes' if row.second_run else 'no'} | {row.caps} | {limits} |"
        )
    return "\n".join(lines)


def installed_version(row: Support) -> str:
    return version(row.package)


def readme_section(text: str) -> str:
    start, end = text.index(START) + len(START), text.index(END)
    return text[start:end].strip("\n")


def write_readme() -> None:
    text = README.read_text()
    start, end = text.index(START) + len(START), text.index(END)
    README.write_text(text[:start] + "\n" + render() + "\n" + text[end:])


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write_readme()
    else:
        print(render())
