"""The three ways to run otel-cycles, each a line or two for the user.

1. **Attach** to an existing OpenTelemetry setup: `attach()` adds a `CyclesSpanProcessor` to your SDK
   `TracerProvider` (default: the global one AnyAgent uses). Your exporters keep working, wherever they sit in the
   processor list; governed spans carry the cost and budget attributes.
2. **Export**: `configure_export()` sets up OTLP export of traces and metrics (honouring the standard
   `OTEL_EXPORTER_OTLP_*` variables), e.g. to the collector in `collector/`.
3. **Callback-only**: do nothing. `CyclesBudgetCallback` attaches a processor by itself; nothing is exported but
   every call is still reserved and committed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from otel_cycles.processor import CyclesSpanProcessor, ensure_processor
from otel_cycles.redaction import ContentFilterSpanProcessor

__all__ = ["DEFAULT_SERVICE_NAME", "ExportSetup", "attach", "configure_export"]

logger = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "otel-cycles"
"""`service.name` that `configure_export` gives an application nothing else named."""


def _sdk_provider(tracer_provider: trace.TracerProvider | None) -> TracerProvider:
    provider = tracer_provider or trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        raise TypeError(
            f"otel-cycles needs an OpenTelemetry SDK TracerProvider, got {type(provider).__name__}; "
            "AnyAgent installs one on import unless another provider was set first"
        )
    return provider


def attach(tracer_provider: trace.TracerProvider | None = None) -> CyclesSpanProcessor:
    """Mode 1: make sure `tracer_provider` (default: the global one) has a CyclesSpanProcessor; return it.

    Idempotent: a provider never gets two. Add your own exporter processors before or after; both work.
    """
    provider = _sdk_provider(tracer_provider)
    processor = ensure_processor(provider)
    assert processor is not None  # _sdk_provider guarantees an SDK provider
    return processor


class _CountingExporter(SpanExporter):
    """Passes spans on to `exporter` and counts the batches it could not deliver (see `ExportSetup.delivered`)."""

    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter = exporter
        self.failed = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.exporter.export(spans)
        if result is not SpanExportResult.SUCCESS:
            self.failed += 1
        return result

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.exporter.force_flush(timeout_millis)


@dataclass
class ExportSetup:
    """What `configure_export` installed; `shutdown()` flushes and stops it."""

    tracer_provider: TracerProvider
    span_processor: BatchSpanProcessor
    cycles_processor: CyclesSpanProcessor
    meter_provider: MeterProvider | None
    _exporter: _CountingExporter | None = None

    def delivered(self) -> bool:
        """False if any batch of spans could not be exported so far (e.g. nothing listens at the endpoint)."""
        return self._exporter is None or self._exporter.failed == 0

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        ok = self.cycles_processor.force_flush(timeout_millis)
        ok = self.span_processor.force_flush(timeout_millis) and ok
        if self.meter_provider is not None:
            ok = self.meter_provider.force_flush(timeout_millis) and ok
        return ok

    def shutdown(self) -> bool:
        """Flush and stop the export; True if every span batch was delivered."""
        self.force_flush()
        self.span_processor.shutdown()  # type: ignore[no-untyped-call]
        if self.meter_provider is not None:
            self.meter_provider.shutdown()
        return self.delivered()


def _otlp_exporters(endpoint: str | None, protocol: str) -> tuple[SpanExporter, object]:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

        return GrpcSpanExporter(endpoint=endpoint), GrpcMetricExporter(endpoint=endpoint)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    base = endpoint.rstrip("/") if endpoint else None
    return (
        OTLPSpanExporter(endpoint=f"{base}/v1/traces" if base else None),
        OTLPMetricExporter(endpoint=f"{base}/v1/metrics" if base else None),
    )


def _name_service(provider: TracerProvider, default: str) -> None:
    """Give the provider's resource a `service.name` when nothing named the application.

    The SDK's fallback, `unknown_service:python`, is the same for every Python program, so their traces and metrics
    (Prometheus' `job` label) cannot be told apart. A name the user set wins: the provider's own resource, else
    `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES`, read now (AnyAgent may have created the provider before the
    application set them).
    """
    if not _is_unnamed(provider.resource):
        return
    from_env = Resource.create({})
    name = default if _is_unnamed(from_env) else str(from_env.attributes[SERVICE_NAME])
    # The SDK's own way to change a live provider's resource: it updates the tracers already handed out too.
    update = getattr(provider, "_update_resource", None)
    if update is None:
        logger.warning("otel-cycles: this OpenTelemetry SDK cannot rename the service; set OTEL_SERVICE_NAME")
        return
    update(Resource({SERVICE_NAME: name}))


def _is_unnamed(resource: Resource) -> bool:
    return str(resource.attributes.get(SERVICE_NAME, "unknown_service")).startswith("unknown_service")


def configure_export(
    endpoint: str | None = None,
    *,
    protocol: str | None = None,
    service_name: str = DEFAULT_SERVICE_NAME,
    tracer_provider: trace.TracerProvider | None = None,
    export_metrics: bool = True,
    metric_interval_ms: int = 10_000,
    span_exporter: SpanExporter | None = None,
    metric_reader: MetricReader | None = None,
    capture_content: bool | None = None,
) -> ExportSetup:
    """Mode 2: export governed traces and metrics over OTLP (e.g. to `collector/`).

    Args:
        endpoint: OTLP base endpoint (`http://localhost:4318` for HTTP, `http://localhost:4317` for gRPC). None:
            the standard `OTEL_EXPORTER_OTLP_ENDPOINT` / `..._TRACES_ENDPOINT` variables, else the OTLP default.
        protocol: `http/protobuf` or `grpc`; default `OTEL_EXPORTER_OTLP_PROTOCOL`, else `http/protobuf`.
        service_name: `service.name` of the exported traces and metrics when neither the tracer provider's resource
            nor `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` set one.
        tracer_provider: Provider to export from (default: the global one AnyAgent uses).
        export_metrics: Also install a MeterProvider exporting otel-cycles' metrics, unless one is set already.
        metric_interval_ms: Metric export interval.
        span_exporter: Use this exporter instead of OTLP (tests, or another backend).
        metric_reader: Use this metric reader instead of periodic OTLP export.
        capture_content: Export prompt, completion and tool content (`gen_ai.input.messages`, `gen_ai.output`,
            `gen_ai.tool.args`, ...). None reads `CYCLES_CAPTURE_CONTENT` (default true).
    """
    provider = _sdk_provider(tracer_provider)
    protocol = (protocol or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").lower()
    if protocol not in ("http/protobuf", "grpc"):
        raise ValueError(f"protocol must be 'http/protobuf' or 'grpc', not {protocol!r}")
    _name_service(provider, service_name)
    metric_exporter: object = None
    if span_exporter is None:
        span_exporter, metric_exporter = _otlp_exporters(endpoint, protocol)
    counting = _CountingExporter(span_exporter)
    batch = BatchSpanProcessor(counting)
    # Prompt and completion content is exported unless CYCLES_CAPTURE_CONTENT=false (or capture_content=False).
    provider.add_span_processor(ContentFilterSpanProcessor(batch, capture_content=capture_content))
    cycles = attach(provider)
    meter_provider: MeterProvider | None = None
    if export_metrics:
        reader = metric_reader
        if reader is None:
            if metric_exporter is None:
                metric_exporter = _otlp_exporters(endpoint, protocol)[1]
            reader = PeriodicExportingMetricReader(
                metric_exporter,  # type: ignore[arg-type]
                export_interval_millis=metric_interval_ms,
            )
        if isinstance(otel_metrics.get_meter_provider(), MeterProvider):
            logger.warning("otel-cycles: a MeterProvider is already set; not replacing it (metrics go there)")
        else:
            meter_provider = MeterProvider(metric_readers=[reader], resource=provider.resource)
            otel_metrics.set_meter_provider(meter_provider)
    return ExportSetup(provider, batch, cycles, meter_provider, counting)
