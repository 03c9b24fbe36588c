"""Fuzz the authority's runtime API from the Cycles v0 OpenAPI document with schemathesis (bounded examples):
no 5xx, no response that violates the document (minus the exclusions below), and the ledger invariant holds after.

Excluded checks and why:
* `negative_data_rejection` / `positive_data_acceptance`: the authority validates the protocol's *semantic* rules
  too (e.g. a subject needs a standard field, amounts within int64, ids in the reservation namespace), so it
  rejects some schema-valid requests (400/404/409) and the document cannot express those rules.
* `use_after_free` / `ensure_resource_availability`: stateful link checks that assume CRUD resources; a finalized
  reservation legitimately stays readable (GET returns it with its final status).
* `missing_required_header`/`ignored_auth`: authentication is checked separately (test_security.py), and
  schemathesis sends our valid key on every case.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_cycles.authority import LocalAuthority

from .schemathesis_fuzz import fuzz_document

# A byte-identical copy of shared/reference/cycles-protocol-v0.yaml (Cycles protocol v0, info.version 0.1.25.16).
SPEC = Path(__file__).with_name("cycles-protocol-v0.yaml")
# The examples this test has always drawn (see `fuzz_document`).
SEED = 0x3E648B092EEAC79C40CEF2C93EABF5E4C43A342C0BCAFDB5341C0FDC2A87AB25CC8FE160ACB952010D84E0BE8B525F26


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[tuple[LocalAuthority, str]]:
    with LocalAuthority(sweep_interval_s=0.5) as authority:
        authority.create_tenant("acme")
        key = authority.create_api_key("acme")
        authority.create_budget("tenant:acme", 10**12)
        yield authority, key
        assert authority.check_invariants() == []


def test_runtime_api_conforms_to_the_document(fuzzed) -> None:
    authority, key = fuzzed
    run = fuzz_document(SPEC, authority.base_url, {"X-Cycles-API-Key": key}, max_examples=25, seed_value=SEED)
    operations, statuses, failures = run.operations, run.statuses, run.failures
    assert operations >= 10
    assert sum(statuses.values()) >= 10 * operations, statuses
    assert any(200 <= status < 300 for status in statuses), statuses  # not only rejections
    print(f"fuzzed {operations} operations: responses by status {dict(sorted(statuses.items()))}")
    assert failures == [], "\n".join(sorted(set(failures))[:20])
