"""The guide's recipe made async-native, as a reference for runs that share an event loop: do not use it.

The same reserve before each LLM call and tool call and commit after it as `benchmarks.guide_recipe`, with coroutine
hooks (tinyagent awaits them) over raw HTTP/1.1 on asyncio streams: a round trip never blocks the loop, and nothing
runs on another thread. No retries, no journal, no validation beyond the status, no pricing, no span attributes: the
least CPU a reserve-before/commit-after design can spend per governed call in Python, so in the concurrent-run rows of
`benchmarks.bench_agents` it shows how much of otel-cycles' overhead is the protocol and how much is otel-cycles.
A refused or failed request raises, so a benchmark run with it cannot silently skip the authority.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any
from urllib.parse import urlsplit

from any_agent import AgentCancel
from any_agent.callbacks import Callback, Context

_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class AsyncGuideBudgetExceeded(AgentCancel):
    pass


class AsyncGuideBudgetCallback(Callback):
    def __init__(self, base_url: str, api_key: str, tenant: str, agent: str | None = None) -> None:
        url = urlsplit(base_url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.api_key = api_key
        self.subject = {"tenant": tenant} | ({"agent": agent} if agent else {})
        self._idle: dict[asyncio.AbstractEventLoop, list[_Connection]] = {}
        """Keep-alive connections per event loop, one per request in flight at most."""

    async def _post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        idle = self._idle.setdefault(asyncio.get_running_loop(), [])
        reader, writer = idle.pop() if idle else await asyncio.open_connection(self.host, self.port)
        data = json.dumps(body).encode()
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"X-Cycles-API-Key: {self.api_key}\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        status = int((await reader.readline()).split()[1])
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        answer = json.loads(await reader.readexactly(length)) if length else {}
        idle.append((reader, writer))
        return status, answer

    async def _reserve(self, context: Context, kind: str, name: str, estimate: int) -> Context:
        key = str(uuid.uuid4())
        status, answer = await self._post(
            "/v1/reservations",
            {
                "idempotency_key": key,
                "subject": self.subject,
                "action": {"kind": kind, "name": name},
                "estimate": {"unit": "USD_MICROCENTS", "amount": estimate},
                "ttl_ms": 60_000,
            },
        )
        if (status == 409 and answer.get("error") == "BUDGET_EXCEEDED") or answer.get("decision") == "DENY":
            raise AsyncGuideBudgetExceeded(str(answer))
        if status != 200:
            raise RuntimeError(f"reservation failed: {status} {answer}")
        context.shared["_async_guide_current"] = (answer["reservation_id"], key)
        return context

    async def _commit(self, context: Context, input_tokens: int = 0, output_tokens: int = 0) -> Context:
        current = context.shared.pop("_async_guide_current", None)
        if current is None:
            return context
        reservation_id, key = current
        status, answer = await self._post(
            f"/v1/reservations/{reservation_id}/commit",
            {
                "idempotency_key": f"commit-{key}",
                "actual": {"unit": "USD_MICROCENTS", "amount": input_tokens * 250 + output_tokens * 1_000},
                "metrics": {"tokens_input": input_tokens, "tokens_output": output_tokens},
            },
        )
        if status != 200:
            raise RuntimeError(f"commit failed: {status} {answer}")
        return context

    async def before_llm_call(self, context: Context, *args: Any, **kwargs: Any) -> Context:  # type: ignore[override]
        return await self._reserve(context, "llm.completion", "gpt-4o", 2_000_000)

    async def after_llm_call(self, context: Context, *args: Any, **kwargs: Any) -> Context:  # type: ignore[override]
        attrs = getattr(context.current_span, "attributes", None) or {}
        return await self._commit(
            context, attrs.get("gen_ai.usage.input_tokens", 0), attrs.get("gen_ai.usage.output_tokens", 0)
        )

    async def before_tool_execution(self, context: Context, *args: Any, **kwargs: Any) -> Context:  # type: ignore[override]
        attrs = getattr(context.current_span, "attributes", None) or {}
        return await self._reserve(context, "tool.execution", attrs.get("gen_ai.tool.name", "unknown"), 100_000)

    async def after_tool_execution(self, context: Context, *args: Any, **kwargs: Any) -> Context:  # type: ignore[override]
        return await self._commit(context)
