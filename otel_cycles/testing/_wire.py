"""OpenAI chat-completions wire format for `ScriptedModel`: completion bodies, SSE stream chunks, error bodies."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from otel_cycles.testing.model_server import RequestBody, ScriptedResponse, Usage

__all__ = ["completion", "error_body", "finish_reason", "stream_chunks", "wire_tool_calls"]


def error_body(message: str, kind: str) -> dict[str, Any]:
    """Return an OpenAI-style error body (`error.message`, `error.type`)."""
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def wire_tool_calls(response: ScriptedResponse, n: int) -> list[dict[str, Any]]:
    """Return the reply's tool calls as `message.tool_calls` (arguments JSON-encoded, ids `call_<n>s<k>` if unset)."""
    calls = []
    for k, call in enumerate(response.tool_calls):
        arguments = call.arguments if isinstance(call.arguments, str) else json.dumps(dict(call.arguments))
        call_id = call.id or f"call_{n}s{k}"
        calls.append({"id": call_id, "type": "function", "function": {"name": call.name, "arguments": arguments}})
    return calls


def finish_reason(response: ScriptedResponse) -> str:
    """Return the reply's finish reason: its own, else `tool_calls` or `stop`."""
    return response.finish_reason or ("tool_calls" if response.tool_calls else "stop")


def completion(body: RequestBody, n: int, response: ScriptedResponse, usage: Usage, model: str) -> dict[str, Any]:
    """Return the `chat.completion` body answering request `n`."""
    message: dict[str, Any] = {"role": "assistant", "content": response.content, "refusal": None}
    if response.tool_calls:
        message["tool_calls"] = wire_tool_calls(response, n)
    return {
        "id": f"chatcmpl-scripted-{n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model") or model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(response), "logprobs": None}],
        "usage": usage.to_json(),
    }


def stream_chunks(
    body: RequestBody, n: int, response: ScriptedResponse, usage: Usage, model: str
) -> list[dict[str, Any]]:
    """Return the `chat.completion.chunk` events answering streamed request `n` (text split on spaces)."""
    base = {"id": f"chatcmpl-scripted-{n}", "object": "chat.completion.chunk", "created": int(time.time())}
    base["model"] = body.get("model") or model

    def chunk(delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}]}

    chunks = [chunk({"role": "assistant", "content": ""})]
    if response.content:
        words = response.content.split(" ")
        chunks += [chunk({"content": word if i == 0 else " " + word}) for i, word in enumerate(words)]
    for index, call in enumerate(wire_tool_calls(response, n)):
        head = {"index": index, "id": call["id"], "type": "function", "function": {"name": call["function"]["name"]}}
        head["function"]["arguments"] = ""
        chunks.append(chunk({"tool_calls": [head]}))
        arguments = {"index": index, "function": {"arguments": call["function"]["arguments"]}}
        chunks.append(chunk({"tool_calls": [arguments]}))
    chunks.append(chunk({}, finish_reason(response)))
    if (body.get("stream_options") or {}).get("include_usage"):
        chunks.append({**base, "choices": [], "usage": usage.to_json()})
    return chunks
