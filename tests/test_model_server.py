"""ScriptedModel over real loopback HTTP: the OpenAI client, raw httpx, and one real AnyAgent tinyagent run."""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from typing import Any

import httpx
import openai
import pytest

from otel_cycles.testing import ScriptedModel, ScriptedResponse, ToolCall, Usage

SEARCH = {
    "type": "function",
    "function": {
        "name": "search_web",
        "description": "Search the web.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    },
}
FETCH = {
    "type": "function",
    "function": {
        "name": "fetch_page",
        "parameters": {
            "type": "object",
            "properties": {"url": {"type": "string"}, "max_chars": {"type": "integer"}},
            "required": ["url", "max_chars"],
        },
    },
}
FINAL = {
    "type": "function",
    "function": {
        "name": "final_answer",
        "parameters": {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]},
    },
}


# One shared pool: building an OpenAI client's default httpx client (TLS context) costs ~0.1 s each time.
_HTTP = httpx.Client(timeout=10)


def client(model: ScriptedModel, retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=model.base_url, api_key="sk-fake", max_retries=retries, http_client=_HTTP)


def ask(model: ScriptedModel, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
    return client(model).chat.completions.create(model="gpt-4o", messages=messages, **kwargs)  # type: ignore[arg-type]


def with_tool_results(messages: list[dict[str, Any]], completion: Any) -> list[dict[str, Any]]:
    """The conversation a framework would send next: the assistant tool calls plus one `tool` result each."""
    message = completion.choices[0].message
    results = [{"role": "tool", "tool_call_id": c.id, "content": f"result of {c.id}"} for c in message.tool_calls]
    return [*messages, message.model_dump(exclude_none=True), *results]


def test_tool_rounds_then_text_answer() -> None:
    with ScriptedModel(tool_rounds=2, answer="All done.") as model:
        messages: list[dict[str, Any]] = [{"role": "user", "content": "research budgets"}]
        first = ask(model, messages, tools=[SEARCH, FETCH])
        assert first.choices[0].finish_reason == "tool_calls"
        call = first.choices[0].message.tool_calls[0]
        assert call.id.startswith("call_") and call.function.name == "search_web"
        assert json.loads(call.function.arguments) == {"query": "search_web 1"}

        messages = with_tool_results(messages, first)
        second = ask(model, messages, tools=[SEARCH, FETCH])
        call = second.choices[0].message.tool_calls[0]
        assert call.function.name == "fetch_page"  # the default flow walks through the offered tools
        assert json.loads(call.function.arguments) == {"url": "fetch_page 2", "max_chars": 1}

        third = ask(model, with_tool_results(messages, second), tools=[SEARCH, FETCH])
        assert third.choices[0].finish_reason == "stop"
        assert third.choices[0].message.content == "All done."
        assert third.choices[0].message.tool_calls is None


def test_final_answer_tool_is_called_when_offered() -> None:
    with ScriptedModel(tool_rounds=0, answer="42") as model:
        reply = ask(model, [{"role": "user", "content": "q"}], tools=[SEARCH, FINAL])
    call = reply.choices[0].message.tool_calls[0]
    assert (call.function.name, json.loads(call.function.arguments)) == ("final_answer", {"answer": "42"})


def test_tool_result_fed_back_as_user_text_counts_as_seen() -> None:
    """smolagents replays the call as assistant text and the result as user text, not as `role: tool`."""
    model = ScriptedModel(tool_rounds=1)
    first = model.reply_for({"messages": [{"role": "user", "content": "q"}], "tools": [SEARCH, FINAL]}, 1)
    call_id = first.tool_calls[0].id
    history = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "text", "text": f"Calling tools:\n[{{'id': '{call_id}'}}]"}]},
        {"role": "user", "content": "Observation:\n3 pages"},
    ]
    assert model.reply_for({"messages": history, "tools": [SEARCH, FINAL]}, 2).tool_calls[0].name == "final_answer"
    # The call without its result is still pending.
    assert model.reply_for({"messages": history[:2], "tools": [SEARCH, FINAL]}, 2).tool_calls[0].name == "search_web"


def test_configured_tools_and_arguments() -> None:
    with ScriptedModel(tools=["fetch_page", "missing"], tool_args={"fetch_page": {"url": "https://x"}}) as model:
        reply = ask(model, [{"role": "user", "content": "q"}], tools=[SEARCH, FETCH])
    call = reply.choices[0].message.tool_calls[0]
    assert (call.function.name, json.loads(call.function.arguments)) == ("fetch_page", {"url": "https://x"})


def test_usage_is_deterministic_per_request_number() -> None:
    with ScriptedModel() as model:
        usages = [ask(model, [{"role": "user", "content": "hi"}]).usage for _ in range(3)]
    assert [(u.prompt_tokens, u.completion_tokens, u.total_tokens) for u in usages] == [
        (101, 21, 122),
        (102, 22, 124),
        (103, 23, 126),
    ]
    assert usages[0].prompt_tokens_details is None and usages[0].completion_tokens_details is None


def test_usage_details_and_fixed_usage() -> None:
    fixed = Usage(prompt_tokens=1000, completion_tokens=50, cached_tokens=400, reasoning_tokens=30)
    with ScriptedModel(usage=fixed) as model:
        usage = ask(model, [{"role": "user", "content": "hi"}]).usage
        assert model.requests[0].usage == fixed
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (1000, 50, 1050)
    assert usage.prompt_tokens_details.cached_tokens == 400
    assert usage.completion_tokens_details.reasoning_tokens == 30


def test_failure_by_request_number_then_recovery() -> None:
    with ScriptedModel(fail_requests=[1]) as model:
        with pytest.raises(openai.InternalServerError):
            ask(model, [{"role": "user", "content": "hi"}])
        usage = ask(model, [{"role": "user", "content": "hi"}]).usage
        assert usage is not None and usage.prompt_tokens == 102
        assert [(r.n, r.status, r.usage) for r in model.requests][0] == (1, 500, None)


def test_failure_marker_is_retried_twice_by_the_openai_client() -> None:
    with ScriptedModel() as model:
        with pytest.raises(openai.InternalServerError):
            client(model, retries=2).chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "please FAIL500"}]
            )
        assert model.request_count == 3
        assert {r.status for r in model.requests} == {500}


def test_parallel_tool_calls_in_one_message() -> None:
    with ScriptedModel(parallel=2) as model:
        reply = ask(model, [{"role": "user", "content": "q"}], tools=[SEARCH, FETCH])
    calls = reply.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["search_web", "fetch_page"]
    assert len({c.id for c in calls}) == 2


def test_parallel_marker_and_one_round_for_parallel_results() -> None:
    with ScriptedModel(tool_rounds=1) as model:
        messages: list[dict[str, Any]] = [{"role": "user", "content": "PARALLEL please"}]
        first = ask(model, messages, tools=[SEARCH])
        assert [c.function.name for c in first.choices[0].message.tool_calls] == ["search_web", "search_web"]
        # Two results of the same round complete one round, not two.
        assert ask(model, with_tool_results(messages, first), tools=[SEARCH]).choices[0].message.content


def test_streaming_with_usage_chunk() -> None:
    with ScriptedModel(tool_rounds=0, answer="streamed answer here") as model:
        stream = client(model).chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "streamed answer here"
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        usage = chunks[-1].usage
        assert chunks[-1].choices == [] and usage is not None and usage.prompt_tokens == 101
        assert model.requests[0].body["stream"] is True

        # Without include_usage there is no usage chunk, as with the real API.
        plain = list(ask(model, [{"role": "user", "content": "hi"}], stream=True))
        assert all(c.choices and c.usage is None for c in plain)


def test_streaming_tool_calls() -> None:
    with ScriptedModel(parallel=2) as model:
        chunks = list(ask(model, [{"role": "user", "content": "q"}], tools=[SEARCH, FETCH], stream=True))
    deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    names = [d.function.name for d in deltas if d.function and d.function.name]
    arguments = "".join(d.function.arguments or "" for d in deltas if d.index == 1)
    assert names == ["search_web", "fetch_page"]
    assert json.loads(arguments) == {"url": "fetch_page 1", "max_chars": 1}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_explicit_script_sequence_then_default_flow() -> None:
    script = [
        ScriptedResponse(tool_calls=[ToolCall("search_web", {"query": "x"}, id="call_custom")]),
        ScriptedResponse(content="scripted", usage=Usage(7, 3)),
    ]
    with ScriptedModel(script=script, tool_rounds=0, answer="default") as model:
        tools = [SEARCH]
        first = ask(model, [{"role": "user", "content": "q"}], tools=tools)
        assert first.choices[0].message.tool_calls[0].id == "call_custom"
        second = ask(model, [{"role": "user", "content": "q"}], tools=tools)
        assert (second.choices[0].message.content, second.usage.total_tokens) == ("scripted", 10)
        assert ask(model, [{"role": "user", "content": "q"}]).choices[0].message.content == "default"


def test_explicit_script_callable() -> None:
    def script(body: dict[str, Any], n: int) -> ScriptedResponse | None:
        if n == 1:
            return ScriptedResponse(status=503)
        return None if body["messages"][-1]["content"] == "default" else ScriptedResponse(content=f"#{n}")

    with ScriptedModel(script=script, answer="fallback") as model:
        with pytest.raises(openai.InternalServerError):
            ask(model, [{"role": "user", "content": "x"}])
        assert ask(model, [{"role": "user", "content": "x"}]).choices[0].message.content == "#2"
        assert ask(model, [{"role": "user", "content": "default"}]).choices[0].message.content == "fallback"
        assert [r.status for r in model.requests] == [503, 200, 200]


def test_requests_are_recorded() -> None:
    before = time.time()
    with ScriptedModel() as model:
        ask(model, [{"role": "user", "content": "hi"}], tools=[SEARCH], max_tokens=64)
        ask(model, [{"role": "user", "content": "again"}])
        records = model.requests
        assert model.request_count == 2
        model.reset()
        assert model.request_count == 0 and model.requests == []
    assert [r.n for r in records] == [1, 2]
    assert records[0].body["max_tokens"] == 64 and records[0].tool_names == ["search_web"]
    assert records[1].messages == [{"role": "user", "content": "again"}]
    assert records[0].usage == Usage(101, 21) and records[0].status == 200
    assert records[0].response.tool_calls[0].name == "search_web"
    assert before <= records[0].received_at <= records[1].received_at <= time.time()


def test_models_endpoint_unknown_paths_and_lifecycle() -> None:
    model = ScriptedModel(model="scripted-1")
    with pytest.raises(RuntimeError):
        _ = model.base_url
    with model:
        assert model.base_url.startswith("http://127.0.0.1:") and model.base_url.endswith("/v1")
        assert [m.id for m in client(model).models.list()] == ["scripted-1"]
        assert httpx.post(model.base_url + "/responses", json={}).status_code == 404
        assert httpx.post(model.base_url + "/chat/completions", content=b"not json").status_code == 400
        with pytest.raises(RuntimeError):
            model.start()
    model.stop()  # idempotent
    assert model.request_count == 0


def test_delay_and_connection_close() -> None:
    with ScriptedModel(delay=0.05, keep_alive=False) as model:
        started = time.monotonic()
        response = httpx.post(model.base_url + "/chat/completions", json={"messages": []})
        assert time.monotonic() - started >= 0.05
        assert response.headers["connection"] == "close"
        assert response.json()["usage"]["prompt_tokens"] == 101


def search_web(query: str) -> str:
    """Search the web.

    Args:
        query: What to search for.

    Returns:
        The search results.
    """
    return f"3 pages about {query}"


def fetch_page(url: str) -> str:
    """Fetch a web page.

    Args:
        url: The page address.

    Returns:
        The page text.
    """
    return f"text of {url}"


def test_real_tinyagent_run_reports_the_served_usage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(os.environ, "OPENAI_API_KEY", "sk-fake")
    from any_agent import AgentConfig, AnyAgent

    with ScriptedModel(tool_rounds=2, answer="Budgets are reserved, then committed.") as model:
        config = AgentConfig(
            model_id="openai:gpt-4o",
            api_base=model.base_url,
            api_key="sk-fake",
            tools=[search_web, fetch_page],
            callbacks=[],
        )
        trace = AnyAgent.create("tinyagent", config).run("Research budget governance")
        served = model.requests
    assert trace.final_output == "Budgets are reserved, then committed."
    assert [r.response.tool_calls[0].name for r in served[:2]] == ["search_web", "fetch_page"]
    assert (trace.tokens.input_tokens, trace.tokens.output_tokens) == (101 + 102 + 103, 21 + 22 + 23)
    tools = [s.attributes["gen_ai.tool.name"] for s in trace.spans if s.name.startswith("execute_tool")]
    assert tools == ["search_web", "fetch_page"]


def test_a_client_dropping_its_connection_is_not_reported(capfd: pytest.CaptureFixture[str]) -> None:
    """A cancelled run resets its connection mid-request; the server must not print a traceback for it."""
    with ScriptedModel() as model:
        url = httpx.URL(model.base_url)
        sock = socket.create_connection((url.host, url.port or 80))
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
        sock.close()
        time.sleep(0.3)
        assert ask(model, [{"role": "user", "content": "still serving?"}]).choices
    assert "Traceback" not in capfd.readouterr().err
