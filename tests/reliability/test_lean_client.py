"""The lean transport (`otel_cycles._lean_client`) answers exactly what runcycles' own client answers, survives an
authority restart between requests (a dead keep-alive connection), and reports an unreachable authority as a
transport error."""

from __future__ import annotations

import uuid
from typing import Any

from runcycles import CyclesClient

from otel_cycles._lean_client import LeanCyclesClient, lean_client
from tests.reliability.conftest import UNIT, Stack
from tests.reliability.fault_proxy import free_port


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


def test_a_client_subclass_is_used_as_given(stack: Stack) -> None:
    class Custom(CyclesClient):
        pass

    custom = Custom(stack.config())
    assert lean_client(custom) is custom
