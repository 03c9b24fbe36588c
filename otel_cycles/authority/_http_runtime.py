"""HTTP handlers of the runtime plane: reservations, decisions, events and balances (tenant API keys).

Each handler authenticates and checks the key's permission (`reservations:create` for reserve and decide,
`reservations:commit` for commit and events, `reservations:release|extend|list`, `balances:read`), validates the
body with `_validation`, checks that a `X-Idempotency-Key` header agrees with the body, and applies the operation
to the ledger; it returns `(status, body)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import unquote

from otel_cycles.authority import _validation as v
from otel_cycles.authority._errors import CyclesProtocolError, invalid
from otel_cycles.authority._http_auth import CallerAuth
from otel_cycles.authority._http_messages import Request, budget_page, subject_filters
from otel_cycles.authority._idempotency import payload_hash
from otel_cycles.authority._listing import list_reservations
from otel_cycles.authority._model import Budget

__all__ = ["RuntimeHandlers"]

_RID_MAX = 128
_T = TypeVar("_T", bound="str | None")

Parser = Callable[[Any], dict[str, Any]]


class RuntimeHandlers(CallerAuth):
    """Handlers for `/v1/reservations…`, `/v1/decide`, `/v1/events` and `/v1/balances`."""

    @staticmethod
    def _check_header_key(req: Request, parsed: dict[str, Any]) -> None:
        header = req.headers.get("x-idempotency-key")
        if header is not None and header != parsed["idempotency_key"]:
            raise invalid("X-Idempotency-Key header does not match body idempotency_key")

    @staticmethod
    def _rid(req: Request) -> str:
        rid = unquote(req.path.split("/")[3])
        if not 1 <= len(rid) <= _RID_MAX:
            raise invalid("reservation_id must be 1-128 characters")
        return rid

    def _subject_op(
        self,
        req: Request,
        permission: str,
        parse: Parser,
        apply: Callable[[str, dict[str, Any], str], dict[str, Any]],
        status: int,
    ) -> tuple[int, Any]:
        """Run a subject-scoped operation (reserve, decide, event): the subject's tenant must be the key's."""
        tenant = self._require_tenant_key(req, permission)
        raw = req.json()
        parsed = parse(raw)
        self._check_header_key(req, parsed)
        if "tenant" in parsed["subject"] and parsed["subject"]["tenant"] != tenant:
            raise CyclesProtocolError(403, "FORBIDDEN", "subject.tenant does not match the API key's tenant")
        return status, apply(tenant, parsed, payload_hash(raw))

    def _reservation_op(
        self, req: Request, tenant: _T, parse: Parser, apply: Callable[[_T, str, dict[str, Any], str], dict[str, Any]]
    ) -> tuple[int, Any]:
        """Run an operation on the reservation in the path (commit, release, extend) for an authenticated caller."""
        rid = self._rid(req)
        raw = req.json()
        parsed = parse(raw)
        self._check_header_key(req, parsed)
        return 200, apply(tenant, rid, parsed, payload_hash(raw))

    def _reserve(self, req: Request) -> tuple[int, Any]:
        return self._subject_op(req, "reservations:create", v.parse_reserve, self.ledger.reserve, 200)

    def _decide(self, req: Request) -> tuple[int, Any]:
        return self._subject_op(req, "reservations:create", v.parse_decide, self.ledger.decide, 200)

    def _event(self, req: Request) -> tuple[int, Any]:
        # An event records spend, as a commit does (runcycles sends it as the fallback of an expired commit).
        return self._subject_op(req, "reservations:commit", v.parse_event, self.ledger.create_event, 201)

    def _commit(self, req: Request) -> tuple[int, Any]:
        tenant = self._require_tenant_key(req, "reservations:commit")
        return self._reservation_op(req, tenant, v.parse_commit, self.ledger.commit)

    def _release(self, req: Request) -> tuple[int, Any]:
        tenant = self._require_permission(req, "reservations:release")
        return self._reservation_op(req, tenant, v.parse_release, self.ledger.release)

    def _extend(self, req: Request) -> tuple[int, Any]:
        tenant = self._require_tenant_key(req, "reservations:extend")
        return self._reservation_op(req, tenant, v.parse_extend, self.ledger.extend)

    def _get_reservation(self, req: Request) -> tuple[int, Any]:
        tenant = self._require_permission(req, "reservations:list")
        return 200, self.ledger.get_reservation(tenant, self._rid(req))

    def _list(self, req: Request) -> tuple[int, Any]:
        tenant = self._require_permission(req, "reservations:list")
        wanted = req.params.get("tenant")
        if tenant is None:
            if not wanted:
                raise invalid("tenant query parameter is required when using admin key authentication")
            tenant = wanted
        elif wanted and wanted != tenant:
            raise CyclesProtocolError(403, "FORBIDDEN", "tenant filter does not match the API key's tenant")
        return 200, list_reservations(self.ledger, tenant, req.params)

    def _balances(self, req: Request) -> tuple[int, Any]:
        tenant = self._require_tenant_key(req, "balances:read")
        params = req.params
        filters = subject_filters(params)
        wanted = params.get("tenant")
        if not filters and not wanted:
            raise invalid("at least one subject filter (tenant, workspace, app, workflow, agent, toolset) is required")
        if wanted and wanted != tenant:
            raise CyclesProtocolError(403, "FORBIDDEN", "tenant filter does not match the API key's tenant")
        return 200, budget_page(self.ledger, tenant, filters, params, "balances", Budget.balance)
