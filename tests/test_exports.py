"""Every public name is exported, and every export exists (httpx `test_all_imports_are_exported`)."""

from __future__ import annotations

from types import ModuleType

import pytest

import otel_cycles
import otel_cycles.testing


@pytest.mark.parametrize("module", [otel_cycles, otel_cycles.testing], ids=lambda m: m.__name__)
def test_all_imports_are_exported(module: ModuleType) -> None:
    included_private_members = ["__version__"]
    for name in module.__all__:
        getattr(module, name)  # resolves lazily exported names (and fails for a stale __all__ entry)
    public = [
        name
        for name, value in vars(module).items()
        # Submodules (otel_cycles.attributes, ...) are public by path, not re-exported names.
        if (not name.startswith("_") or name in included_private_members) and not isinstance(value, ModuleType)
    ]
    assert sorted(module.__all__) == sorted(public)
    assert len(set(module.__all__)) == len(module.__all__)


def test_light_imports_do_not_pull_in_anyagent() -> None:
    # The pytest plugin is loaded in every pytest session of every project that installs otel-cycles; importing
    # AnyAgent there would install a global tracer provider before the user's conftest could set its own.
    import subprocess
    import sys

    code = "import sys, otel_cycles.testing.plugin, otel_cycles.authority; print('any_agent' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "False"
