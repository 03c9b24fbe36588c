"""Every Python block of README.md runs as pasted, offline: against the embedded authority and the scripted model,
configured through the same environment variables a reader would set."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_cycles.authority import LocalAuthority
from otel_cycles.testing import ScriptedModel

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M)


@pytest.fixture(scope="module")
def offline_env() -> Iterator[dict[str, str]]:
    """`CYCLES_*` and `OPENAI_*` pointing at a fresh authority (tenant `acme`, $1) and the scripted model."""
    with LocalAuthority() as authority, ScriptedModel(tool_rounds=0) as model:
        authority.create_tenant("acme")
        authority.create_budget("tenant:acme", 100_000_000)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CYCLES_", "OPENAI_", "OTEL_", "PYTEST_"))}
        yield {
            **env,
            "PYTHONPATH": str(ROOT),
            "CYCLES_BASE_URL": authority.base_url,
            "CYCLES_API_KEY": authority.create_api_key("acme"),
            "CYCLES_TENANT": "acme",
            "CYCLES_JOURNAL_ENABLED": "false",
            "OPENAI_BASE_URL": model.base_url,
            "OPENAI_API_KEY": "sk-scripted",
            "OPENAI_AGENTS_DISABLE_TRACING": "1",
        }


def test_the_readme_has_the_snippets_this_test_runs() -> None:
    assert len(BLOCKS) == 6


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_snippet_runs_as_pasted(index: int, offline_env: dict[str, str], tmp_path: Path) -> None:
    code = BLOCKS[index]
    if "def test_" in code:  # the pytest snippet: run it as a test file, with the plugin pytest loads by itself
        (tmp_path / "test_snippet.py").write_text(code)
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_snippet.py")]
    else:
        command = [sys.executable, "-c", code]
    done = subprocess.run(command, cwd=tmp_path, env=offline_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    if "def test_" in code:
        assert "1 passed" in done.stdout
