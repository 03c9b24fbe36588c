"""Who is calling and what they may do: tenant API keys (`X-Cycles-API-Key`) and the admin key (`X-Admin-API-Key`).

`CallerAuth` is the base of the HTTP handler classes. Every handler starts with one of its checks:
`_require_permission(req, "budgets:write")` for a route a tenant key may use when it holds that permission (the admin
key may too, where `admin_ok`), or `_require_admin(req)` for a route only the admin key may use. A missing, unknown,
revoked or expired key gets 401 UNAUTHORIZED; a valid key without the permission gets 403 INSUFFICIENT_PERMISSIONS.

Authenticated keys are cached by digest on the event-loop thread. An entry is dropped when its key expires, when any
key is revoked through this process's ledger (`key_generation`), and after `_KEY_CACHE_TTL_S` in any case, so a
revocation by another process sharing the database file takes effect within that time too.
"""

from __future__ import annotations

import hmac
import time

from otel_cycles.authority._api_keys import ApiKeyRecord, hash_secret
from otel_cycles.authority._errors import CyclesProtocolError
from otel_cycles.authority._http_messages import Request
from otel_cycles.authority._permissions import grants
from otel_cycles.authority.ledger import SQLiteLedger

__all__ = ["CallerAuth"]

_KEY_CACHE_MAX = 10_000
_KEY_CACHE_TTL_S = 5.0


class CallerAuth:
    """The ledger being served and the caller checks every handler starts with.

    Args:
        ledger: The ledger to serve.
        admin_key: Secret expected in `X-Admin-API-Key` (kept only as a sha256 digest); None disables the admin plane.
    """

    def __init__(self, ledger: SQLiteLedger, admin_key: str | None) -> None:
        self.ledger = ledger
        self._admin_hash = hash_secret(admin_key) if admin_key else None
        # sha256(secret) -> (record, monotonic time cached); only touched on the loop thread.
        self._key_cache: dict[str, tuple[ApiKeyRecord, float]] = {}
        self._key_generation = ledger.key_generation

    def _require_permission(self, req: Request, permission: str, *, admin_ok: bool = True) -> str | None:
        """Authenticate the caller and require `permission` (an admin-spec name such as `budgets:write`).

        Returns:
            The tenant of the caller's API key (also recorded on `req` and echoed as `X-Cycles-Tenant`), or None for
            the admin key, which holds every permission, on a route that accepts it (`admin_ok`).

        Raises:
            CyclesProtocolError: 401 without valid credentials, 403 INSUFFICIENT_PERMISSIONS for a key lacking
                `permission`.
        """
        secret = req.headers.get("x-cycles-api-key")
        if not secret:
            if admin_ok and self._is_admin(req):
                return None
            raise CyclesProtocolError(401, "UNAUTHORIZED", "Missing X-Cycles-API-Key")
        record = self._key(secret)
        req.tenant = record.tenant_id
        if not grants(record.permissions, permission):
            raise CyclesProtocolError(
                403, "INSUFFICIENT_PERMISSIONS", f"API key {record.key_id} lacks the {permission} permission"
            )
        return record.tenant_id

    def _require_tenant_key(self, req: Request, permission: str) -> str:
        """`_require_permission` on a route only a tenant API key may call (the tenant comes from the key)."""
        tenant = self._require_permission(req, permission, admin_ok=False)
        assert tenant is not None
        return tenant

    def _require_admin(self, req: Request) -> None:
        """Require the admin key: 401 without valid credentials, 403 INSUFFICIENT_PERMISSIONS for a tenant key."""
        if self._is_admin(req):
            return
        secret = req.headers.get("x-cycles-api-key")
        if secret:
            record = self._key(secret)
            req.tenant = record.tenant_id
            raise CyclesProtocolError(
                403, "INSUFFICIENT_PERMISSIONS", "This operation needs the admin key (X-Admin-API-Key)"
            )
        raise CyclesProtocolError(401, "UNAUTHORIZED", "Missing or invalid X-Admin-API-Key")

    def _is_admin(self, req: Request) -> bool:
        key = req.headers.get("x-admin-api-key")
        return (
            bool(key) and self._admin_hash is not None and hmac.compare_digest(hash_secret(key or ""), self._admin_hash)
        )

    def _key(self, secret: str) -> ApiKeyRecord:
        """The ACTIVE, unexpired key `secret`, from the cache or the ledger; 401 otherwise."""
        if self.ledger.key_generation != self._key_generation:  # a key was revoked: forget every cached grant
            self._key_cache.clear()
            self._key_generation = self.ledger.key_generation
        digest = hash_secret(secret)
        cached = self._key_cache.get(digest)
        now = time.monotonic()
        if cached is None or now - cached[1] > _KEY_CACHE_TTL_S:
            record = self.ledger.lookup_api_key(secret)
            if record is None:
                raise CyclesProtocolError(401, "UNAUTHORIZED", "Invalid API key")
            if record.status != "ACTIVE":
                self._key_cache.pop(digest, None)
                raise CyclesProtocolError(401, "UNAUTHORIZED", f"API key {record.key_id} is revoked")
            if len(self._key_cache) >= _KEY_CACHE_MAX:
                self._key_cache.clear()
            self._key_cache[digest] = (record, now)
        else:
            record = cached[0]
        if record.expired(self.ledger.clock()):
            self._key_cache.pop(digest, None)
            raise CyclesProtocolError(401, "UNAUTHORIZED", f"API key {record.key_id} has expired")
        return record
