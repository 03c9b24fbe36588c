"""Checks of the Cycles connection settings, made when a callback is built so a mistake fails before any agent runs.

A missing tenant used to fall back to `"default"` and fail on the first call with a 403 about a tenant mismatch; a
base URL without a scheme (`127.0.0.1:7878`) was reported as an unreachable authority. Both are configuration errors,
reported at construction in one line that says what to set.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from otel_cycles.errors import ConfigurationError

__all__ = ["check_base_url", "required_tenant"]


def required_tenant(tenant: str | None) -> str:
    """`tenant`, or `ConfigurationError` if it is unset or blank."""
    if tenant is None or not tenant.strip():
        raise ConfigurationError("tenant required: pass tenant=... to CyclesBudgetCallback or set CYCLES_TENANT")
    return tenant


def check_base_url(base_url: str) -> None:
    """`ConfigurationError` unless `base_url` is an absolute http(s) URL with a host."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"CYCLES_BASE_URL {base_url!r} is not a URL: include the scheme and host, e.g. http://127.0.0.1:7878"
        )
