"""Malformed requests get a spec-shaped 4xx (never a 500, never a partial write)."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest
from runcycles.models import ErrorResponse

from otel_cycles.authority import LocalAuthority

from .conftest import UNIT, commit_body, reserve_body


@pytest.fixture(autouse=True)
def budget(authority: LocalAuthority) -> None:
    authority.create_budget("tenant:acme", 1_000_000)


def assert_error(resp: httpx.Response, status: int, code: str = "INVALID_REQUEST") -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    ErrorResponse.model_validate(body, strict=True)
    assert body["error"] == code and body["message"] and body["request_id"] == resp.headers["x-request-id"]
    assert resp.headers["x-cycles-trace-id"]


def _without(body: dict[str, Any], field: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != field}


BAD_RESERVES: list[Any] = [
    _without(reserve_body(), "subject"),
    _without(reserve_body(), "estimate"),
    _without(reserve_body(), "idempotency_key"),
    reserve_body(idempotency_key=""),
    reserve_body(idempotency_key="x" * 257),
    reserve_body(subject={"dimensions": {"team": "a"}}),  # dimensions only
    reserve_body(subject={}),
    reserve_body(subject={"tenant": "acme", "agent": "a/b"}),  # delimiter in a segment
    reserve_body(subject={"tenant": "acme", "agent": 5}),
    reserve_body(subject={"tenant": "acme", "colour": "red"}),
    reserve_body(subject={"tenant": "acme", "dimensions": {str(i): "v" for i in range(17)}}),
    reserve_body(subject="acme"),
    reserve_body(estimate={"unit": UNIT, "amount": -1}),
    reserve_body(estimate={"unit": UNIT, "amount": "10"}),
    reserve_body(estimate={"unit": UNIT, "amount": 1.5}),
    reserve_body(estimate={"unit": UNIT, "amount": True}),
    reserve_body(estimate={"unit": "EUR", "amount": 1}),
    reserve_body(estimate={"unit": UNIT, "amount": 1, "extra": 1}),
    reserve_body(ttl_ms=999),
    reserve_body(ttl_ms=86_400_001),
    reserve_body(grace_period_ms=60_001),
    reserve_body(overage_policy="YOLO"),
    reserve_body(dry_run="yes"),
    reserve_body(metadata=[1]),
    reserve_body(unknown_field=1),
    {**reserve_body(), "action": {"kind": "k"}},
    {**reserve_body(), "action": {"kind": "k" * 65, "name": "n"}},
    {**reserve_body(), "action": {"kind": "k", "name": "n", "tags": ["t"] * 11}},
    [1, 2, 3],
    "string",
    None,
]


@pytest.mark.parametrize("body", BAD_RESERVES)
def test_bad_reserve_bodies(raw: httpx.Client, authority: LocalAuthority, body: Any) -> None:
    before = authority.balances("acme")
    assert_error(raw.post("/v1/reservations", json=body), 400)
    assert authority.balances("acme") == before and authority.reservations("acme") == []


@pytest.mark.parametrize(
    "content",
    [b"{", b"", b"\xff\xfe", b'{"idempotency_key": "a",}', b"nan", b"[]"],
)
def test_malformed_json(raw: httpx.Client, content: bytes) -> None:
    resp = raw.post("/v1/reservations", content=content, headers={"Content-Type": "application/json"})
    assert_error(resp, 400)


def test_bad_commit_release_extend_bodies(raw: httpx.Client) -> None:
    rid = raw.post("/v1/reservations", json=reserve_body(100)).json()["reservation_id"]
    for path, body in [
        ("commit", {"idempotency_key": "k"}),
        ("commit", commit_body(-5)),
        ("commit", {**commit_body(5), "metrics": {"tokens_input": -1}}),
        ("commit", {**commit_body(5), "metrics": {"bogus": 1}}),
        ("release", {"reason": "x"}),
        ("release", {"idempotency_key": "k", "reason": "r" * 257}),
        ("extend", {"idempotency_key": "k"}),
        ("extend", {"idempotency_key": "k", "extend_by_ms": 0}),
        ("extend", {"idempotency_key": "k", "extend_by_ms": "5"}),
    ]:
        assert_error(raw.post(f"/v1/reservations/{rid}/{path}", json=body), 400)
    assert_error(raw.post(f"/v1/reservations/{rid}/commit", json=commit_body(5, unit="TOKENS")), 400, "UNIT_MISMATCH")
    assert raw.get(f"/v1/reservations/{rid}").json()["status"] == "ACTIVE"


def test_unknown_ids_paths_and_methods(raw: httpx.Client) -> None:
    assert_error(raw.get("/v1/reservations/does-not-exist"), 404, "NOT_FOUND")
    assert_error(raw.post("/v1/reservations/does-not-exist/commit", json=commit_body(1)), 404, "NOT_FOUND")
    assert_error(raw.post("/v1/reservations/does-not-exist/release", json={"idempotency_key": "k"}), 404, "NOT_FOUND")
    assert_error(raw.get("/v1/reservations/" + "x" * 129), 400)
    assert_error(raw.get("/v2/anything"), 404, "NOT_FOUND")
    assert_error(raw.get("/"), 404, "NOT_FOUND")
    assert_error(raw.post("/v1/reservations/x/explode", json={}), 404, "NOT_FOUND")
    resp = raw.delete("/v1/reservations")
    assert_error(resp, 405)
    assert set(resp.headers["allow"].split(", ")) == {"GET", "POST"}
    assert_error(raw.get("/v1/decide"), 405)


@pytest.mark.parametrize(
    "params",
    [{"limit": "0"}, {"limit": "201"}, {"limit": "ten"}, {"sort_by": "colour"}, {"sort_dir": "up"},
     {"status": "DONE"}, {"from": "yesterday"}, {"expires_from": "2030-01-01T00:00:00"}, {"cursor": "bm90LWpzb24"},
     {"cursor": "W10"}],
)  # fmt: skip
def test_bad_list_params(raw: httpx.Client, params: dict[str, str]) -> None:
    assert_error(raw.get("/v1/reservations", params=params), 400)


def test_bad_balance_params(raw: httpx.Client) -> None:
    assert_error(raw.get("/v1/balances"), 400)
    assert_error(raw.get("/v1/balances", params={"tenant": "acme", "limit": "-1"}), 400)
    assert_error(raw.get("/v1/balances", params={"tenant": "acme", "cursor": "e30"}), 400)
    assert_error(raw.get("/v1/balances", params={"tenant": "other"}), 403, "FORBIDDEN")


def test_missing_api_key(authority: LocalAuthority) -> None:
    assert_error(httpx.post(f"{authority.base_url}/v1/reservations", json=reserve_body()), 401, "UNAUTHORIZED")
    assert_error(httpx.get(f"{authority.base_url}/v1/balances?tenant=acme"), 401, "UNAUTHORIZED")


def test_huge_body_is_413(raw: httpx.Client, authority: LocalAuthority) -> None:
    body = reserve_body(metadata={"blob": "x" * (1 << 20)})
    resp = raw.post("/v1/reservations", json=body)
    assert_error(resp, 413)
    assert authority.reservations("acme") == []
    assert raw.post("/v1/reservations", json=reserve_body()).status_code == 200  # the client reconnects fine


def test_raw_protocol_garbage(authority: LocalAuthority, api_key: str) -> None:
    def send(data: bytes) -> bytes:
        with socket.create_connection((authority.host, authority.port), timeout=5) as s:
            s.sendall(data)
            chunks = []
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks)

    assert send(b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert send(b"POST /v1/reservations HTTP/1.1\r\nContent-Length: abc\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert send(b"POST /v1/reservations HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").startswith(
        b"HTTP/1.1 411"
    )
    assert send(b"GET /v1/balances HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n").startswith(b"HTTP/1.1 431")
    # Pipelined keep-alive requests are answered in order; Connection: close ends the exchange.
    req = f"GET /v1/balances?tenant=acme HTTP/1.1\r\nX-Cycles-API-Key: {api_key}\r\n\r\n".encode()
    last = b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n"
    out = send(req + req + last)
    assert out.count(b"HTTP/1.1 200") == 2 and out.rindex(b"HTTP/1.1 404") > out.rindex(b"HTTP/1.1 200")
