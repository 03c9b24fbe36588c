"""Fuzz the admin plane's policy operations from the admin OpenAPI document (its Policies extract) with schemathesis,
under both auth modes: no 5xx and no response that violates the document (the same exclusions, for the same reasons,
as `test_fuzz_openapi.py`). The tenant is named like the document's examples, so the example bodies succeed (201).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks as st_checks

from otel_cycles.authority import LocalAuthority

from .test_fuzz_openapi import EXCLUDED

SPEC = Path(__file__).with_name("cycles-admin-policies.yaml")
TENANT = "acme-corp"


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[tuple[LocalAuthority, dict[str, dict[str, str]]]]:
    with LocalAuthority(sweep_interval_s=0.5) as authority:
        authority.create_tenant(TENANT)
        authority.create_budget(f"tenant:{TENANT}", 10**9)
        key = authority.create_api_key(TENANT, permissions=["policies:read", "policies:write"])
        yield authority, {"tenant": {"X-Cycles-API-Key": key}, "admin": {"X-Admin-API-Key": authority.admin_key}}
        assert authority.check_invariants() == []


@pytest.mark.parametrize("auth", ["tenant", "admin"])
def test_policy_api_conforms_to_the_document(fuzzed: Any, auth: str) -> None:
    authority, headers = fuzzed
    schema = schemathesis.openapi.from_path(SPEC)
    selected: list[Any] = [c for c in st_checks.CHECKS.get_all() if c.__name__ not in EXCLUDED]
    failures: list[str] = []
    statuses: dict[int, int] = {}
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)  # fmt: skip
        def fuzz(case: schemathesis.Case[Any]) -> None:
            if case.headers:  # drop a generated credential: the other scheme's header would take precedence
                case.headers.pop("X-Cycles-API-Key", None)
            response = case.call(base_url=authority.base_url, headers=headers[auth], timeout=10)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.path}: {response.status_code} {response.text[:300]}")
                return
            try:
                case.validate_response(response, checks=selected)
            except Exception as exc:  # collect, so one run reports every violating operation
                failures.append(f"{case.method} {case.formatted_path}: {str(exc)[:600]}")

        fuzz()
    assert operations == 3
    assert sum(statuses.values()) >= 10 * operations, statuses
    assert any(200 <= status < 300 for status in statuses), statuses  # not only rejections
    print(f"fuzzed {operations} policy operations ({auth}): responses by status {dict(sorted(statuses.items()))}")
    assert failures == [], "\n".join(sorted(set(failures))[:20])
