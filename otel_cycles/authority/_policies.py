"""Policies as pure rules: scope patterns, body and `Caps` validation, and which policy decides each field.

No SQL and no clock here (`_policy_store` persists policies and calls `policy_effects` inside a reservation's
transaction), so every rule is unit-testable on plain values.

Scope patterns (`cycles-governance-admin-v0.1.25.yaml`, createPolicy "SCOPE PATTERNS"), matched against the
canonical (lowercased) scope path of the subject's deepest derived scope:

* `tenant:acme/workspace:eng` — exactly that scope.
* `tenant:acme/*` — every scope strictly below `tenant:acme` ("all descendant scopes"; not `tenant:acme` itself).
* `agent:*` — any scope whose last segment is an agent; `level:*` matches any value at that level. A pattern not
  anchored at `tenant:` floats: it is matched against the scope's tail (`agent:*` is `*/agent:*`).
* `*/agent:summarizer` — that agent under any ancestors; `*` alone matches every scope.

Segments follow the canonical level order (tenant, workspace, app, workflow, agent, toolset) and match contiguously
(`tenant:acme/agent:*` does not match `tenant:acme/workflow:w/agent:a`); `*` is only a whole leading or trailing
segment or a whole value. A policy only ever applies to its own tenant's scopes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any, NamedTuple

from otel_cycles.authority._errors import CyclesProtocolError, invalid
from otel_cycles.authority._validation import SUBJECT_LEVELS, check_commit_policy, reject_unknown

__all__ = [
    "POLICY_STATUSES",
    "EvaluatedPolicy",
    "PolicyEffects",
    "check_window",
    "emitted_caps",
    "parse_caps",
    "parse_pattern",
    "parse_policy_create",
    "parse_policy_update",
    "parse_ttl_override",
    "pattern_matches",
    "policy_effects",
    "winning_policy",
]

POLICY_STATUSES = ("ACTIVE", "DISABLED")
_VALUE_RE = re.compile(r"^[a-z0-9_.-]{1,128}$")
_INT64_MAX = 9_223_372_036_854_775_807
_MIN_MS = int(datetime(1, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)
_MAX_MS = int(datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc).timestamp() * 1000)
_CAP_INTS = ("max_tokens", "max_steps_remaining", "cooldown_ms")
_CAP_LISTS = ("tool_allowlist", "tool_denylist")
# The fields create and update both accept: exactly what `_fields` validates, so the two requests cannot drift apart
# on them. Create adds the policy's identity (owner, pattern), fixed once made; update adds its status.
_SHARED_FIELDS = frozenset(
    {
        "name",
        "description",
        "priority",
        "caps",
        "commit_overage_policy",
        "reservation_ttl_override",
        "rate_limits",
        "effective_from",
        "effective_until",
    }
)
_CREATE_FIELDS = _SHARED_FIELDS | {"tenant_id", "scope_pattern"}
_UPDATE_FIELDS = _SHARED_FIELDS | {"status"}
_TTL_BOUNDS = {
    "default_ttl_ms": (1000, 86_400_000),
    "max_ttl_ms": (1000, 86_400_000),
    "max_extensions": (0, _INT64_MAX),
}


def parse_pattern(value: Any, owner: str | None) -> str:
    """Validate a `scope_pattern` for tenant `owner`'s policy and return it canonical (values lowercased).

    Raises:
        CyclesProtocolError: 400 for a malformed pattern, 403 when it is anchored at a tenant other than `owner`
            (not checked when `owner` is None, e.g. for a list filter, which then simply matches nothing).
    """
    if not isinstance(value, str) or not value:
        raise invalid("scope_pattern must be a non-empty string")
    if value == "*":
        return value
    parts = value.split("/")
    lead = parts[0] == "*"
    trail = len(parts) > 1 and parts[-1] == "*"
    body = parts[int(lead) : len(parts) - int(trail)]
    if not body:
        raise invalid("scope_pattern must name at least one level:value segment besides '*'")
    out: list[str] = []
    last = -1
    for part in body:
        level, sep, raw = part.partition(":")
        val = raw.lower()
        if not sep or level not in SUBJECT_LEVELS or not (val == "*" or _VALUE_RE.match(val)):
            raise invalid(
                f"scope_pattern segment {part!r} must be level:value or level:* "
                f"(levels {', '.join(SUBJECT_LEVELS)}), or a leading/trailing '*'"
            )
        index = SUBJECT_LEVELS.index(level)
        if index <= last:
            raise invalid("scope_pattern levels must follow tenant/workspace/app/workflow/agent/toolset order")
        last = index
        out.append(f"{level}:{val}")
    if out[0].startswith("tenant:"):
        if lead:
            raise invalid("scope_pattern cannot have '*' before the tenant segment")
        if owner is not None and out[0] not in ("tenant:*", f"tenant:{owner}"):
            raise CyclesProtocolError(403, "FORBIDDEN", "scope_pattern names another tenant")
    return "/".join((["*"] if lead else []) + out + (["*"] if trail else []))


def pattern_matches(pattern: str, scope: str) -> bool:
    """Return whether canonical `pattern` (from `parse_pattern`) matches canonical scope path `scope`."""
    if pattern == "*":
        return True
    parts = pattern.split("/")
    trail = parts[-1] == "*" and len(parts) > 1
    if trail:
        parts = parts[:-1]
    if parts[0] == "*":
        parts = parts[1:]
    segments = scope.split("/")
    if parts[0].startswith("tenant:"):
        start = 0
    else:  # floating: the first pattern level fixes where the run starts (levels are strictly ordered)
        level = parts[0].partition(":")[0]
        start = next((i for i, seg in enumerate(segments) if seg.partition(":")[0] == level), -1)
        if start < 1:
            return False
    end = start + len(parts)
    if end > len(segments) or (end < len(segments)) != trail:
        return False
    for want, seg in zip(parts, segments[start:end], strict=True):
        want_level, _, want_value = want.partition(":")
        level, _, value = seg.partition(":")
        if level != want_level or (want_value != "*" and want_value != value):
            return False
    return True


def parse_caps(value: Any) -> dict[str, Any]:
    """Validate a `Caps` object (`additionalProperties: false`, non-negative integers, tool-name lists)."""
    if not isinstance(value, dict):
        raise invalid("caps must be a JSON object")
    reject_unknown(value, frozenset(_CAP_INTS + _CAP_LISTS))
    out: dict[str, Any] = {}
    for name in _CAP_INTS:
        if name in value:
            n = value[name]
            if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= _INT64_MAX:
                raise invalid(f"caps.{name} must be a non-negative integer")
            out[name] = n
    for name in _CAP_LISTS:
        if name in value:
            tools = value[name]
            if not isinstance(tools, list) or not all(isinstance(t, str) and len(t) <= 256 for t in tools):
                raise invalid(f"caps.{name} must be an array of strings of at most 256 characters")
            out[name] = list(tools)
    return out


def emitted_caps(caps: dict[str, Any]) -> dict[str, Any] | None:
    """The `caps` a decision carries for a policy's stored caps; None when nothing constrains (plain ALLOW).

    Empty tool lists are dropped: the spec reads an empty list as "no restriction", while runcycles'
    `Caps.is_tool_allowed` reads an empty allowlist as "no tool allowed".
    """
    out = {k: v for k, v in caps.items() if not (k in _CAP_LISTS and not v)}
    return out or None


def _name(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 256:
        raise invalid("name must be a string of 1-256 characters")
    return value


def _timestamp(value: Any, field: str) -> int:
    if not isinstance(value, str):
        raise invalid(f"{field} must be an RFC 3339 date-time string")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise invalid(f"{field} must be an RFC 3339 date-time") from None
    if parsed.tzinfo is None:
        raise invalid(f"{field} must carry a time-zone offset (e.g. Z)")
    ms = int(parsed.timestamp() * 1000)
    if not _MIN_MS <= ms <= _MAX_MS:  # an offset can push year 1 or 9999 out of what a response can render
        raise invalid(f"{field} must lie between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z")
    return ms


def parse_ttl_override(value: Any) -> dict[str, int]:
    """Validate a `ReservationTtlOverride` (bounds of the `Policy` schema, so every response validates)."""
    if not isinstance(value, dict):
        raise invalid("reservation_ttl_override must be a JSON object")
    reject_unknown(value, frozenset(_TTL_BOUNDS))
    out: dict[str, int] = {}
    for name, (lo, hi) in _TTL_BOUNDS.items():
        if name in value:
            n = value[name]
            if not isinstance(n, int) or isinstance(n, bool) or not lo <= n <= hi:
                raise invalid(f"reservation_ttl_override.{name} must be an integer between {lo} and {hi}")
            out[name] = n
    return out


def _fields(body: dict[str, Any]) -> dict[str, Any]:
    """Validate `_SHARED_FIELDS` (those create and update share); returns them normalized (timestamps in epoch ms)."""
    if "rate_limits" in body:  # refused rather than stored and silently not enforced
        raise invalid("rate_limits is not supported by the embedded authority")
    out: dict[str, Any] = {}
    if "name" in body:
        out["name"] = _name(body["name"])
    if "description" in body:
        desc = body["description"]
        if not isinstance(desc, str) or len(desc) > 1024:
            raise invalid("description must be a string of at most 1024 characters")
        out["description"] = desc
    if "priority" in body:
        priority = body["priority"]
        if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= _INT64_MAX:
            raise invalid("priority must be a non-negative integer")
        out["priority"] = priority
    if "caps" in body:
        out["caps"] = parse_caps(body["caps"])
    if "commit_overage_policy" in body:
        check_commit_policy(body["commit_overage_policy"], "commit_overage_policy")
        out["commit_overage_policy"] = body["commit_overage_policy"]
    if "reservation_ttl_override" in body:
        out["reservation_ttl_override"] = parse_ttl_override(body["reservation_ttl_override"])
    for field in ("effective_from", "effective_until"):
        if field in body:
            out[field] = _timestamp(body[field], field)
    return out


def parse_policy_create(body: dict[str, Any]) -> dict[str, Any]:
    """Validate a `PolicyCreateRequest` (all but the pattern, which needs the owning tenant: see `parse_pattern`)."""
    reject_unknown(body, _CREATE_FIELDS)
    for field in ("name", "scope_pattern"):
        if field not in body:
            raise invalid(f"{field} is required")
    out = _fields(body)
    out.setdefault("priority", 0)
    check_window(out.get("effective_from"), out.get("effective_until"))
    return out


def parse_policy_update(body: dict[str, Any]) -> dict[str, Any]:
    """Validate an updatePolicy body (the window is re-checked against the stored policy by the caller)."""
    reject_unknown(body, _UPDATE_FIELDS)
    out = _fields(body)
    if "status" in body:
        if body["status"] not in POLICY_STATUSES:
            raise invalid(f"status must be one of {', '.join(POLICY_STATUSES)}")
        out["status"] = body["status"]
    return out


def check_window(effective_from: int | None, effective_until: int | None) -> None:
    """Reject an effective window that ends before (or when) it starts."""
    if effective_from is not None and effective_until is not None and effective_until <= effective_from:
        raise invalid("effective_until must be after effective_from")


class EvaluatedPolicy(NamedTuple):
    """What evaluation needs of one ACTIVE policy (a row of `SELECT_EVALUATED_POLICIES`; JSON stays unparsed until
    the policy wins)."""

    policy_id: str
    scope_pattern: str
    priority: int
    caps_json: str | None
    commit_overage_policy: str | None
    ttl_override_json: str | None
    effective_from: int | None
    effective_until: int | None
    created_at: int


class PolicyEffects(NamedTuple):
    """What the policies matching a scope do to a decision; each field comes from its own winning policy."""

    caps: dict[str, Any] | None
    """The `caps` of an allowed decision; None for a plain ALLOW."""
    commit_overage_policy: str | None
    """Overrides the tenant's and the budget's default overage policy (a request's own still wins)."""
    ttl_override: dict[str, int]
    """`default_ttl_ms`, `max_ttl_ms`, `max_extensions` for new reservations (empty when no policy sets them)."""


def winning_policy(policies: Iterable[EvaluatedPolicy], scope: str, now: int) -> EvaluatedPolicy | None:
    """The policy that applies to `scope` at `now`, or None.

    Among the policies in effect (`effective_from <= now < effective_until`) whose pattern matches `scope`, the
    highest `priority` wins; ties go to the oldest policy, then the smaller id, so adding a policy at an equal
    priority never silently overrides an existing one.
    """
    for policy in sorted(policies, key=lambda p: (-p.priority, p.created_at, p.policy_id)):
        if policy.effective_from is not None and now < policy.effective_from:
            continue
        if policy.effective_until is not None and now >= policy.effective_until:
            continue
        if pattern_matches(policy.scope_pattern, scope):
            return policy
    return None


def policy_effects(policies: list[EvaluatedPolicy], scope: str, now: int) -> PolicyEffects:
    """Resolve each policy field for `scope` at `now` from the winning policy among those that set it.

    A field applies whole from its winner (caps are never merged across policies), and a policy that does not set a
    field never hides a lower-priority one that does.
    """
    caps = winning_policy((p for p in policies if p.caps_json is not None), scope, now)
    overage = winning_policy((p for p in policies if p.commit_overage_policy is not None), scope, now)
    ttl = winning_policy((p for p in policies if p.ttl_override_json is not None), scope, now)
    return PolicyEffects(
        None if caps is None or caps.caps_json is None else emitted_caps(json.loads(caps.caps_json)),
        None if overage is None else overage.commit_overage_policy,
        {} if ttl is None or ttl.ttl_override_json is None else json.loads(ttl.ttl_override_json),
    )
