"""Every SQL statement the ledger runs, as named constants (bound parameters only, never string-formatted input)."""

from __future__ import annotations

__all__ = ["Queries"]

_BUDGET_COLUMNS = (
    "scope, unit, allocated, remaining, reserved, spent, debt, overdraft_limit, is_over_limit, status, "
    "commit_overage_policy, tenant_id, ledger_id, created_at_ms, updated_at_ms"
)
_RESERVATION_COLUMNS = (
    "reservation_id, tenant_id, state, subject_json, action_json, unit, estimate, scope_path, affected_json, "
    "budgeted_json, created_at_ms, expires_at_ms, grace_ms, idempotency_key, overage_policy, metadata_json, "
    "extension_count, max_extensions, charged, committed_metadata_json, finalized_at_ms"
)
_POLICY_COLUMNS = (
    "policy_id, tenant_id, name, description, scope_pattern, priority, caps_json, status, effective_from_ms, "
    "effective_until_ms, created_at_ms, updated_at_ms, commit_overage_policy, ttl_override_json"
)
_API_KEY_VIEW = (
    "SELECT key_id, tenant_id, name, key_prefix, permissions_json, status, created_at_ms, expires_at_ms, "
    "revoked_at_ms, revoked_reason FROM api_keys"
)


class Queries:
    """SQL used by `SQLiteLedger`; one constant per statement."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS tenants (
        tenant_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        parent_tenant_id TEXT,
        default_commit_overage_policy TEXT,
        default_reservation_ttl_ms INTEGER,
        max_reservation_ttl_ms INTEGER,
        max_reservation_extensions INTEGER,
        metadata_json TEXT,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS api_keys (
        key_hash TEXT PRIMARY KEY,
        key_id TEXT NOT NULL UNIQUE,
        tenant_id TEXT NOT NULL,
        name TEXT NOT NULL,
        key_prefix TEXT NOT NULL,
        permissions_json TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER,
        revoked_at_ms INTEGER,
        revoked_reason TEXT
    );
    CREATE TABLE IF NOT EXISTS budgets (
        scope TEXT NOT NULL,
        unit TEXT NOT NULL,
        allocated INTEGER NOT NULL,
        remaining INTEGER NOT NULL,
        reserved INTEGER NOT NULL,
        spent INTEGER NOT NULL,
        debt INTEGER NOT NULL,
        overdraft_limit INTEGER NOT NULL,
        is_over_limit INTEGER NOT NULL,
        status TEXT NOT NULL,
        commit_overage_policy TEXT,
        tenant_id TEXT NOT NULL,
        ledger_id TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        PRIMARY KEY (scope, unit)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS budgets_by_tenant ON budgets (tenant_id, scope, unit);
    CREATE TABLE IF NOT EXISTS reservations (
        reservation_id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        state TEXT NOT NULL,
        subject_json TEXT NOT NULL,
        action_json TEXT NOT NULL,
        unit TEXT NOT NULL,
        estimate INTEGER NOT NULL,
        scope_path TEXT NOT NULL,
        affected_json TEXT NOT NULL,
        budgeted_json TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        grace_ms INTEGER NOT NULL,
        idempotency_key TEXT NOT NULL,
        overage_policy TEXT NOT NULL,
        metadata_json TEXT,
        extension_count INTEGER NOT NULL DEFAULT 0,
        max_extensions INTEGER NOT NULL,
        charged INTEGER,
        committed_metadata_json TEXT,
        finalized_at_ms INTEGER
    );
    CREATE INDEX IF NOT EXISTS reservations_active_deadline
        ON reservations (expires_at_ms + grace_ms) WHERE state = 'ACTIVE';
    CREATE INDEX IF NOT EXISTS reservations_by_tenant ON reservations (tenant_id, created_at_ms);
    CREATE TABLE IF NOT EXISTS idempotency (
        tenant_id TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        idem_key TEXT NOT NULL,
        payload_hash TEXT NOT NULL,
        response_json TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, endpoint, idem_key)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS events (
        event_id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        subject_json TEXT NOT NULL,
        action_json TEXT NOT NULL,
        unit TEXT NOT NULL,
        actual INTEGER NOT NULL,
        charged INTEGER NOT NULL,
        scope_path TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        metadata_json TEXT,
        created_at_ms INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS policies (
        policy_id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT,
        scope_pattern TEXT NOT NULL,
        priority INTEGER NOT NULL,
        caps_json TEXT,
        status TEXT NOT NULL,
        effective_from_ms INTEGER,
        effective_until_ms INTEGER,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        commit_overage_policy TEXT,
        ttl_override_json TEXT,
        UNIQUE (tenant_id, name)
    );
    """

    ADDED_COLUMNS = (("api_keys", "revoked_at_ms", "INTEGER"), ("api_keys", "revoked_reason", "TEXT"))
    """Columns added after the first release: `connect` adds them to a database created before them."""

    # -- idempotency
    SELECT_IDEMPOTENCY = (
        "SELECT payload_hash, response_json FROM idempotency WHERE tenant_id = ? AND endpoint = ? AND idem_key = ?"
    )
    INSERT_IDEMPOTENCY = (
        "INSERT INTO idempotency (tenant_id, endpoint, idem_key, payload_hash, response_json, created_at_ms) "
        "VALUES (?, ?, ?, ?, ?, ?)"
    )

    # -- tenants
    SELECT_TENANT = (
        "SELECT tenant_id, name, status, parent_tenant_id, default_commit_overage_policy, default_reservation_ttl_ms, "
        "max_reservation_ttl_ms, max_reservation_extensions, metadata_json, created_at_ms, updated_at_ms "
        "FROM tenants WHERE tenant_id = ?"
    )
    SELECT_TENANTS = (
        "SELECT tenant_id, name, status, parent_tenant_id, default_commit_overage_policy, default_reservation_ttl_ms, "
        "max_reservation_ttl_ms, max_reservation_extensions, metadata_json, created_at_ms, updated_at_ms "
        "FROM tenants ORDER BY tenant_id"
    )
    INSERT_TENANT = (
        "INSERT INTO tenants (tenant_id, name, status, parent_tenant_id, default_commit_overage_policy, "
        "default_reservation_ttl_ms, max_reservation_ttl_ms, max_reservation_extensions, metadata_json, "
        "created_at_ms, updated_at_ms) VALUES (?, ?, 'ACTIVE', ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    UPDATE_TENANT = (
        "UPDATE tenants SET name = ?, status = ?, default_commit_overage_policy = ?, default_reservation_ttl_ms = ?, "
        "max_reservation_ttl_ms = ?, max_reservation_extensions = ?, metadata_json = ?, updated_at_ms = ? "
        "WHERE tenant_id = ?"
    )
    SELECT_TENANT_POLICY = (
        "SELECT status, default_commit_overage_policy, default_reservation_ttl_ms, max_reservation_ttl_ms, "
        "max_reservation_extensions FROM tenants WHERE tenant_id = ?"
    )
    SELECT_TENANT_STATUS = "SELECT status FROM tenants WHERE tenant_id = ?"

    # -- api keys
    INSERT_API_KEY = (
        "INSERT INTO api_keys (key_hash, key_id, tenant_id, name, key_prefix, permissions_json, status, "
        "created_at_ms, expires_at_ms) VALUES (?, ?, ?, ?, ?, ?, 'ACTIVE', ?, ?)"
    )
    SELECT_API_KEY = (
        "SELECT key_id, tenant_id, status, expires_at_ms, permissions_json FROM api_keys WHERE key_hash = ?"
    )
    SELECT_API_KEY_BY_ID = f"{_API_KEY_VIEW} WHERE key_id = ?"
    SELECT_API_KEYS = f"{_API_KEY_VIEW} ORDER BY created_at_ms DESC, key_id DESC"
    SELECT_API_KEYS_OF_TENANT = f"{_API_KEY_VIEW} WHERE tenant_id = ? ORDER BY created_at_ms DESC, key_id DESC"
    REVOKE_API_KEY = (
        "UPDATE api_keys SET status = 'REVOKED', revoked_at_ms = ?, revoked_reason = ? "
        "WHERE key_id = ? AND status = 'ACTIVE'"
    )

    # -- budgets
    SELECT_BUDGET = f"SELECT {_BUDGET_COLUMNS} FROM budgets WHERE scope = ? AND unit = ?"
    # One statement per number of derived scopes (1..6), so the placeholders are never built from input.
    SELECT_BUDGETS_IN_SCOPES = {
        n: f"SELECT {_BUDGET_COLUMNS} FROM budgets WHERE scope IN ({', '.join('?' * n)})" for n in range(1, 7)
    }
    SELECT_BUDGETS_FOR_TENANT_AFTER = (
        f"SELECT {_BUDGET_COLUMNS} FROM budgets WHERE tenant_id = ? AND (scope, unit) > (?, ?) "
        "ORDER BY scope, unit LIMIT ?"
    )
    SELECT_ALL_BUDGETS = f"SELECT {_BUDGET_COLUMNS} FROM budgets ORDER BY scope, unit"
    INSERT_BUDGET = (
        "INSERT INTO budgets (scope, unit, allocated, remaining, reserved, spent, debt, overdraft_limit, "
        "is_over_limit, status, commit_overage_policy, tenant_id, ledger_id, created_at_ms, updated_at_ms) "
        "VALUES (?, ?, ?, ?, 0, 0, 0, ?, 0, 'ACTIVE', ?, ?, ?, ?, ?)"
    )
    UPDATE_BUDGET_BALANCES = (
        "UPDATE budgets SET allocated = ?, remaining = ?, reserved = ?, spent = ?, debt = ?, is_over_limit = ?, "
        "updated_at_ms = ? WHERE scope = ? AND unit = ?"
    )
    UPDATE_BUDGET_STATUS = "UPDATE budgets SET status = ?, updated_at_ms = ? WHERE scope = ? AND unit = ?"
    UPDATE_BUDGET_SETTINGS = (
        "UPDATE budgets SET overdraft_limit = ?, commit_overage_policy = ?, is_over_limit = ?, updated_at_ms = ? "
        "WHERE scope = ? AND unit = ?"
    )

    # -- reservations
    SELECT_RESERVATION = f"SELECT {_RESERVATION_COLUMNS} FROM reservations WHERE reservation_id = ?"
    SELECT_RESERVATION_STATE = "SELECT state FROM reservations WHERE reservation_id = ?"
    RESERVATION_COLUMNS = _RESERVATION_COLUMNS
    INSERT_RESERVATION = (
        "INSERT INTO reservations (reservation_id, tenant_id, state, subject_json, action_json, unit, estimate, "
        "scope_path, affected_json, budgeted_json, created_at_ms, expires_at_ms, grace_ms, idempotency_key, "
        "overage_policy, metadata_json, extension_count, max_extensions) "
        "VALUES (?, ?, 'ACTIVE', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)"
    )
    FINALIZE_RESERVATION = (
        "UPDATE reservations SET state = ?, charged = ?, committed_metadata_json = ?, finalized_at_ms = ? "
        "WHERE reservation_id = ? AND state = 'ACTIVE'"
    )
    EXPIRE_RESERVATION = "UPDATE reservations SET state = 'EXPIRED' WHERE reservation_id = ? AND state = 'ACTIVE'"
    EXTEND_RESERVATION = (
        "UPDATE reservations SET expires_at_ms = ?, extension_count = extension_count + 1 "
        "WHERE reservation_id = ? AND state = 'ACTIVE'"
    )
    SELECT_DUE_RESERVATIONS = (
        "SELECT reservation_id, unit, estimate, budgeted_json FROM reservations "
        "WHERE state = 'ACTIVE' AND expires_at_ms + grace_ms < ? LIMIT ?"
    )
    SELECT_ACTIVE_HOLDS = "SELECT unit, estimate, budgeted_json FROM reservations WHERE state = 'ACTIVE'"

    # -- events
    INSERT_EVENT = (
        "INSERT INTO events (event_id, tenant_id, subject_json, action_json, unit, actual, charged, scope_path, "
        "idempotency_key, metadata_json, created_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )

    # -- policies (the UNIQUE (tenant_id, name) index also serves the per-tenant lookups)
    SELECT_POLICY = f"SELECT {_POLICY_COLUMNS} FROM policies WHERE policy_id = ?"
    SELECT_POLICY_BY_NAME = "SELECT policy_id FROM policies WHERE tenant_id = ? AND name = ?"
    SELECT_TENANT_POLICIES = f"SELECT {_POLICY_COLUMNS} FROM policies WHERE tenant_id = ?"
    SELECT_EVALUATED_POLICIES = (
        "SELECT policy_id, scope_pattern, priority, caps_json, commit_overage_policy, ttl_override_json, "
        "effective_from_ms, effective_until_ms, created_at_ms FROM policies WHERE tenant_id = ? AND status = 'ACTIVE' "
        "AND (caps_json IS NOT NULL OR commit_overage_policy IS NOT NULL OR ttl_override_json IS NOT NULL) "
        "ORDER BY priority DESC, created_at_ms, policy_id"  # evaluation order, so the Python sort finds it sorted
    )
    INSERT_POLICY = f"INSERT INTO policies ({_POLICY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, 'ACTIVE', ?, ?, ?, ?, ?, ?)"
    UPDATE_POLICY = (
        "UPDATE policies SET name = ?, description = ?, priority = ?, caps_json = ?, status = ?, "
        "effective_from_ms = ?, effective_until_ms = ?, updated_at_ms = ?, commit_overage_policy = ?, "
        "ttl_override_json = ? WHERE policy_id = ?"
    )
