"""The schemathesis harness shared by `test_fuzz_openapi.py` (runtime API) and `test_fuzz_policies.py` (admin
policies): fuzz every operation of an OpenAPI document against a running authority and collect what went wrong, so
both tests fuzz, call and judge responses the same way and differ only in the document, credentials and sample size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from schemathesis import checks as st_checks

# Why each check is left out: the module docstring of test_fuzz_openapi.py (RELIABILITY.md points there).
EXCLUDED = {
    "negative_data_rejection",
    "positive_data_acceptance",
    "use_after_free",
    "ensure_resource_availability",
    "missing_required_header",
    "ignored_auth",
}


@dataclass
class FuzzRun:
    """What one run saw: how many operations it fuzzed, responses by status, and every failure (5xx or a response
    that violates the document), collected so one run reports every violating operation."""

    operations: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def fuzz_document(
    spec: Path,
    base_url: str,
    headers: dict[str, str],
    *,
    max_examples: int,
    seed_value: int,
    drop_generated_api_key: bool = False,
) -> FuzzRun:
    """Fuzz every operation of the OpenAPI document `spec` against `base_url` with `headers` on every call.

    Args:
        max_examples: Hypothesis examples per operation (no example database).
        seed_value: Hypothesis seed, so every run draws the same examples. A caller's seed is what `derandomize`
            derived (from the hashed source of the test's own fuzz function) before this harness was shared, so
            each test still runs exactly the examples it always has; a fixed seed also keeps later edits of this
            module from silently redrawing them.
        drop_generated_api_key: Remove an `X-Cycles-API-Key` that schemathesis generated into a case, for calls
            that authenticate with another scheme (that header would take precedence over it).
    """
    schema = schemathesis.openapi.from_path(spec)
    selected: list[Any] = [c for c in st_checks.CHECKS.get_all() if c.__name__ not in EXCLUDED]
    run = FuzzRun()
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]
        run.operations += 1

        @given(case=operation.as_strategy())
        @seed(seed_value)
        @settings(max_examples=max_examples, deadline=None, suppress_health_check=list(HealthCheck),
                  derandomize=True, database=None)  # fmt: skip
        def fuzz(case: schemathesis.Case[Any]) -> None:
            if drop_generated_api_key and case.headers:
                case.headers.pop("X-Cycles-API-Key", None)
            response = case.call(base_url=base_url, headers=headers, timeout=10)
            run.statuses[response.status_code] = run.statuses.get(response.status_code, 0) + 1
            if response.status_code >= 500:
                run.failures.append(f"{case.method} {case.path}: {response.status_code} {response.text[:300]}")
                return
            try:
                case.validate_response(response, checks=selected)
            except Exception as exc:  # collect, so one run reports every violating operation
                run.failures.append(f"{case.method} {case.formatted_path}: {str(exc)[:600]}")

        fuzz()
    return run
