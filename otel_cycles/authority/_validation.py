"""Hand-written validators for request bodies and query strings (faster than pydantic, spec-shaped messages).

Each `parse_*` function takes decoded JSON and returns a normalized plain dict, or raises a 400
`CyclesProtocolError` naming the offending field. Unknown keys are rejected (`additionalProperties: false`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from otel_cycles.authority._errors import invalid

__all__ = [
    "OVERAGE_POLICIES",
    "SUBJECT_LEVELS",
    "UNITS",
    "check_commit_policy",
    "parse_action",
    "parse_amount",
    "parse_commit",
    "parse_decide",
    "parse_event",
    "parse_extend",
    "parse_iso_ms",
    "parse_release",
    "parse_reserve",
    "parse_subject",
    "reject_unknown",
]

# Enumerations are tuples, not sets: `x in tuple` compares by equality, so an unhashable JSON value (a list, an
# object) is simply not a member instead of raising TypeError.
UNITS = ("USD_MICROCENTS", "TOKENS", "CREDITS", "RISK_POINTS")
OVERAGE_POLICIES = ("REJECT", "ALLOW_IF_AVAILABLE", "ALLOW_WITH_OVERDRAFT")
SUBJECT_LEVELS = ("tenant", "workspace", "app", "workflow", "agent", "toolset")
_SUBJECT_KEYS = frozenset((*SUBJECT_LEVELS, "dimensions"))
_SEGMENT_RE = re.compile(r"^[a-zA-Z0-9_.-]+$")
_INT64_MAX = 9_223_372_036_854_775_807


def _obj(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(f"{name} must be a JSON object")
    return value


def reject_unknown(body: dict[str, Any], allowed: frozenset[str]) -> None:
    """Reject an admin request body with fields outside `allowed` (400, naming them)."""
    extra = set(body) - allowed
    if extra:
        raise invalid(f"unknown field(s): {', '.join(sorted(extra))}")


def check_commit_policy(value: Any, name: str) -> None:
    """Reject `value` unless it is a `CommitOveragePolicy` (compared by equality, so any JSON value is safe)."""
    if value not in OVERAGE_POLICIES:
        raise invalid(f"{name} is not a CommitOveragePolicy")


def _check_keys(value: dict[str, Any], allowed: Iterable[str], required: Iterable[str], name: str) -> None:
    for key in required:
        if key not in value:
            raise invalid(f"{name}.{key} is required" if name != "body" else f"{key} is required")
    extra = value.keys() - set(allowed)
    if extra:
        raise invalid(f"unknown field(s) in {name}: {', '.join(sorted(extra))}")


def _int(value: Any, name: str, lo: int = 0, hi: int = _INT64_MAX) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise invalid(f"{name} must be an integer")
    if value < lo or value > hi:
        raise invalid(f"{name} must be between {lo} and {hi}")
    return value


def _str(value: Any, name: str, max_len: int, min_len: int = 0) -> str:
    if not isinstance(value, str):
        raise invalid(f"{name} must be a string")
    if len(value) > max_len or len(value) < min_len:
        raise invalid(f"{name} length must be between {min_len} and {max_len}")
    return value


def _idem(body: dict[str, Any]) -> str:
    return _str(body.get("idempotency_key"), "idempotency_key", 256, 1)


def _metadata(body: dict[str, Any]) -> dict[str, Any] | None:
    value = body.get("metadata")
    if value is None and "metadata" not in body:
        return None
    return _obj(value, "metadata")


def parse_amount(value: Any, name: str) -> dict[str, Any]:
    """Validate an `Amount` (`unit`, non-negative int64 `amount`)."""
    amount = _obj(value, name)
    _check_keys(amount, ("unit", "amount"), ("unit", "amount"), name)
    unit = amount["unit"]
    if unit not in UNITS:
        raise invalid(f"{name}.unit must be one of {', '.join(sorted(UNITS))}")
    return {"unit": unit, "amount": _int(amount["amount"], f"{name}.amount")}


def parse_subject(value: Any) -> dict[str, Any]:
    """Validate a `Subject`; at least one standard field, values matching `^[a-zA-Z0-9_.-]+$`."""
    subject = _obj(value, "subject")
    extra = subject.keys() - _SUBJECT_KEYS
    if extra:
        raise invalid(f"unknown field(s) in subject: {', '.join(sorted(extra))}")
    out: dict[str, Any] = {}
    for level in SUBJECT_LEVELS:
        if level in subject:
            seg = _str(subject[level], f"subject.{level}", 128, 1)
            if not _SEGMENT_RE.match(seg):
                raise invalid(f"subject.{level} must match ^[a-zA-Z0-9_.-]+$")
            out[level] = seg
    if not out:
        raise invalid(
            "subject must contain at least one standard field (tenant, workspace, app, workflow, agent, toolset)"
        )
    if "dimensions" in subject:
        dims = _obj(subject["dimensions"], "subject.dimensions")
        if len(dims) > 16:
            raise invalid("subject.dimensions must have at most 16 entries")
        for key, dim in dims.items():
            _str(dim, f"subject.dimensions.{key}", 256)
        out["dimensions"] = dims
    return out


def parse_action(value: Any) -> dict[str, Any]:
    """Validate an `Action` (`kind`, `name`, optional `tags`)."""
    action = _obj(value, "action")
    _check_keys(action, ("kind", "name", "tags"), ("kind", "name"), "action")
    out: dict[str, Any] = {
        "kind": _str(action["kind"], "action.kind", 64),
        "name": _str(action["name"], "action.name", 256),
    }
    if "tags" in action:
        tags = action["tags"]
        if not isinstance(tags, list) or len(tags) > 10:
            raise invalid("action.tags must be an array of at most 10 strings")
        out["tags"] = [_str(tag, "action.tags[]", 64) for tag in tags]
    return out


def _metrics(value: Any) -> dict[str, Any]:
    metrics = _obj(value, "metrics")
    _check_keys(metrics, ("tokens_input", "tokens_output", "latency_ms", "model_version", "custom"), (), "metrics")
    for key in ("tokens_input", "tokens_output", "latency_ms"):
        if key in metrics:
            _int(metrics[key], f"metrics.{key}")
    if "model_version" in metrics:
        _str(metrics["model_version"], "metrics.model_version", 128)
    if "custom" in metrics:
        _obj(metrics["custom"], "metrics.custom")
    return metrics


def _policy(body: dict[str, Any]) -> str | None:
    if "overage_policy" not in body:
        return None
    policy = body["overage_policy"]
    if policy not in OVERAGE_POLICIES:
        raise invalid(f"overage_policy must be one of {', '.join(sorted(OVERAGE_POLICIES))}")
    return str(policy)


def _subject_request(body: dict[str, Any], amount_field: str) -> dict[str, Any]:
    """Validate the fields a reserve, decide or event body opens with: key, subject, action and its amount."""
    return {
        "idempotency_key": _idem(body),
        "subject": parse_subject(body["subject"]),
        "action": parse_action(body["action"]),
        amount_field: parse_amount(body[amount_field], amount_field),
    }


_RESERVE_KEYS = (
    "idempotency_key",
    "subject",
    "action",
    "estimate",
    "ttl_ms",
    "grace_period_ms",
    "overage_policy",
    "dry_run",
    "metadata",
)


def parse_reserve(value: Any) -> dict[str, Any]:
    """Validate a `ReservationCreateRequest`; defaults are left as `None` for the ledger to resolve."""
    body = _obj(value, "body")
    _check_keys(body, _RESERVE_KEYS, ("idempotency_key", "subject", "action", "estimate"), "body")
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise invalid("dry_run must be a boolean")
    ttl = body.get("ttl_ms")
    grace = body.get("grace_period_ms")
    return {
        **_subject_request(body, "estimate"),
        "ttl_ms": None if ttl is None else _int(ttl, "ttl_ms", 1000, 86_400_000),
        "grace_period_ms": None if grace is None else _int(grace, "grace_period_ms", 0, 60_000),
        "overage_policy": _policy(body),
        "dry_run": dry_run,
        "metadata": _metadata(body),
    }


def parse_decide(value: Any) -> dict[str, Any]:
    """Validate a `DecisionRequest`."""
    body = _obj(value, "body")
    keys = ("idempotency_key", "subject", "action", "estimate", "metadata")
    _check_keys(body, keys, keys[:4], "body")
    return {**_subject_request(body, "estimate"), "metadata": _metadata(body)}


def parse_commit(value: Any) -> dict[str, Any]:
    """Validate a `CommitRequest`."""
    body = _obj(value, "body")
    _check_keys(body, ("idempotency_key", "actual", "metrics", "metadata"), ("idempotency_key", "actual"), "body")
    return {
        "idempotency_key": _idem(body),
        "actual": parse_amount(body["actual"], "actual"),
        "metrics": _metrics(body["metrics"]) if "metrics" in body else None,
        "metadata": _metadata(body),
    }


def parse_release(value: Any) -> dict[str, Any]:
    """Validate a `ReleaseRequest`."""
    body = _obj(value, "body")
    _check_keys(body, ("idempotency_key", "reason"), ("idempotency_key",), "body")
    reason = body.get("reason")
    return {"idempotency_key": _idem(body), "reason": None if reason is None else _str(reason, "reason", 256)}


def parse_extend(value: Any) -> dict[str, Any]:
    """Validate a `ReservationExtendRequest`."""
    body = _obj(value, "body")
    _check_keys(body, ("idempotency_key", "extend_by_ms", "metadata"), ("idempotency_key", "extend_by_ms"), "body")
    return {
        "idempotency_key": _idem(body),
        "extend_by_ms": _int(body["extend_by_ms"], "extend_by_ms", 1, 86_400_000),
        "metadata": _metadata(body),
    }


def parse_event(value: Any) -> dict[str, Any]:
    """Validate an `EventCreateRequest`."""
    body = _obj(value, "body")
    keys = (
        "idempotency_key",
        "subject",
        "action",
        "actual",
        "overage_policy",
        "metrics",
        "client_time_ms",
        "metadata",
    )
    _check_keys(body, keys, keys[:4], "body")
    if "client_time_ms" in body:
        _int(body["client_time_ms"], "client_time_ms")
    return {
        **_subject_request(body, "actual"),
        "overage_policy": _policy(body),
        "metrics": _metrics(body["metrics"]) if "metrics" in body else None,
        "metadata": _metadata(body),
    }


def parse_iso_ms(value: str, name: str) -> int | None:
    """Parse an ISO-8601 date-time query bound to epoch ms; blank means unset (spec: MUST NOT 400 on blank)."""
    if not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise invalid(f"{name} must be an ISO-8601 date-time") from None
    if parsed.tzinfo is None:
        raise invalid(f"{name} must carry a time-zone offset (e.g. Z)")
    return int(parsed.timestamp() * 1000)
