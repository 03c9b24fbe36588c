"""`configure_export` names the service when nothing else did, and never overrides a name the user set."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_cycles
from otel_cycles.setup import DEFAULT_SERVICE_NAME


@pytest.fixture(autouse=True)
def _no_service_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)


def _exported_service(provider: TracerProvider, service_name: str = DEFAULT_SERVICE_NAME) -> str:
    """The service.name on a span of a tracer handed out BEFORE configure_export (as AnyAgent's may be)."""
    tracer = provider.get_tracer("any_agent")
    exporter = InMemorySpanExporter()
    setup = otel_cycles.configure_export(
        tracer_provider=provider, span_exporter=exporter, export_metrics=False, service_name=service_name
    )
    with tracer.start_as_current_span("invoke_agent"):
        pass
    setup.shutdown()
    (span,) = exporter.get_finished_spans()
    assert span.resource.attributes[SERVICE_NAME] == provider.resource.attributes[SERVICE_NAME]
    return str(span.resource.attributes[SERVICE_NAME])


def test_an_unnamed_application_gets_the_default_name() -> None:
    provider = TracerProvider()  # what AnyAgent installs: the SDK names it unknown_service:python
    assert str(provider.resource.attributes[SERVICE_NAME]).startswith("unknown_service")
    assert _exported_service(provider) == DEFAULT_SERVICE_NAME == "otel-cycles"


def test_the_caller_chooses_the_default() -> None:
    assert _exported_service(TracerProvider(), service_name="research-agent") == "research-agent"


def test_otel_service_name_wins_even_when_set_after_the_provider_was_made(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = TracerProvider()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    assert _exported_service(provider, service_name="research-agent") == "from-env"


def test_otel_resource_attributes_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attributes,team=ml")
    assert _exported_service(TracerProvider(), service_name="research-agent") == "from-attributes"


def test_a_provider_the_user_named_keeps_its_name() -> None:
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: "users-own"}))
    assert _exported_service(provider, service_name="research-agent") == "users-own"
