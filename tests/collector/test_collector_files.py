"""Structural checks of collector/ that need no Collector, Docker or network: the compose stack's images, mounts and
ports agree with the Collector config, Prometheus, Tempo and Grafana provisioning, and versions agree across files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.collector.collector_harness import COLLECTOR_DIR

COMPOSE = COLLECTOR_DIR / "docker-compose.yaml"
PINNED_TAG = re.compile(r"^[\w./-]+:v?\d+(\.\d+)+(-[\w.]+)?$")
ENV_DEFAULT = re.compile(r"\$\{env:(\w+):-([^}]*)\}")


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _env_defaults(path: Path) -> dict[str, str]:
    return dict(ENV_DEFAULT.findall(path.read_text()))


def _port(address: str) -> int:
    return int(address.rstrip("/").rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    services: dict[str, Any] = _yaml(COMPOSE)["services"]
    return services


def test_every_image_is_pinned_to_a_version(compose: dict[str, Any]) -> None:
    for name, service in compose.items():
        image = service.get("image")
        assert image, f"{name} has no image"
        assert PINNED_TAG.match(image), f"{name}: {image} is not pinned to a version"
        assert not image.endswith(":latest")
    for line in (COLLECTOR_DIR / "Dockerfile").read_text().splitlines():
        if line.startswith("FROM "):
            assert PINNED_TAG.match(line.split()[1]), line


def test_every_mounted_file_is_in_the_repository(compose: dict[str, Any]) -> None:
    mounts = [
        (name, volume.split(":")[0]) for name, service in compose.items() for volume in service.get("volumes", [])
    ]
    assert mounts
    for name, source in mounts:
        assert source.startswith("./"), f"{name} mounts {source}: only repository files belong in the stack"
        assert (COLLECTOR_DIR / source).exists(), f"{name} mounts missing {source}"
    for service in compose.values():
        build = service.get("build")
        if build:
            dockerfile = COLLECTOR_DIR / build["context"] / build.get("dockerfile", "Dockerfile")
            for line in dockerfile.read_text().splitlines():
                if line.startswith("COPY ") and "--from" not in line:
                    for source in line.split()[1:-1]:
                        assert (dockerfile.parent / source).exists(), line


def test_collector_ports_match_its_config(compose: dict[str, Any]) -> None:
    defaults = _env_defaults(COLLECTOR_DIR / "config.yaml")
    published = {int(p.split(":")[1].split("/")[0]) for p in compose["otelcol"]["ports"]}
    for variable in (
        "CYCLES_OTLP_GRPC_ENDPOINT",
        "CYCLES_OTLP_HTTP_ENDPOINT",
        "CYCLES_PROMETHEUS_ENDPOINT",
        "CYCLES_HEALTH_ENDPOINT",
    ):
        assert _port(defaults[variable]) in published, variable
        assert defaults[variable].startswith("0.0.0.0:"), f"{variable} must listen beyond the container"
    assert {_port(defaults["CYCLES_OTLP_GRPC_ENDPOINT"]), _port(defaults["CYCLES_OTLP_HTTP_ENDPOINT"])} == {4317, 4318}


def test_collector_exports_to_the_stacks_jaeger_and_tempo(compose: dict[str, Any]) -> None:
    environment = compose["otelcol"]["environment"]
    jaeger = environment["CYCLES_JAEGER_OTLP_ENDPOINT"]
    tempo = environment["CYCLES_TEMPO_OTLP_ENDPOINT"]
    assert jaeger.split(":")[0] in compose and _port(jaeger) == 4317  # Jaeger v2's OTLP gRPC intake
    tempo_host = tempo.split("//")[1].split(":")[0]
    assert tempo_host in compose
    tempo_config = _yaml(COLLECTOR_DIR / "tempo" / "tempo.yaml")
    protocols = tempo_config["distributor"]["receivers"]["otlp"]["protocols"]
    assert _port(protocols["http"]["endpoint"]) == _port(tempo)
    defaults = _env_defaults(COLLECTOR_DIR / "config.yaml")
    assert defaults["CYCLES_JAEGER_OTLP_ENDPOINT"] == jaeger
    assert defaults["CYCLES_TEMPO_OTLP_ENDPOINT"] == tempo


def test_prometheus_scrapes_the_collectors_exporter(compose: dict[str, Any]) -> None:
    config = _yaml(COLLECTOR_DIR / "prometheus" / "prometheus.yaml")
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    exporter_port = _port(_env_defaults(COLLECTOR_DIR / "config.yaml")["CYCLES_PROMETHEUS_ENDPOINT"])
    assert f"otelcol:{exporter_port}" in targets
    self_port = int(_env_defaults(COLLECTOR_DIR / "config.yaml")["CYCLES_SELF_METRICS_PORT"])
    assert f"otelcol:{self_port}" in targets
    command = " ".join(compose["prometheus"]["command"])
    mounted = {v.split(":")[1] for v in compose["prometheus"]["volumes"]}
    assert any(f"--config.file={target}" in command for target in mounted)


def test_grafana_datasources_point_at_the_stack(compose: dict[str, Any]) -> None:
    datasources = _yaml(COLLECTOR_DIR / "grafana" / "provisioning" / "datasources" / "datasources.yaml")["datasources"]
    expected_ports = {"prometheus": 9090, "tempo": 3200, "jaeger": 16686}
    for datasource in datasources:
        host = datasource["url"].split("//")[1].split(":")[0]
        assert host in compose, datasource["name"]
        assert _port(datasource["url"]) == expected_ports[datasource["type"]], datasource["name"]
    tempo_port = _yaml(COLLECTOR_DIR / "tempo" / "tempo.yaml")["server"]["http_listen_port"]
    assert tempo_port == expected_ports["tempo"]


def test_dashboard_is_provisioned_and_uses_provisioned_datasources(compose: dict[str, Any]) -> None:
    providers = _yaml(COLLECTOR_DIR / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml")["providers"]
    mounts = dict(v.split(":")[:2] for v in compose["grafana"]["volumes"])
    dashboard_dir = next(source for source, target in mounts.items() if target == providers[0]["options"]["path"])
    dashboards = list((COLLECTOR_DIR / dashboard_dir).glob("*.json"))
    assert [d.name for d in dashboards] == ["agent-budgets.json"]
    dashboard = json.loads(dashboards[0].read_text())
    assert dashboard["title"] == "Agent budgets and cost"
    uids = {
        d["uid"]
        for d in _yaml(COLLECTOR_DIR / "grafana" / "provisioning" / "datasources" / "datasources.yaml")["datasources"]
    }
    used = {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p}
    used |= {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])}
    used |= {v["datasource"]["uid"] for v in dashboard["templating"]["list"]}
    assert used <= uids
    assert "tempo" in used, "the dashboard links budget denials to their traces"


def test_component_versions_agree_across_manifest_build_script_and_dockerfile() -> None:
    manifest = _yaml(COLLECTOR_DIR / "builder-config.yaml")
    versions = {
        m["gomod"].split()[1]
        for kind in ("receivers", "processors", "exporters", "connectors", "extensions")
        for m in manifest[kind]
    }
    assert len(versions) == 1, f"one release train, not {versions}"
    (ocb,) = re.findall(r'^ocb_version="(v[\d.]+)"', (COLLECTOR_DIR / "build.sh").read_text(), re.MULTILINE)
    (docker_ocb,) = re.findall(r"^ARG OCB_VERSION=(v[\d.]+)$", (COLLECTOR_DIR / "Dockerfile").read_text(), re.M)
    assert {ocb, docker_ocb} == versions
    assert manifest["dist"]["name"] == "otelcol-cycles"


def test_compose_runs_the_jaeger_release_the_tests_build(compose: dict[str, Any]) -> None:
    """tests/collector/test_jaeger_e2e.py proves the path into the Jaeger that build-jaeger.sh builds; the compose
    stack must run that same release (v2.x binaries come from the v1.x module tag)."""
    script = (COLLECTOR_DIR / "build-jaeger.sh").read_text()
    (v2,) = re.findall(r'^jaeger_version="v1\.\d+\.\d+"  # = Jaeger v(2\.\d+\.\d+)', script, re.MULTILINE)
    assert compose["jaeger"]["image"] == f"jaegertracing/jaeger:{v2}"
