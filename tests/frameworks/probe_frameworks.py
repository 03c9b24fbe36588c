"""Probe any-agent's callback and span behaviour for every framework, offline, against `ScriptedModel`.

Not a test (no `test_` prefix): a re-runnable research script behind `docs/frameworks.md`.

Usage:
    .venv/bin/python tests/frameworks/probe_frameworks.py                   # all 7, summary table on stdout
    .venv/bin/python tests/frameworks/probe_frameworks.py tinyagent agno    # only these
    .venv/bin/python tests/frameworks/probe_frameworks.py --out /tmp/probe  # also write <framework>.json reports

Each framework runs in its own subprocess (fresh global tracer provider, framework imports isolated), two at a time.
Per framework it runs these scenarios, each against a fresh `ScriptedModel`:

* `basic`: 1 tool round then the final answer; records every hook's args/kwargs, thread and current span, every
  span started/ended by the global provider, and compares span usage with the usage the server sent.
* `run_async`: as `basic`, through `asyncio.run(agent.run_async(...))` on the main thread instead of `agent.run`.
* `cancel_llm` / `cancel_tool`: an `AgentCancel` subclass raised in the first `before_llm_call` /
  `before_tool_execution`.
* `parallel`: 2 tool calls in one model response.
* `http500`: every model request answers HTTP 500.
* `second_run`: two `run` calls on the same agent instance.
* `async_hooks`: `async def before_llm_call` / `before_tool_execution`.
* llama_index only: `no_stream` (`agent_args={"streaming": False}`), `include_usage`
  (`model_args={"stream_options": {"include_usage": True}}`) and `usage_recovery` (`usage_keeping_llama_llm()`).
* smolagents only: `no_keep_alive` (the server closes every connection; see the duplicate-request finding).
* `parallel` tools sleep 0.2 s so that concurrent execution really overlaps.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

FRAMEWORKS = ["tinyagent", "openai", "langchain", "llama_index", "google", "agno", "smolagents"]
PROMPT = "Research how budget governance for AI agents works."
TOOL_SECONDS = 0.0  # the parallel scenario raises it, so that concurrent tool execution really overlaps
_MARKER = "PROBE-REPORT-JSON:"  # prefixes the child's report line; frameworks print to stdout too
MAX_TOKENS = 256  # sent as model_args so the probe can see where max_tokens shows up in the hook arguments

os.environ.setdefault("OPENAI_API_KEY", "sk-fake")
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")


def search_web(query: str) -> str:
    """Search the web.

    Args:
        query: What to search for.

    Returns:
        The search results.
    """
    time.sleep(TOOL_SECONDS)
    return f"RESULT[search_web]: 3 pages about {query}."


def fetch_page(url: str) -> str:
    """Fetch a web page.

    Args:
        url: The page address.

    Returns:
        The page text.
    """
    time.sleep(TOOL_SECONDS)
    return f"RESULT[fetch_page]: text of {url}."


# -- describing what the hooks receive ------------------------------------------------------------------------------


def describe(obj: Any, depth: int = 0) -> Any:
    """A JSON-able sketch of `obj`: types, lengths, short previews, nested up to 3 levels."""
    if obj is None or isinstance(obj, bool | int | float):
        return obj
    if isinstance(obj, str):
        return f"str[{len(obj)}] {obj[:60]!r}"
    name = f"{type(obj).__module__}.{type(obj).__qualname__}"
    if depth >= 3:
        return name
    if isinstance(obj, dict):
        return {str(k): describe(v, depth + 1) for k, v in list(obj.items())[:25]}
    if isinstance(obj, list | tuple):
        head = [describe(v, depth + 1) for v in obj[:2]]
        return {"type": f"{type(obj).__name__}[{len(obj)}]", "first": head}
    fields = getattr(type(obj), "model_fields", None) or getattr(obj, "__dataclass_fields__", None)
    if fields and depth < 2:
        return {"type": name, "fields": {f: describe(getattr(obj, f, None), depth + 1) for f in list(fields)[:25]}}
    return name


def find_usage(obj: Any, path: str = "", depth: int = 0, seen: set[int] | None = None) -> dict[str, Any]:
    """Paths to token-count-like fields reachable from `obj` (attributes, dict keys, list items)."""
    seen = set() if seen is None else seen
    found: dict[str, Any] = {}
    if depth > 6 or id(obj) in seen or obj is None or isinstance(obj, str | bytes | bool | float):
        return found
    seen.add(id(obj))
    items: list[tuple[str, Any]]
    if isinstance(obj, dict):
        items = [(f"[{k!r}]", v) for k, v in obj.items()]
    elif isinstance(obj, list | tuple):
        items = [(f"[{i}]", v) for i, v in enumerate(obj[:5])]
    elif hasattr(obj, "__dict__") and type(obj).__module__.split(".")[0] not in (
        "opentelemetry",
        "builtins",
        "asyncio",
    ):
        items = [(f".{k}", v) for k, v in vars(obj).items() if not k.startswith("__")]
    else:
        return found
    for key, value in items:
        sub = path + key
        lowered = key.lower()
        if isinstance(value, int) and not isinstance(value, bool) and ("token" in lowered or "usage" in lowered):
            found[sub] = value
        else:
            found.update(find_usage(value, sub, depth + 1, seen))
    return found


def span_attrs(span: Any) -> dict[str, Any]:
    attrs = dict(getattr(span, "attributes", None) or {})
    return {k: (v if not isinstance(v, str) or len(v) < 80 else f"str[{len(v)}]") for k, v in attrs.items()}


def _scope(span: Any) -> str:
    scope = span.instrumentation_scope
    return scope.name if scope is not None else "?"


def _thread() -> dict[str, Any]:
    try:
        asyncio.get_running_loop()
        loop = True
    except RuntimeError:
        loop = False
    return {
        "thread": threading.current_thread().name,
        "main": threading.current_thread() is threading.main_thread(),
        "loop_running": loop,
    }


# -- probe code run inside the framework's subprocess ---------------------------------------------------------------


def probe_one(framework: str) -> dict[str, Any]:
    """Run every scenario for `framework` in this process and return the report."""
    from any_agent import AgentCancel, AgentConfig, AgentRunError, AnyAgent
    from any_agent.callbacks import Callback, Context
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

    from otel_cycles.testing import ScriptedModel

    class ProbeCancel(AgentCancel):
        """Raised by the probe to cancel a run."""

    class SpanRecorder(SpanProcessor):
        def __init__(self) -> None:
            self.lock = threading.Lock()
            self.started: dict[int, dict[str, Any]] = {}
            self.ended: list[dict[str, Any]] = []

        def on_start(self, span: Span, parent_context: Any = None) -> None:
            with self.lock:
                self.started[span.context.span_id] = {"name": span.name, "scope": _scope(span)}

        def on_end(self, span: ReadableSpan) -> None:
            with self.lock:
                self.ended.append(
                    {
                        "id": span.context.span_id,
                        "name": span.name,
                        "scope": _scope(span),
                        "parent": span.parent.span_id if span.parent else None,
                        "status": span.status.status_code.name,
                        "attrs": span_attrs(span),
                        **_thread(),
                    }
                )

        def reset(self) -> None:
            with self.lock:
                self.started.clear()
                self.ended.clear()

        def summary(self) -> dict[str, Any]:
            with self.lock:
                names = {sid: s["name"] for sid, s in self.started.items()}
                counts: dict[int, int] = {}
                for span in self.ended:
                    counts[span["id"]] = counts.get(span["id"], 0) + 1
                return {
                    "ended": [
                        {k: v for k, v in s.items() if k != "id"} | {"parent": names.get(s["parent"], s["parent"])}
                        for s in self.ended
                    ],
                    "never_ended": [
                        s["name"] + f" ({s['scope']})" for sid, s in self.started.items() if sid not in counts
                    ],
                    "ended_twice": [names.get(sid) for sid, c in counts.items() if c > 1],
                }

    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider), type(provider)
    recorder = SpanRecorder()
    provider.add_span_processor(recorder)

    class Recorder(Callback):
        def __init__(self, cancel_at: str | None = None) -> None:
            self.cancel_at = cancel_at
            self.events: list[dict[str, Any]] = []
            self.server: Any = None

        def _log(self, hook: str, context: Context, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            span = context.current_span
            self.events.append(
                {
                    "hook": hook,
                    **_thread(),
                    "args": describe(list(args)),
                    "kwargs": describe(kwargs),
                    "span": getattr(span, "name", None),
                    "span_ended": getattr(span, "end_time", None) is not None,
                    "span_attrs": span_attrs(span),
                    "usage_paths": find_usage({"args": list(args), "kwargs": kwargs})
                    if hook == "after_llm_call"
                    else {},
                    "requests_so_far": self.server.request_count if self.server else None,
                }
            )

        def before_agent_invocation(self, context: Context, *args: Any, **kwargs: Any) -> Context:
            self._log("before_agent_invocation", context, args, kwargs)
            return context

        def after_agent_invocation(self, context: Context, *args: Any, **kwargs: Any) -> Context:
            self._log("after_agent_invocation", context, args, kwargs)
            return context

        def before_llm_call(self, context: Context, *args: Any, **kwargs: Any) -> Context:
            self._log("before_llm_call", context, args, kwargs)
            if self.cancel_at == "before_llm_call":
                self.cancel_at = None
                raise ProbeCancel("probe cancel in before_llm_call")
            return context

        def after_llm_call(self, context: Context, *args: Any, **kwargs: Any) -> Context:
            self._log("after_llm_call", context, args, kwargs)
            return context

        def before_tool_execution(self, context: Context, *args: Any, **kwargs: Any) -> Context:
            self._log("before_tool_execution", context, args, kwargs)
            if self.cancel_at == "before_tool_execution":
                self.cancel_at = None
                raise ProbeCancel("probe cancel in before_tool_execution")
            return context

        def after_tool_execution(self, context: Context, *args: Any, **kwargs: Any) -> Context:
            self._log("after_tool_execution", context, args, kwargs)
            return context

    class AsyncRecorder(Callback):
        def __init__(self) -> None:
            self.awaited: list[str] = []

        async def before_llm_call(self, context: Context, *args: Any, **kwargs: Any) -> Context:  # type: ignore[override]
            self.awaited.append("before_llm_call")
            return context

        async def before_tool_execution(self, context: Context, *args: Any, **kwargs: Any) -> Context:  # type: ignore[override]
            self.awaited.append("before_tool_execution")
            return context

    def outcome(exc: BaseException | None) -> dict[str, Any]:
        if exc is None:
            return {"result": "ok"}
        chain: list[str] = []
        cur = exc.__cause__ or exc.__context__
        while cur is not None and len(chain) < 5:
            chain.append(type(cur).__name__)
            cur = cur.__cause__ or cur.__context__
        original = getattr(exc, "original_exception", None)
        return {
            "result": type(exc).__name__,
            "message": str(exc)[:200],
            "cause_chain": chain,
            "original": type(original).__name__ if original is not None else None,
        }

    def scenario(
        server_kwargs: dict[str, Any],
        callback: Any,
        runs: int = 1,
        prompt: str = PROMPT,
        agent_args: dict[str, Any] | None = None,
        model_args: dict[str, Any] | None = None,
        use_async: bool = False,
        model_type: Any = None,
    ) -> dict[str, Any]:
        recorder.reset()
        started = time.monotonic()
        with ScriptedModel(**server_kwargs) as server:
            if isinstance(callback, Recorder):
                callback.server = server
            config = AgentConfig(
                model_id="openai:gpt-4o",
                api_base=server.base_url,
                api_key="sk-fake",
                tools=[search_web, fetch_page],
                callbacks=[callback],
                model_args={"max_tokens": MAX_TOKENS, **(model_args or {})},
                agent_args=agent_args,
                model_type=model_type,
            )
            agent = AnyAgent.create(framework, config)
            results = []
            for _ in range(runs):
                before = server.request_count
                try:
                    agent_trace = asyncio.run(agent.run_async(prompt)) if use_async else agent.run(prompt)
                    res = outcome(None) | {
                        "trace_tokens": [agent_trace.tokens.input_tokens, agent_trace.tokens.output_tokens],
                        "final_output": str(agent_trace.final_output)[:80],
                        "trace_spans": [span.name for span in agent_trace.spans],
                    }
                except (AgentCancel, AgentRunError) as exc:
                    res = outcome(exc)
                    spans = getattr(exc, "trace", None)
                    res["trace_spans"] = [s.name for s in spans.spans] if spans is not None else None
                except Exception as exc:  # the probe records whatever escapes
                    res = outcome(exc) | {"escaped_unwrapped": True}
                res["requests"] = server.request_count - before
                results.append(res)
            served = [
                {
                    "n": r.n,
                    "status": r.status,
                    "stream": bool(r.body.get("stream")),
                    "stream_options": r.body.get("stream_options"),
                    "usage": [r.usage.prompt_tokens, r.usage.completion_tokens] if r.usage else None,
                    "max_tokens": r.body.get("max_tokens", r.body.get("max_completion_tokens")),
                    "parallel_tool_calls": r.body.get("parallel_tool_calls"),
                    "tools": r.tool_names,
                    "tool_choice": r.body.get("tool_choice"),
                    "messages": [m.get("role") for m in r.messages],
                    "reply_tool_calls": [c.name for c in r.response.tool_calls],
                }
                for r in server.requests
            ]
        report = {
            "runs": results,
            "served": served,
            "spans": recorder.summary(),
            "seconds": round(time.monotonic() - started, 2),
        }
        if isinstance(callback, Recorder):
            report["events"] = callback.events
        return report

    report: dict[str, Any] = {"framework": framework}
    report["basic"] = scenario({"tool_rounds": 1}, Recorder())
    report["run_async"] = scenario({"tool_rounds": 1}, Recorder(), use_async=True)
    report["cancel_llm"] = scenario({"tool_rounds": 1}, Recorder(cancel_at="before_llm_call"))
    report["cancel_tool"] = scenario({"tool_rounds": 1}, Recorder(cancel_at="before_tool_execution"))
    global TOOL_SECONDS
    TOOL_SECONDS = 0.2
    report["parallel"] = scenario({"tool_rounds": 1, "parallel": 2}, Recorder())
    TOOL_SECONDS = 0.0
    report["http500"] = scenario({"tool_rounds": 1, "fail_requests": range(1, 100)}, Recorder())
    report["second_run"] = scenario({"tool_rounds": 1}, Recorder(), runs=2)
    async_cb = AsyncRecorder()
    report["async_hooks"] = scenario({"tool_rounds": 1}, async_cb) | {"awaited": async_cb.awaited}
    if framework == "llama_index":
        report["no_stream"] = scenario({"tool_rounds": 1}, Recorder(), agent_args={"streaming": False})
        report["include_usage"] = scenario(
            {"tool_rounds": 1}, Recorder(), model_args={"stream_options": {"include_usage": True}}
        )
        report["usage_recovery"] = scenario({"tool_rounds": 1}, Recorder(), model_type=usage_keeping_llama_llm())
    if framework == "smolagents":
        report["no_keep_alive"] = scenario({"tool_rounds": 1, "keep_alive": False}, Recorder())
    return report


def usage_keeping_llama_llm() -> Any:
    """The probe's finding, now product code: `otel_cycles.llama_index_model_type()` keeps the stream's usage."""
    from otel_cycles import llama_index_model_type

    return llama_index_model_type()


def _run_child(framework: str, out: Path | None) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", framework]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    try:
        report: dict[str, Any] = json.loads(proc.stdout.rsplit(_MARKER, 1)[1].splitlines()[0])
    except (IndexError, ValueError):
        report = {"framework": framework, "error": proc.stderr[-3000:]}
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{framework}.json").write_text(json.dumps(report, indent=1, default=str))
    return report


def _cell(scn: dict[str, Any], render: Callable[[dict[str, Any]], str]) -> str:
    try:
        return render(scn)
    except (KeyError, IndexError, TypeError):
        return "?"


def summary_table(reports: list[dict[str, Any]]) -> str:
    """One markdown row per framework."""

    def llm_usage(scn: dict[str, Any]) -> str:
        spans = [s for s in scn["spans"]["ended"] if s["name"].startswith("call_llm") and s["scope"] == "any_agent"]
        got = [
            (s["attrs"].get("gen_ai.usage.input_tokens"), s["attrs"].get("gen_ai.usage.output_tokens")) for s in spans
        ]
        sent = [tuple(r["usage"]) for r in scn["served"] if r["usage"]]
        return ("exact " if got == sent else "MISMATCH ") + " ".join(f"{i}/{o}" for i, o in got)

    def run(scn: dict[str, Any], i: int = 0) -> str:
        res = scn["runs"][i]
        return f"{res['result']} ({res['requests']} req)"

    def parallel(scn: dict[str, Any]) -> str:
        sp = scn["spans"]
        open_ = [n for n in sp["never_ended"] if "execute_tool" in n and "any_agent" in n]
        return f"{run(scn)}; open={len(open_)} twice={len(sp['ended_twice'])}"

    def threads(scn: dict[str, Any]) -> str:
        return ",".join(
            sorted({e["thread"] for e in scn["events"] if e["hook"] in ("before_llm_call", "before_tool_execution")})
        )

    header = (
        "| framework | usage on call_llm (basic) | hook threads | cancel in before_llm | cancel in before_tool "
        "| 2 parallel tools | HTTP 500 | 2nd run | async LLM/tool hooks |"
    )
    rows = [header, "|" + "---|" * 9]
    for rep in reports:
        if "error" in rep:
            rows.append(f"| {rep['framework']} | probe failed | | | | | | | |")
            continue
        cells = [
            _cell(rep["basic"], llm_usage),
            _cell(rep["basic"], threads),
            _cell(rep["cancel_llm"], run),
            _cell(rep["cancel_tool"], run),
            _cell(rep["parallel"], parallel),
            _cell(rep["http500"], run),
            _cell(rep["second_run"], lambda s: run(s, 1)),
            _cell(rep["async_hooks"], lambda s: f"{run(s)} awaited={len(s['awaited'])}"),
        ]
        rows.append(f"| {rep['framework']} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Probe the frameworks named in `argv` (default all) and print the summary table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("frameworks", nargs="*", help=f"any of {', '.join(FRAMEWORKS)} (default: all)")
    parser.add_argument("--out", type=Path, help="directory for one JSON report per framework")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if unknown := set(args.frameworks) - set(FRAMEWORKS):
        parser.error(f"unknown frameworks: {sorted(unknown)}")
    if args.child:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        report = probe_one(args.child)
        sys.stdout.write("\n" + _MARKER + json.dumps(report, default=str) + "\n")
        return 0
    with ThreadPoolExecutor(max_workers=2) as pool:
        reports = list(pool.map(lambda fw: _run_child(fw, args.out), args.frameworks or FRAMEWORKS))
    print(summary_table(reports))
    for rep in reports:
        print(
            f"{rep['framework']}: {rep['wall_seconds']} s"
            + (f"  ERROR: {rep['error'][-500:]}" if "error" in rep else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
