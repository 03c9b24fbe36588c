"""A missing or wrong setting fails at once, in one line that says what to do, with the right exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from runcycles import CyclesClient, CyclesConfig

from otel_cycles import ConfigurationError, CyclesBudgetCallback
from otel_cycles.authority import LocalAuthority
from tests.reliability.fault_proxy import free_port

ROOT = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("otel-cycles")
BLOCKER = """
import importlib.abc, os, sys

BLOCKED = set(os.environ["BLOCK_MODULES"].split(","))


class _NotInstalled(importlib.abc.MetaPathFinder):
    # Makes a package look uninstalled, as in a core `pip install otel-cycles` without the extra.
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CYCLES_", "OPENAI_", "OTEL_", "PYTEST_"))}
    return {**env, "PYTHONPATH": str(ROOT), "COLUMNS": "80", **extra}


def _demo(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), "demo", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


def _one_line_error(done: subprocess.CompletedProcess[str], code: int) -> str:
    assert done.returncode == code, done.stderr[-3000:]
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_no_tenant_fails_at_construction(authority: LocalAuthority, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CYCLES_TENANT", raising=False)
    authority.create_tenant("no-tenant-given")
    key = authority.create_api_key("no-tenant-given")
    client = CyclesClient(CyclesConfig(base_url=authority.base_url, api_key=key, journal_enabled=False))
    with pytest.raises(ConfigurationError, match="tenant required.*CYCLES_TENANT"):
        CyclesBudgetCallback(client=client)
    assert CyclesBudgetCallback(client=client, tenant="no-tenant-given").tenant == "no-tenant-given"


def test_a_base_url_without_scheme_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CYCLES_BASE_URL", "127.0.0.1:7895")
    monkeypatch.setenv("CYCLES_API_KEY", "k")
    monkeypatch.setenv("CYCLES_TENANT", "acme")
    with pytest.raises(ConfigurationError, match="CYCLES_BASE_URL '127.0.0.1:7895' is not a URL.*http://"):
        CyclesBudgetCallback()


@pytest.mark.parametrize(
    ("framework", "blocked"), [("openai", "agents"), ("langchain", "langgraph"), ("smolagents", "smolagents")]
)
def test_demo_names_the_extra_a_framework_needs(tmp_path: Path, framework: str, blocked: str) -> None:
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = _env(PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}", BLOCK_MODULES=blocked)
    line = _one_line_error(_demo("--framework", framework, env=env, cwd=tmp_path), 2)
    assert f"pip install 'otel-cycles[{framework}]'" in line and blocked in line


def test_demo_refuses_an_unknown_model_provider(tmp_path: Path) -> None:
    line = _one_line_error(_demo("--model", "nosuch:model", env=_env(), cwd=tmp_path), 2)
    assert "unknown provider 'nosuch'" in line


class _NoSuchModel(BaseHTTPRequestHandler):
    """OpenAI's answer to a model id that does not exist (a paid provider, stood in for on loopback)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"error": {"message": "The model `gpt-nosuch` does not exist", "code": "model_not_found",
                                     "type": "invalid_request_error", "param": None}}).encode()  # fmt: skip
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def provider() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NoSuchModel)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_demo_reports_a_bogus_model_id_in_one_line(tmp_path: Path, provider: str) -> None:
    env = _env(OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=provider)
    line = _one_line_error(_demo("--model", "openai:gpt-nosuch", env=env, cwd=tmp_path), 1)
    assert "the agent run failed" in line and "does not exist" in line


def test_demo_reports_a_missing_db_directory(tmp_path: Path) -> None:
    line = _one_line_error(_demo("--db", "/nonexistent/dir/x.db", env=_env(), cwd=tmp_path), 2)
    assert "directory /nonexistent/dir does not exist" in line


def test_demo_with_nothing_listening_on_otlp_warns_once_and_runs_without_export(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    done = _demo("--json", "--otlp", endpoint, env=_env(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["stopped"] is True
    assert done.stderr.count(f"nothing listens at {endpoint}") == 1
    assert "Transient error" not in done.stderr and "Traceback" not in done.stderr


def test_export_example_does_not_claim_it_sent_what_it_could_not(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    env = _env(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_EXPORTER_OTLP_TIMEOUT="1")
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "export_collector.py")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "spans and metrics sent" not in done.stdout
    assert f"could not send spans to {endpoint}" in done.stdout
    assert json.loads(done.stdout.strip().splitlines()[-1].removeprefix("RESULT "))["delivered"] is False
