"""Helpers shared by the reliability tests: the expected spend of a run (priced by the oracle), metric sums and
journal writes."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from runcycles import journal

from tests.oracle import DEFAULT_TOOL_COST, Oracle

ORACLE = Oracle(tool_costs={"search_web": DEFAULT_TOOL_COST})
"""The reliability tests' agents: gpt-4o on the scripted model, with `search_web` at the default tool cost."""


def governed(spans: InMemorySpanExporter) -> list[Any]:
    return [s for s in spans.get_finished_spans() if (s.attributes or {}).get("cycles.action.kind")]


def expected_spend(spans: InMemorySpanExporter, oracle: Oracle = ORACLE) -> int:
    """What the run's governed calls should have cost, priced independently (`tests.oracle`), never the amounts
    otel-cycles stamped on the spans."""
    return oracle.spent(governed(spans))


def metric_sum(reader: InMemoryMetricReader, name: str, **match: Any) -> float:
    """Sum of a counter's cumulative data points whose attributes contain `match`."""
    data = reader.get_metrics_data()
    total = 0.0
    if data is None:
        return total
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != name:
                    continue
                for point in metric.data.data_points:
                    attributes = dict(point.attributes or {})
                    if all(attributes.get(k) == v for k, v in match.items()):
                        total += point.value  # type: ignore[union-attr]
    return total


def count_journal_writes(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Journal writes per reservation id from now on, for the rest of the test: every write runcycles' journal does
    goes through `CommitJournal.record` (first attempts, retries, events)."""
    written: Counter[str] = Counter()
    record = journal.CommitJournal.record

    def counting(self: Any, entry: Any) -> None:
        written[entry.reservation_id] += 1
        record(self, entry)

    monkeypatch.setattr(journal.CommitJournal, "record", counting)
    return written
