"""Who is calling: tenant API keys (`X-Cycles-API-Key`, cached by digest) and the admin key (`X-Admin-API-Key`).

`CallerAuth` is the base of the HTTP handler classes; its helpers raise 401 `UNAUTHORIZED` and record the
authenticated tenant on the request.
"""

from __future__ import annotations

import hmac

from otel_cycles.authority._errors import CyclesProtocolError
from otel_cycles.authority._http_messages import Request
from otel_cycles.authority._tenants import hash_secret
from otel_cycles.authority.ledger import SQLiteLedger

__all__ = ["CallerAuth"]

_KEY_CACHE_MAX = 10_000


class CallerAuth:
    """The ledger being served and the caller checks every handler starts with.

    Args:
        ledger: The ledger to serve.
        admin_key: Secret expected in `X-Admin-API-Key` (kept only as a sha256 digest); None disables the admin plane.
    """

    def __init__(self, ledger: SQLiteLedger, admin_key: str | None) -> None:
        self.ledger = ledger
        self._admin_hash = hash_secret(admin_key) if admin_key else None
        self._key_cache: dict[str, str] = {}  # sha256(secret) -> tenant; only touched on the loop thread

    def _is_admin(self, req: Request) -> bool:
        key = req.headers.get("x-admin-api-key")
        return (
            bool(key) and self._admin_hash is not None and hmac.compare_digest(hash_secret(key or ""), self._admin_hash)
        )

    def _require_admin(self, req: Request) -> None:
        if not self._is_admin(req):
            raise CyclesProtocolError(401, "UNAUTHORIZED", "Missing or invalid X-Admin-API-Key")

    def _tenant(self, req: Request, admin_ok: bool = False) -> str | None:
        """Return the effective tenant for the API key, or None for an admin caller when `admin_ok`."""
        key = req.headers.get("x-cycles-api-key")
        if not key:
            if admin_ok and self._is_admin(req):
                return None
            raise CyclesProtocolError(401, "UNAUTHORIZED", "Missing X-Cycles-API-Key")
        digest = hash_secret(key)
        tenant = self._key_cache.get(digest)
        if tenant is None:
            tenant = self.ledger.authenticate(key)
            if tenant is None:
                raise CyclesProtocolError(401, "UNAUTHORIZED", "Invalid API key")
            if len(self._key_cache) >= _KEY_CACHE_MAX:
                self._key_cache.clear()
            self._key_cache[digest] = tenant
        req.tenant = tenant
        return tenant

    def _authed(self, req: Request) -> str:
        tenant = self._tenant(req)
        assert tenant is not None
        return tenant

    def _budget_tenant(self, req: Request, explicit: str | None) -> str | None:
        """Dual auth: a tenant API key scopes to its tenant; the admin key accepts an explicit `tenant_id`."""
        if req.headers.get("x-cycles-api-key"):
            return self._tenant(req)
        self._require_admin(req)
        return explicit
