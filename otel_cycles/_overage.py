"""A commit the authority refuses for its overage still settles: the reserved estimate is committed instead.

Under `overage_policy=REJECT` a commit above the estimate gets 409 BUDGET_EXCEEDED, and under `ALLOW_WITH_OVERDRAFT`
one beyond the overdraft limit gets 409 OVERDRAFT_LIMIT_EXCEEDED; either way the reservation stays ACTIVE with
nothing charged. runcycles' commit path treats those as final and never releases (right: the spend happened), so the
reservation would sit until its TTL ran out and the authority handed the estimate back, charging nothing at all.

`OverageAwareClient` wraps the client that path uses (the first attempt and every retry, including journal replays):
on such a refusal it reads the reservation and commits exactly its reserved amount, the most the policy allows, with
the same idempotency key and the uncharged rest in the commit's metadata (`uncharged_overage`). It counts
`cycles.settlement.errors{error.type=overage_refused}` and logs a warning.
"""

from __future__ import annotations

import logging
from typing import Any

from runcycles import CyclesClient, CyclesResponse

from otel_cycles import metrics

__all__ = ["OverageAwareClient"]

logger = logging.getLogger(__name__)

_REFUSALS = ("BUDGET_EXCEEDED", "OVERDRAFT_LIMIT_EXCEEDED")


class OverageAwareClient:
    """`client`, except that `commit_reservation` settles an overage refusal by committing the reserved amount."""

    def __init__(self, client: CyclesClient) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def commit_reservation(self, reservation_id: str, body: dict[str, Any]) -> CyclesResponse:
        """Commit `body`; if the authority refuses its overage, commit the reserved amount and return that answer."""
        response = self._client.commit_reservation(reservation_id, body)
        if response.status != 409 or (response.body or {}).get("error") not in _REFUSALS:
            return response
        held = self._client.get_reservation(reservation_id)
        reservation = held.body if held.is_success and held.body else {}
        reserved = (reservation.get("reserved") or {}).get("amount")
        actual = body["actual"]["amount"]
        if reservation.get("status") != "ACTIVE" or not isinstance(reserved, int) or actual <= reserved:
            return response  # not an overage of a held reservation: runcycles' own handling applies
        capped = {
            **body,
            "actual": {**body["actual"], "amount": reserved},
            "metadata": {**(body.get("metadata") or {}), "uncharged_overage": actual - reserved},
        }
        metrics.settlement_errors.add(1, {"error.type": "overage_refused", "cycles.operation": "commit"})
        logger.warning(
            "otel-cycles: the authority refused the overage of reservation %s (%s); committing its reserved %d "
            "instead of the actual %d",
            reservation_id,
            (response.body or {}).get("error"),
            reserved,
            actual,
        )
        return self._client.commit_reservation(reservation_id, capped)
