"""A scripted, OpenAI-compatible chat-completions server on loopback, for tests, examples and the offline demo.

`ScriptedModel` answers `POST /v1/chat/completions` (and `GET /v1/models`) with deterministic replies, so an AnyAgent
agent of any framework runs offline (`AgentConfig(model_id="openai:gpt-4o", api_base=model.base_url, ...)`):

* **Default flow ("research")**: while fewer than `tool_rounds` tool rounds have a result in the conversation, reply
  with `tool_calls` for the offered tools (`parallel` calls per round); then call `final_answer` if that tool is
  offered, else answer with text. A round counts as done once a tool call of it is followed by a result message
  (`role: tool`, or user text as smolagents sends), so the flow is stateless and one server serves many runs.
* **Usage** on every successful reply: `Usage(100 + n, 20 + n)` for the n-th request (1-based, counting failures),
  or whatever `usage=` says, so tests can assert exact token counts.
* **Failures**: HTTP 500 for the request numbers in `fail_requests` or when any message contains `fail_marker`.
  The OpenAI client retries 5xx twice, so a marker failure shows up as 3 requests.
* **Streaming**: `stream: true` gets SSE chunks, plus a `choices: []` usage chunk when
  `stream_options.include_usage` is set.
* **Explicit scripts**: `script=[ScriptedResponse(...), ...]` (request n takes item n-1, then the default flow) or a
  callable `(request_body, n) -> ScriptedResponse | None` (None means the default flow).

Every request is recorded (`requests`, `request_count`). Threading: the server answers on its own threads; the
recorded list and counter are guarded by one lock, and `requests` returns a snapshot.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from otel_cycles.testing import _wire as wire

__all__ = [
    "DEFAULT_FAIL_MARKER",
    "DEFAULT_PARALLEL_MARKER",
    "RequestBody",
    "ScriptFn",
    "ScriptedModel",
    "ScriptedResponse",
    "ServedRequest",
    "ToolCall",
    "Usage",
    "default_usage",
]

DEFAULT_FAIL_MARKER = "FAIL500"
"""Any message containing this text makes the server answer HTTP 500 (unless `fail_marker=None`)."""

DEFAULT_PARALLEL_MARKER = "PARALLEL"
"""Any message containing this text makes each tool round issue at least 2 tool calls in one message."""

RequestBody = dict[str, Any]
"""A decoded chat-completions request body."""

_FINAL_ANSWER = "final_answer"
# Ids this server issues: `call_<request>r<round>k<index>`; the round is read back from the conversation history.
_OWN_CALL_ID = re.compile(r"call_\d+r(\d+)k\d+")


@dataclass(frozen=True)
class Usage:
    """Token usage reported in a reply's `usage` object."""

    prompt_tokens: int
    """`usage.prompt_tokens` (input tokens, cached ones included)."""
    completion_tokens: int
    """`usage.completion_tokens` (output tokens, reasoning ones included)."""
    cached_tokens: int | None = None
    """If set, sent as `usage.prompt_tokens_details.cached_tokens`."""
    reasoning_tokens: int | None = None
    """If set, sent as `usage.completion_tokens_details.reasoning_tokens`."""

    @property
    def total_tokens(self) -> int:
        """`prompt_tokens + completion_tokens`."""
        return self.prompt_tokens + self.completion_tokens

    def to_json(self) -> dict[str, Any]:
        """Return the OpenAI wire form of this usage."""
        data: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.cached_tokens is not None:
            data["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        if self.reasoning_tokens is not None:
            data["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        return data


def default_usage(n: int) -> Usage:
    """Return the default usage of the n-th request (1-based): `Usage(100 + n, 20 + n)`."""
    return Usage(prompt_tokens=100 + n, completion_tokens=20 + n)


@dataclass(frozen=True)
class ToolCall:
    """One tool call in a scripted reply."""

    name: str
    """The function name; it should be one of the request's `tools`."""
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    """The arguments, as a mapping (JSON-encoded on the wire) or an already encoded JSON string."""
    id: str | None = None
    """The call id; None lets the server issue `call_<request>s<index>`."""


@dataclass(frozen=True)
class ScriptedResponse:
    """One scripted reply: text, tool calls, or an HTTP error."""

    content: str | None = None
    """The assistant text (None with tool calls)."""
    tool_calls: Sequence[ToolCall] = ()
    """Tool calls; if non-empty the finish reason is `tool_calls`."""
    usage: Usage | None = None
    """Overrides the server's usage for this reply."""
    status: int = 200
    """HTTP status; anything but 200 sends an OpenAI-style error body instead of a completion."""
    delay: float | None = None
    """Seconds to wait before answering; None uses the server's `delay`."""
    finish_reason: str | None = None
    """Overrides the finish reason (default `tool_calls` or `stop`)."""


ScriptFn = Callable[[RequestBody, int], "ScriptedResponse | None"]
"""A script callable: `(request_body, n) -> reply`, n 1-based; None falls back to the default flow."""


@dataclass(frozen=True)
class ServedRequest:
    """What the server received for one chat-completions request, and what it answered."""

    n: int
    """1-based request number (failed requests included)."""
    body: RequestBody
    """The decoded request body."""
    status: int
    """The HTTP status answered."""
    usage: Usage | None
    """The usage sent (None for error replies)."""
    response: ScriptedResponse
    """The reply that was served."""
    received_at: float
    """`time.time()` when the request arrived."""

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The request's `messages`."""
        messages: list[dict[str, Any]] = self.body.get("messages", [])
        return messages

    @property
    def max_output_tokens(self) -> int | None:
        """The request's output-token bound: `max_completion_tokens`, else `max_tokens`; None if it sets neither."""
        for key in ("max_completion_tokens", "max_tokens"):
            value = self.body.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return None

    @property
    def tool_names(self) -> list[str]:
        """Names of the tools offered in the request."""
        return _offered_tools(self.body)


class ScriptedModel:
    """A scripted OpenAI-compatible model server on `127.0.0.1`; use as a context manager or `start()`/`stop()`.

    Example:
        ```python
        with ScriptedModel(tool_rounds=2) as model:
            config = AgentConfig(model_id="openai:gpt-4o", api_base=model.base_url, api_key="sk-fake", tools=[search])
            trace = AnyAgent.create("tinyagent", config).run("Research budgets")
        assert model.request_count == 3
        ```
    """

    def __init__(
        self,
        *,
        tool_rounds: int = 2,
        tools: Sequence[str] | None = None,
        tool_args: Mapping[str, Mapping[str, Any]] | None = None,
        answer: str = "Budget governance reserves before each call and commits the actual cost.",
        parallel: int = 1,
        usage: Usage | Callable[[int], Usage] = default_usage,
        fail_requests: Sequence[int] = (),
        fail_marker: str | None = DEFAULT_FAIL_MARKER,
        parallel_marker: str | None = DEFAULT_PARALLEL_MARKER,
        delay: float = 0.0,
        script: Sequence[ScriptedResponse] | ScriptFn | None = None,
        model: str = "gpt-4o",
        port: int = 0,
        keep_alive: bool = True,
    ) -> None:
        """Configure the server (it does not listen until `start()` or `with`).

        Args:
            tool_rounds: Tool rounds before the final answer; 0 answers at once.
            tools: Tool names to call, in order, cycling over rounds and parallel calls; names the request does not
                offer are skipped. Default: every offered tool except `final_answer`.
            tool_args: Arguments per tool name. Default: built from the tool's JSON schema (strings get
                `"<tool> <round>"`, numbers 1, booleans true, arrays [], objects {}).
            answer: The final answer text (also the `final_answer` tool's argument).
            parallel: Tool calls per tool round (2+ makes parallel tool calls in one message).
            usage: A fixed `Usage`, or a function of the 1-based request number.
            fail_requests: 1-based request numbers answered with HTTP 500.
            fail_marker: Text that makes any request whose messages contain it fail with HTTP 500; None disables.
            parallel_marker: Text in the messages that raises `parallel` to at least 2; None disables.
            delay: Seconds to wait before every reply.
            script: Explicit replies: a sequence (request n gets item n-1 while there is one) or a callable
                `(request_body, n)`; where neither gives a reply, the default flow answers.
            model: Model id reported by `GET /v1/models` and in replies when the request names none.
            port: TCP port; 0 picks a free one.
            keep_alive: Keep HTTP/1.1 connections open between requests, as real APIs do. With False every reply
                closes its connection; that hides client bugs that reuse a pooled connection from a dead event loop
                (see docs/frameworks.md, smolagents), which then retry and send a request twice.
        """
        if tool_rounds < 0 or parallel < 1 or delay < 0:
            raise ValueError("tool_rounds and delay must be >= 0 and parallel >= 1")
        self.tool_rounds = tool_rounds
        self.tools = list(tools) if tools is not None else None
        self.tool_args = dict(tool_args or {})
        self.answer = answer
        self.parallel = parallel
        self.usage = usage
        self.fail_requests = frozenset(fail_requests)
        self.fail_marker = fail_marker
        self.parallel_marker = parallel_marker
        self.delay = delay
        self.script = script
        self.model = model
        self._port = port
        self.keep_alive = keep_alive
        self._lock = threading.Lock()  # guards _count and _records
        self._count = 0
        self._records: list[ServedRequest] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def start(self) -> ScriptedModel:
        """Bind and serve on a background daemon thread; returns self. Starting twice is an error."""
        if self._server is not None:
            raise RuntimeError("ScriptedModel is already running")
        server = _Server(("127.0.0.1", self._port), _Handler)
        server.model = self
        self._server = server
        # A short poll interval keeps stop() fast: shutdown() waits for the serve loop's next poll.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="scripted-model", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; idempotent. Recorded requests are kept."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ScriptedModel:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>/v1`, for `AgentConfig(api_base=...)` or `OpenAI(base_url=...)`."""
        if self._server is None:
            raise RuntimeError("ScriptedModel is not running; call start() or use it as a context manager")
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    # -- what was served -------------------------------------------------------------------------------------------

    @property
    def requests(self) -> list[ServedRequest]:
        """A snapshot of the chat-completions requests served so far, in arrival order."""
        with self._lock:
            return list(self._records)

    @property
    def request_count(self) -> int:
        """How many chat-completions requests arrived (failed ones included)."""
        with self._lock:
            return self._count

    def reset(self) -> None:
        """Forget recorded requests and restart request numbering at 1."""
        with self._lock:
            self._count = 0
            self._records.clear()

    # -- deciding a reply ------------------------------------------------------------------------------------------

    def _next_number(self) -> int:
        with self._lock:
            self._count += 1
            return self._count

    def _record(self, record: ServedRequest) -> None:
        with self._lock:
            self._records.append(record)

    def reply_for(self, body: RequestBody, n: int) -> ScriptedResponse:
        """Return the reply for request number `n` with `body` (what the HTTP handler serves); no side effects."""
        scripted = self._scripted(body, n)
        if scripted is not None:
            return scripted
        text = json.dumps(body.get("messages", []))
        if n in self.fail_requests or (self.fail_marker is not None and self.fail_marker in text):
            return ScriptedResponse(status=500)
        offered = _offered_tools(body)
        done = _completed_tool_rounds(body.get("messages", []))
        callable_tools = [name for name in (self.tools or offered) if name in offered and name != _FINAL_ANSWER]
        if callable_tools and done < self.tool_rounds:
            count = max(self.parallel, 2) if self.parallel_marker and self.parallel_marker in text else self.parallel
            calls = []
            for k in range(count):
                name = callable_tools[(done * count + k) % len(callable_tools)]
                args = self.tool_args.get(name)
                if args is None:
                    args = _arguments_from_schema(_tool_schema(body, name), f"{name} {done + 1}")
                calls.append(ToolCall(name, args, f"call_{n}r{done}k{k}"))
            return ScriptedResponse(tool_calls=calls)
        if _FINAL_ANSWER in offered:
            args = self.tool_args.get(_FINAL_ANSWER) or _arguments_from_schema(
                _tool_schema(body, _FINAL_ANSWER), self.answer
            )
            return ScriptedResponse(tool_calls=[ToolCall(_FINAL_ANSWER, args, f"call_{n}r{done}k0")])
        return ScriptedResponse(content=self.answer)

    def _scripted(self, body: RequestBody, n: int) -> ScriptedResponse | None:
        if self.script is None:
            return None
        if callable(self.script):
            return self.script(body, n)
        return self.script[n - 1] if n <= len(self.script) else None

    def usage_for(self, n: int, response: ScriptedResponse) -> Usage:
        """Return the usage reported for request `n`: the reply's own, else the server's."""
        if response.usage is not None:
            return response.usage
        return self.usage if isinstance(self.usage, Usage) else self.usage(n)


# -- conversation inspection ---------------------------------------------------------------------------------------


def _offered_tools(body: RequestBody) -> list[str]:
    names = []
    for tool in body.get("tools") or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            names.append(function["name"])
    return names


def _tool_schema(body: RequestBody, name: str) -> dict[str, Any]:
    for tool in body.get("tools") or []:
        function = tool.get("function") or {}
        if function.get("name") == name:
            parameters: dict[str, Any] = function.get("parameters") or {}
            return parameters
    return {}


def _arguments_from_schema(schema: Mapping[str, Any], text: str) -> dict[str, Any]:
    """Build plausible arguments: every required property (or, if none is required, the first one)."""
    properties: dict[str, Any] = schema.get("properties") or {}
    names = list(schema.get("required") or list(properties)[:1])
    defaults: dict[str, Any] = {"integer": 1, "number": 1, "boolean": True, "array": [], "object": {}}
    args: dict[str, Any] = {}
    for name in names:
        kind = (properties.get(name) or {}).get("type", "string")
        kind = next((k for k in kind if k != "null"), "string") if isinstance(kind, list) else kind
        args[name] = defaults.get(kind, text)
    return args


def _message_text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _completed_tool_rounds(messages: Sequence[Mapping[str, Any]]) -> int:
    """Count tool rounds whose calls are followed by a result (a `tool` message, or user text as smolagents sends).

    Rounds of this server's own ids are read from the id (so replayed parallel calls count once); any other
    assistant turn with tool calls counts as a round of its own.
    """
    done: set[object] = set()
    waiting: set[object] = set()
    for index, message in enumerate(messages):
        role = message.get("role")
        if role == "assistant":
            ids = [str(call.get("id", "")) for call in message.get("tool_calls") or [] if isinstance(call, dict)]
            ids_text = " ".join(ids) + " " + _message_text(message)
            own = {int(match) for match in _OWN_CALL_ID.findall(ids_text)}
            if own:
                waiting |= own
            elif ids:
                waiting.add(("turn", index))
        elif role in ("tool", "user", "function") and waiting:
            done |= waiting
            waiting = set()
    return len(done)


# -- HTTP ----------------------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    model: ScriptedModel

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet when a client drops its connection (a cancelled run does); report anything else."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as OpenAI clients expect
    timeout = 30  # seconds an idle keep-alive connection may hold a handler thread
    disable_nagle_algorithm = True  # headers and body go out in two writes; Nagle + delayed ACK would add ~40 ms
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    def do_GET(self) -> None:
        """Serve `GET /v1/models`."""
        if self.path.rstrip("/") != "/v1/models":
            self._send_json(404, wire.error_body("not found", "not_found"))
            return
        model = self.server.model.model
        self._send_json(200, {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "scripted"}]})

    def do_POST(self) -> None:
        """Serve `POST /v1/chat/completions`."""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send_json(404, wire.error_body("not found", "not_found"))
            return
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("body is not an object")
        except ValueError as exc:
            self._send_json(400, wire.error_body(f"invalid JSON body: {exc}", "invalid_request_error"))
            return
        model = self.server.model
        received_at = time.time()
        n = model._next_number()
        response = model.reply_for(body, n)
        delay = model.delay if response.delay is None else response.delay
        if delay:
            time.sleep(delay)
        usage = model.usage_for(n, response) if response.status == 200 else None
        model._record(ServedRequest(n, body, response.status, usage, response, received_at))
        if usage is None:
            self._send_json(response.status, wire.error_body(f"scripted failure of request {n}", "server_error"))
        elif body.get("stream"):
            self._send_stream(wire.stream_chunks(body, n, response, usage, model.model))
        else:
            self._send_json(200, wire.completion(body, n, response, usage, model.model))

    def _send_connection_header(self) -> None:
        if not self.server.model.keep_alive:
            self.send_header("Connection", "close")
            self.close_connection = True

    def _send_json(self, status: int, payload: Mapping[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self._send_connection_header()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_stream(self, chunks: list[dict[str, Any]]) -> None:
        self.send_response(200)
        self._send_connection_header()
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in [f"data: {json.dumps(chunk)}\n\n" for chunk in chunks] + ["data: [DONE]\n\n"]:
            data = event.encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
