"""Helpers shared by the reliability tests: governed-span accounting and metric sums."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def governed(spans: InMemorySpanExporter) -> list[Any]:
    return [s for s in spans.get_finished_spans() if (s.attributes or {}).get("cycles.action.kind")]


def committed(spans: InMemorySpanExporter) -> int:
    """What the governed spans say was committed: the priced (or estimated) actual of every non-released call."""
    return sum(
        int(s.attributes["cycles.actual.amount"])
        for s in governed(spans)
        if "cycles.actual.amount" in s.attributes and not s.attributes.get("cycles.released")
    )


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
