"""Fuzz the admin plane's policy operations from the admin OpenAPI document (its Policies extract) with schemathesis,
under both auth modes: no 5xx and no response that violates the document (the same exclusions, for the same reasons,
as `test_fuzz_openapi.py`). The tenant is named like the document's examples, so the example bodies succeed (201).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from otel_cycles.authority import LocalAuthority

from .schemathesis_fuzz import fuzz_document

SPEC = Path(__file__).with_name("cycles-admin-policies.yaml")
TENANT = "acme-corp"
# The examples this test has always drawn (see `fuzz_document`); in admin mode they include a single 2xx.
SEED = 0x1EE99643620967C5A5F3AD474A5AA33EF089CB0973EB9049DA5E91422A123ABC51D83C68E91696380AA370919D746DD4


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
    # A generated X-Cycles-API-Key would take precedence over the admin header, so it is dropped from every case.
    run = fuzz_document(
        SPEC, authority.base_url, headers[auth], max_examples=40, seed_value=SEED, drop_generated_api_key=True
    )
    operations, statuses, failures = run.operations, run.statuses, run.failures
    assert operations == 3
    assert sum(statuses.values()) >= 10 * operations, statuses
    assert any(200 <= status < 300 for status in statuses), statuses  # not only rejections
    print(f"fuzzed {operations} policy operations ({auth}): responses by status {dict(sorted(statuses.items()))}")
    assert failures == [], "\n".join(sorted(set(failures))[:20])
