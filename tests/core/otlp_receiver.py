"""A minimal OTLP/HTTP receiver on loopback that decodes exported spans and metrics, for export-mode tests."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class OtlpReceiver:
    """Collects `/v1/traces` and `/v1/metrics` posts; `spans` are dicts of name, attributes, status and scope."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.metric_names: set[str] = set()
        self.service_names: set[str] = set()
        """`service.name` of every resource that sent spans or metrics."""
        self.raw: list[bytes] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver._ingest(self.path, body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _ingest(self, path: str, body: bytes) -> None:
        with self._lock:
            self.raw.append(body)
            if path == "/v1/traces":
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    self._note_service(resource_spans.resource)
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            self.spans.append(
                                {
                                    "name": span.name,
                                    "scope": scope_spans.scope.name,
                                    "status": span.status.code,
                                    "attributes": {kv.key: _value(kv.value) for kv in span.attributes},
                                }
                            )
            elif path == "/v1/metrics":
                request_m = ExportMetricsServiceRequest.FromString(body)
                for resource_metrics in request_m.resource_metrics:
                    self._note_service(resource_metrics.resource)
                    for scope_metrics in resource_metrics.scope_metrics:
                        for metric in scope_metrics.metrics:
                            self.metric_names.add(metric.name)

    def _note_service(self, resource: Any) -> None:
        names = [_value(kv.value) for kv in resource.attributes if kv.key == "service.name"]
        self.service_names.update(str(name) for name in names)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
