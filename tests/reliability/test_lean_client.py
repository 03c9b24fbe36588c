"""The lean transport (`otel_cycles._lean_client`) answers exactly what runcycles' own client answers, survives an
authority restart between requests (a dead keep-alive connection), and reports an unreachable authority as a
transport error."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import subprocess
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from runcycles import CyclesClient, CyclesConfig

from otel_cycles._lean_client import LeanCyclesClient, lean_client
from otel_cycles._reserve import Allowed, start_reserve
from otel_cycles._settlement import Settlement
from tests.reliability.conftest import UNIT, Stack
from tests.reliability.fault_proxy import FaultProxy, free_port


def _reserve_body(stack: Stack, amount: int = 1000) -> dict[str, Any]:
    return {
        "idempotency_key": str(uuid.uuid4()),
        "subject": {"tenant": stack.tenant},
        "action": {"kind": "llm.completion", "name": "openai:gpt-4o"},
        "estimate": {"unit": UNIT, "amount": amount},
        "ttl_ms": 60_000,
    }


def test_same_answers_as_the_runcycles_client(stack: Stack) -> None:
    stack.budget("", 10_000)
    plain = stack.client()
    lean = lean_client(plain)
    assert isinstance(lean, LeanCyclesClient) and lean_client(plain) is lean

    allowed = lean.create_reservation(_reserve_body(stack))
    assert allowed.status == 200 and allowed.body is not None and allowed.body["decision"] == "ALLOW"
    assert allowed.headers.get("x-request-id")

    # The same denial, error body and message through both clients (20,000 > the 9,000 left).
    body = _reserve_body(stack, 20_000)
    denied = [client.create_reservation({**body, "idempotency_key": str(uuid.uuid4())}) for client in (plain, lean)]
    assert [r.status for r in denied] == [denied[0].status] * 2 and denied[0].status == 409
    plain_body, lean_body = denied[0].body or {}, denied[1].body or {}
    assert lean_body == {**plain_body, "request_id": lean_body.get("request_id")} and "error" in lean_body
    assert denied[1].error_message == denied[0].error_message

    missing = [
        c.commit_reservation("no-such-id", {"idempotency_key": "k", "actual": {"unit": UNIT, "amount": 1}})
        for c in (plain, lean)
    ]
    assert missing[0].status == missing[1].status == 404
    assert missing[0].error_message == missing[1].error_message

    balances = [c.get_balances(tenant=stack.tenant) for c in (plain, lean)]
    assert balances[0].body == balances[1].body


def test_survives_an_authority_restart_between_requests(stack: Stack) -> None:
    stack.budget("", 10_000)
    lean = lean_client(stack.client())
    assert lean.create_reservation(_reserve_body(stack)).is_success
    stack.stop()  # the kept-alive connection dies with the server
    stack.start()
    response = lean.create_reservation(_reserve_body(stack))
    assert response.is_success, response.error_message
    assert len(stack.active()) == 2


def test_unreachable_authority_is_a_transport_error(stack: Stack) -> None:
    lean = lean_client(stack.client(f"http://127.0.0.1:{free_port()}"))
    response = lean.create_reservation(_reserve_body(stack))
    assert response.is_transport_error and not response.is_success


def test_requests_sent_ahead_are_applied_before_they_are_read_and_read_on_any_thread(stack: Stack) -> None:
    stack.budget("", 10_000)
    lean = lean_client(stack.client())
    assert isinstance(lean, LeanCyclesClient)
    bodies = [_reserve_body(stack) for _ in range(2)]
    sent = [lean.start_post("/v1/reservations", body, 5.0) for body in bodies]
    assert all(exchange is not None for exchange in sent)
    # Both in flight at once, each on its own connection, and applied by the authority before anyone reads them.
    assert stack.wait_for(lambda: len(stack.active()) == 2)
    answers: list[Any] = []
    reader = threading.Thread(target=lambda: answers.append(sent[1].response()))  # type: ignore[union-attr]
    reader.start()
    reader.join(10)
    answers.append(sent[0].response())  # type: ignore[union-attr]
    assert [a.status for a in answers] == [200, 200]
    ids = {a.body["reservation_id"] for a in answers}
    assert ids == {r["reservation_id"] for r in stack.active()}
    # Their connections went back to the pool: the next request sent ahead reuses one.
    assert len(lean._spare) == 2
    again = lean.start_post("/v1/reservations", _reserve_body(stack), 5.0)
    assert again is not None and len(lean._spare) == 1 and again.response().status == 200


def test_a_reservation_sent_ahead_whose_answer_is_lost_is_retried_with_its_key(stack: Stack, proxy: FaultProxy) -> None:
    """The authority applied it, the connection dropped before the answer: the retry replays the same reservation."""
    stack.budget("", 10_000)
    proxy.add(path="/v1/reservations", method="POST", after="drop", times=1)
    lean = lean_client(stack.client(proxy.base_url))
    body = _reserve_body(stack)
    sent = start_reserve(lean, body, timeout_s=5.0)
    assert sent is not None
    result = sent.read()
    assert isinstance(result, Allowed)
    [active] = stack.active()
    assert active["reservation_id"] == result.response.reservation_id
    keys = [r.idempotency_key for r in proxy.requests("/v1/reservations", "POST")]
    assert keys == [body["idempotency_key"]] * 2


def test_nothing_is_sent_ahead_to_an_unreachable_authority_or_through_a_client_subclass(stack: Stack) -> None:
    unreachable = lean_client(stack.client(f"http://127.0.0.1:{free_port()}"))
    assert isinstance(unreachable, LeanCyclesClient)
    assert unreachable.start_post("/v1/reservations", _reserve_body(stack), 2.0) is None

    class Custom(CyclesClient):
        pass

    assert start_reserve(Custom(stack.config()), _reserve_body(stack), timeout_s=2.0) is None
    assert stack.active() == []


def test_a_client_subclass_is_used_as_given(stack: Stack) -> None:
    class Custom(CyclesClient):
        pass

    custom = Custom(stack.config())
    assert lean_client(custom) is custom


class RawServer:
    """A loopback HTTP server that answers each request with the next canned byte string, as written, and records
    every request it read and every connection it accepted: how the lean transport's framing is put to the test with
    what real servers send (chunked bodies, interim answers, closes) and what broken ones do."""

    def __init__(self, answers: list[bytes], tls: ssl.SSLContext | None = None, keep_alive: bool = True) -> None:
        self.answers = list(answers)
        self._keep_alive = keep_alive
        self._closing = False
        self.requests: list[bytes] = []
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._tls = tls
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            if self._closing:
                conn.close()
                return
            self.connections += 1
            try:
                if self._tls is not None:
                    conn = self._tls.wrap_socket(conn, server_side=True)
                self._answer(conn)
            except (OSError, ssl.SSLError):
                pass  # the client gave up on this connection (a failed handshake, a malformed answer)
            finally:
                conn.close()

    def _answer(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        while self.answers:
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                line = reader.readline()
                if not line:
                    return  # the client closed the connection
                head += line
            length = next(
                (int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")), 0
            )
            self.requests.append(head + reader.read(length))
            answer = self.answers.pop(0)
            conn.sendall(answer)
            framed = b"Content-Length" in answer or b"chunked" in answer
            if not self._keep_alive or not framed or b"Connection: close" in answer:
                return

    def close(self) -> None:
        self._closing = True
        self.answers.clear()
        with contextlib.suppress(OSError):  # wake a thread waiting in accept(), which a close alone does not
            socket.create_connection(("127.0.0.1", self.port), 1).close()
        self._thread.join(5)
        self._listener.close()


def _json(status: str, body: bytes, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{head}".encode() + b"\r\n" + body


BALANCES = b'{"balances": [], "has_more": false}'


def _config(base_url: str, api_key: str = "cyc_test_key") -> CyclesConfig:
    return CyclesConfig(base_url=base_url, api_key=api_key, read_timeout=2.0, connect_timeout=2.0)


def _lean(server: RawServer, scheme: str = "http") -> LeanCyclesClient:
    client = lean_client(CyclesClient(_config(f"{scheme}://127.0.0.1:{server.port}")))
    assert isinstance(client, LeanCyclesClient)
    return client


def test_reads_every_framing_a_server_may_use() -> None:
    # Two chunks, the first with a chunk extension, then a trailer field: all legal, the extras to be skipped.
    chunked = b"a;ext=1\r\n%s\r\n%x\r\n%s\r\n0\r\nX-Trailer: t\r\n\r\n" % (
        BALANCES[:10],
        len(BALANCES) - 10,
        BALANCES[10:],
    )
    server = RawServer(
        [
            _json("200 OK", BALANCES, f"Content-Length: {len(BALANCES)}", "X-Request-Id: by-length"),
            # An interim answer before the final one, which comes in chunks.
            b"HTTP/1.1 100 Continue\r\n\r\n"
            + _json("200 OK", chunked, "Transfer-Encoding: chunked", "X-Request-Id: chunked"),
            _json("200 OK", BALANCES, "X-Request-Id: by-close"),  # no length: the body ends with the connection
        ]
    )
    try:
        lean = _lean(server)
        answers = [lean.get_balances(tenant="t") for _ in range(3)]
    finally:
        server.close()
    assert [(a.status, a.body, a.headers.get("x-request-id")) for a in answers] == [
        (200, json.loads(BALANCES), rid) for rid in ("by-length", "chunked", "by-close")
    ]
    assert server.connections == 1  # kept alive through the length- and chunk-framed answers
    first = server.requests[0].decode()
    assert first.startswith("GET /v1/balances?tenant=t HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n" in first and "X-Cycles-API-Key: cyc_test_key\r\n" in first


def test_a_post_carries_its_length_and_idempotency_key_and_a_close_opens_a_fresh_connection() -> None:
    ok = b'{"reservation_id": "r1"}'
    server = RawServer([_json("200 OK", ok, f"Content-Length: {len(ok)}", "Connection: close")] * 2)
    try:
        lean = _lean(server)
        body = {"idempotency_key": "key-1", "actual": {"unit": UNIT, "amount": 5}}
        answers = [lean.commit_reservation("r1", {**body, "idempotency_key": f"key-{i}"}) for i in (1, 2)]
    finally:
        server.close()
    assert [a.status for a in answers] == [200, 200] and server.connections == 2
    head, _, sent = server.requests[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/reservations/r1/commit HTTP/1.1\r\n")
    assert b"X-Idempotency-Key: key-1\r\n" in head + b"\r\n" and f"Content-Length: {len(sent)}".encode() in head
    assert json.loads(sent) == body


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\n{}",  # not a status code
        b"SPDY/3 200 OK\r\nContent-Length: 2\r\n\r\n{}",  # not HTTP/1.x
        b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{}",  # the body is cut short by the close
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000000000\r\n\r\n{}",  # not a buffer to allocate
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n{}\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",  # not a chunk size
        b"HTTP/1.1 200 OK\r\n" + b"X-Filler: 1\r\n" * 101 + b"\r\n",  # more headers than any server sends
        b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n",  # a header line past the line limit
        b"",  # closed without an answer
    ],
)
def test_a_malformed_answer_is_a_transport_error_and_the_next_request_works(answer: bytes) -> None:
    good = _json("200 OK", BALANCES, f"Content-Length: {len(BALANCES)}")
    # The server closes the connection after each malformed answer. A closed connection with no answer on a fresh
    # connection is not retried; the second request then opens another connection and gets the good answer.
    server = RawServer([answer, good], keep_alive=False)
    try:
        lean = _lean(server)
        broken = lean.get_balances(tenant="t")
        healthy = lean.get_balances(tenant="t")
    finally:
        server.close()
    assert broken.is_transport_error and not broken.is_success
    assert healthy.status == 200 and healthy.body == json.loads(BALANCES)
    assert server.connections == 2


def test_a_control_character_in_a_header_value_is_refused_before_anything_is_sent() -> None:
    server = RawServer([_json("200 OK", b"{}", "Content-Length: 2")])
    try:
        lean = _lean(server)
        body = {"idempotency_key": "k\r\nX-Injected: 1", "actual": {"unit": UNIT, "amount": 5}}
        response = lean.commit_reservation("r1", body)
        refused_id = lean.commit_reservation("r1\r\nX-Injected: 1", {**body, "idempotency_key": "k"})
    finally:
        server.close()
    assert response.is_transport_error and refused_id.is_transport_error
    assert server.requests == []
    with pytest.raises(ValueError):
        LeanCyclesClient(CyclesClient(_config("http://127.0.0.1:1", "cyc\r\nX-Injected: 1")))


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_https_verifies_the_server_certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = _self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    good = _json("200 OK", BALANCES, f"Content-Length: {len(BALANCES)}")

    server = RawServer([good], tls)  # a certificate nobody trusts: refused, and nothing is read from it
    try:
        untrusted = _lean(server, "https").get_balances(tenant="t")
    finally:
        server.close()
    assert untrusted.is_transport_error and server.requests == []

    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # read when the client builds its TLS context
    server = RawServer([good, good], tls)
    try:
        lean = _lean(server, "https")
        answers = [lean.get_balances(tenant="t") for _ in range(2)]
    finally:
        server.close()
    assert [(a.status, a.body) for a in answers] == [(200, json.loads(BALANCES))] * 2
    assert server.connections == 1


def test_queued_commits_are_sent_before_the_first_answer_is_read_and_each_settles_once(
    stack: Stack, proxy: FaultProxy
) -> None:
    """Eight commits queued together: the first to reach the proxy is held (never answered, then dropped), and the
    other seven still reach the authority meanwhile, so the worker wrote them all before reading any answer. The
    dropped one is retried with its key by runcycles' commit path; every reservation ends COMMITTED at its amount,
    once."""
    stack.budget("", 10_000_000)
    client = stack.client(proxy.base_url, read_timeout=30.0)
    reserved = []
    for amount in range(1000, 9000, 1000):
        body = _reserve_body(stack, amount)
        response = client.create_reservation(body)
        assert response.is_success and response.body is not None
        reserved.append((str(response.body["reservation_id"]), body["idempotency_key"], amount - 1))
    proxy.add(path="/commit", method="POST", times=1, hold=True)
    settlement = Settlement(client)

    def bodies(key: str, actual: int) -> Callable[[], tuple[dict[str, Any], dict[str, Any]]]:
        commit = {"idempotency_key": f"commit-{key}", "actual": {"unit": UNIT, "amount": actual}}
        event = {
            "idempotency_key": f"event-{key}",
            "subject": {"tenant": stack.tenant},
            "action": {"kind": "llm.completion", "name": "openai:gpt-4o"},
            "actual": {"unit": UNIT, "amount": actual},
        }
        return lambda: (commit, event)

    with settlement._cond:  # the worker takes none until all eight are queued
        tickets = [settlement.commit(rid, bodies(key, actual)) for rid, key, actual in reserved]
    assert stack.wait_for(lambda: len(proxy.requests("/commit", "POST")) == 8)
    # The proxy holds whichever commit reaches it first, not necessarily the first one written.
    first = proxy.requests("/commit", "POST")[0]
    held = next(t for t, (_, key, _) in zip(tickets, reserved, strict=True) if first.idempotency_key == f"commit-{key}")
    assert first.fault == "hold" and not settlement.wait(held, 0)
    proxy.release_held()
    assert settlement.flush(30)
    assert stack.wait_for(lambda: stack.spent() == sum(actual for _, _, actual in reserved))
    assert stack.active() == []
    commits = [str(r.idempotency_key) for r in proxy.requests("/commit", "POST")]
    assert sorted(set(commits)) == sorted(f"commit-{key}" for _, key, _ in reserved)
    assert commits.count(str(first.idempotency_key)) == 2  # the held one, retried once with its key
    settlement.close(5)
