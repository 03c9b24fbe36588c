"""API keys as ledger operations (the admin plane's `/v1/admin/api-keys`): create, look up, list, revoke.

Shapes mirror the reference admin server (`cycles-governance-admin-v0.1.25.yaml`): `ApiKeyCreateResponse`, whose
secret is returned once as `key_secret` (only its sha256 is stored), `ApiKey` and `ApiKeyListResponse`. Keys expire
`key_ttl_ms` after creation unless the request names its own `expires_at` (the reference default is 90 days).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

from otel_cycles.authority._errors import CyclesProtocolError, invalid
from otel_cycles.authority._model import DUMPS
from otel_cycles.authority._permissions import parse_permissions
from otel_cycles.authority._sql import Queries
from otel_cycles.authority._store import LedgerStore
from otel_cycles.authority._tenants import require_tenant
from otel_cycles.authority._validation import parse_iso_ms, reject_unknown
from otel_cycles.authority._views import decode_cursor, encode_cursor, iso

__all__ = ["DEFAULT_KEY_TTL_MS", "ApiKeyRecord", "ApiKeysMixin", "hash_secret"]

DEFAULT_KEY_TTL_MS = 90 * 86_400_000
"""How long a new key lives unless its request names `expires_at` (the reference server's 90 days)."""
_MAX_EXPIRY_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last instant an RFC 3339 date can name
_NO_EXPIRY = "9999-12-31T23:59:59.999Z"  # what a key stored without an expiry reports (the schema requires one)
_API_KEY_FIELDS = frozenset(
    {"tenant_id", "name", "description", "permissions", "scope_filter", "expires_at", "metadata"}
)
_KEY_STATUSES = ("ACTIVE", "REVOKED", "EXPIRED")


def hash_secret(secret: str) -> str:
    """Return the stored form of an API key (sha256 hex)."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKeyRecord:
    """What the ledger knows about one key: whose it is, what it may do, and until when."""

    key_id: str
    tenant_id: str
    permissions: frozenset[str]
    status: str
    """`ACTIVE` or `REVOKED` as stored; expiry is judged against `expires_at_ms`."""
    expires_at_ms: int | None

    def expired(self, now_ms: int) -> bool:
        """Whether the key is past its expiry at `now_ms`."""
        return self.expires_at_ms is not None and self.expires_at_ms <= now_ms


def _key_view(row: tuple[Any, ...], now: int) -> dict[str, Any]:
    """Render an api_keys row as the admin `ApiKey` shape (status EXPIRED once past `expires_at`)."""
    key_id, tenant_id, name, prefix, permissions_json, status, created, expires, revoked_at, reason = row
    if status == "ACTIVE" and expires is not None and expires <= now:
        status = "EXPIRED"
    out: dict[str, Any] = {
        "key_id": key_id,
        "tenant_id": tenant_id,
        "key_prefix": prefix,
        "name": name,
        "permissions": json.loads(permissions_json),
        "status": status,
        "created_at": iso(created),
        "expires_at": iso(expires) if expires is not None else _NO_EXPIRY,
    }
    if revoked_at is not None:
        out["revoked_at"] = iso(revoked_at)
    if reason:
        out["revoked_reason"] = reason
    return out


class ApiKeysMixin(LedgerStore):
    """API-key operations of `SQLiteLedger`; each is one transaction."""

    key_ttl_ms: int | None = DEFAULT_KEY_TTL_MS
    """Lifetime of a key created without `expires_at`; None: such keys never expire."""
    key_generation: int = 0
    """Bumped whenever a key is revoked, so caches of authenticated keys in this process drop what they hold."""

    def create_api_key(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create an API key from an `ApiKeyCreateRequest`; the response carries `key_secret` (shown once).

        `permissions` defaults to the runtime-only set (`_permissions.DEFAULT_KEY_PERMISSIONS`); `expires_at`
        (RFC 3339, in the future) defaults to now + `key_ttl_ms`. `scope_filter` is refused rather than ignored.
        """
        reject_unknown(body, _API_KEY_FIELDS)
        tenant_id, name = body.get("tenant_id"), body.get("name")
        if not isinstance(tenant_id, str) or not tenant_id:
            raise invalid("tenant_id is required")
        if not isinstance(name, str) or not 1 <= len(name) <= 256:
            raise invalid("name is required (1-256 characters)")
        permissions = parse_permissions(body.get("permissions"))
        if body.get("scope_filter"):
            # Accepting a restriction and not enforcing it would be worse than refusing it.
            raise invalid("scope_filter is not supported by the embedded authority; use a separate tenant")
        expires = body.get("expires_at")
        if expires is not None and not isinstance(expires, str):
            raise invalid("expires_at must be an RFC 3339 date-time")
        expires_at_ms = parse_iso_ms(expires, "expires_at") if expires else None
        secret = "cyc_live_" + secrets.token_hex(24)
        key_id = "key_" + secrets.token_hex(8)
        with self._tx() as conn:
            now = self.clock()
            if expires_at_ms is None and self.key_ttl_ms:
                expires_at_ms = now + self.key_ttl_ms
            if expires_at_ms is not None and not now < expires_at_ms <= _MAX_EXPIRY_MS:
                raise invalid("expires_at must be in the future (and no later than 9999-12-31)")
            require_tenant(conn, tenant_id)
            conn.execute(
                Queries.INSERT_API_KEY,
                (hash_secret(secret), key_id, tenant_id, name, secret[:14], DUMPS(permissions), now, expires_at_ms),
            )
        return {
            "key_id": key_id,
            "key_secret": secret,
            "key_prefix": secret[:14],
            "tenant_id": tenant_id,
            "name": name,
            "permissions": permissions,
            "created_at": iso(now),
            "expires_at": iso(expires_at_ms) if expires_at_ms is not None else _NO_EXPIRY,
        }

    def lookup_api_key(self, secret: str) -> ApiKeyRecord | None:
        """Return the record of API key `secret` (any status), or None if no such key exists."""
        with self._read() as conn:
            row = conn.execute(Queries.SELECT_API_KEY, (hash_secret(secret),)).fetchone()
        if row is None:
            return None
        key_id, tenant, status, expires, permissions_json = row
        permissions = frozenset(json.loads(permissions_json))
        return ApiKeyRecord(key_id, tenant, permissions, status, expires)

    def list_api_keys(
        self, tenant_id: str | None = None, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> dict[str, Any]:
        """Return an `ApiKeyListResponse` page: newest first, optionally one tenant's and one status's keys."""
        if status is not None and status not in _KEY_STATUSES:
            raise invalid(f"status must be one of {', '.join(_KEY_STATUSES)}")
        after: tuple[int, str] | None = None
        if cursor:
            decoded = decode_cursor(cursor)
            created, key_id = decoded.get("c"), decoded.get("k")
            if not isinstance(created, int) or isinstance(created, bool) or not isinstance(key_id, str):
                raise invalid("cursor is not valid")
            after = (created, key_id)
        with self._read() as conn:
            now = self.clock()
            if tenant_id is None:
                rows = conn.execute(Queries.SELECT_API_KEYS).fetchall()
            else:
                rows = conn.execute(Queries.SELECT_API_KEYS_OF_TENANT, (tenant_id,)).fetchall()
        page: list[tuple[Any, dict[str, Any]]] = []
        for row in rows:  # newest first: (created_at_ms, key_id) descending
            if after is not None and (row[6], row[0]) >= after:
                continue
            view = _key_view(tuple(row), now)
            if status is not None and view["status"] != status:
                continue
            if len(page) == limit:
                last = page[-1][0]
                cursor_out = encode_cursor({"c": last[6], "k": last[0]})
                return {"keys": [v for _, v in page], "has_more": True, "next_cursor": cursor_out}
            page.append((row, view))
        return {"keys": [v for _, v in page], "has_more": False}

    def revoke_api_key(self, key_id: str, reason: str | None = None) -> dict[str, Any]:
        """Revoke key `key_id` for good and return its `ApiKey` (404 if unknown, 409 KEY_REVOKED if already)."""
        if reason is not None and len(reason) > 512:
            raise invalid("reason must be at most 512 characters")
        with self._tx() as conn:
            now = self.clock()
            row = conn.execute(Queries.SELECT_API_KEY_BY_ID, (key_id,)).fetchone()
            if row is None:
                raise CyclesProtocolError(404, "NOT_FOUND", f"API key not found: {key_id}")
            if row[5] == "REVOKED":
                raise CyclesProtocolError(409, "KEY_REVOKED", f"API key {key_id} is already revoked")
            conn.execute(Queries.REVOKE_API_KEY, (now, reason or None, key_id))
            row = conn.execute(Queries.SELECT_API_KEY_BY_ID, (key_id,)).fetchone()
            self.key_generation += 1
            return _key_view(tuple(row), now)
