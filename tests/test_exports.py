"""Every public name is exported, and every export exists (httpx `test_all_imports_are_exported`)."""

from __future__ import annotations

from types import ModuleType

import pytest

import otel_cycles
import otel_cycles.testing


@pytest.mark.parametrize("module", [otel_cycles, otel_cycles.testing], ids=lambda m: m.__name__)
def test_all_imports_are_exported(module: ModuleType) -> None:
    included_private_members = ["__version__"]
    public = [
        name
        for name, value in vars(module).items()
        # Submodules (otel_cycles.attributes, ...) are public by path, not re-exported names.
        if (not name.startswith("_") or name in included_private_members) and not isinstance(value, ModuleType)
    ]
    assert sorted(module.__all__) == sorted(public)
    assert len(set(module.__all__)) == len(module.__all__)
