"""The sdist holds the project and nothing else lying in the tree; the license text ships with it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as a package
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("otel_cycles/", "tests/", "examples/", "docs/", "collector/", "benchmarks/")
TOP_LEVEL = {"README.md", "RELIABILITY.md", "BENCHMARKS.md", "LICENSE", "Makefile", "pyproject.toml", ".gitignore"}


def test_sdist_contains_only_the_project(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in tracked:
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tree / name)
    # What a developer's checkout accumulates: none of it may reach the sdist (a symlink used to break the build).
    (tree / ".venv-own" / "bin").mkdir(parents=True)
    (tree / ".venv-own" / "bin" / "python").write_text("#!/bin/sh\n")
    (tree / "cycles.key").write_text("cyc_live_secret\n")
    (tree / "demo.log").write_text("log\n")
    (tree / "otel-cycles-demo.db").write_bytes(b"SQLite format 3\x00")
    (tree / "tests" / "__pycache__").mkdir(exist_ok=True)
    (tree / "tests" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\x00")
    (tree / "dangling").symlink_to(tmp_path / "nowhere")

    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or "uv"
    subprocess.run([uv, "build", "--sdist", "-o", str(tmp_path / "dist"), str(tree)], check=True, capture_output=True)
    (sdist,) = (tmp_path / "dist").glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        members = {m.name.split("/", 1)[1] for m in archive.getmembers() if m.isfile()}
        pkg_info = archive.extractfile(next(m for m in archive.getmembers() if m.name.endswith("/PKG-INFO")))
        assert pkg_info is not None
        metadata = pkg_info.read().decode()
    expected = {name for name in tracked if name.startswith(SHIPPED) or name in TOP_LEVEL} | {"PKG-INFO"}
    assert members == expected
    assert "License-Expression: Apache-2.0" in metadata and "LICENSE" in members
    assert (
        "Apache License" in (ROOT / "LICENSE").read_text()
        and "Version 2.0, January 2004" in (ROOT / "LICENSE").read_text()
    )


def test_every_pin_of_the_extras_holds_in_the_tested_environment() -> None:
    """The extras pin what uv resolves `.[all]` to (so plain pip need not backtrack); the suite runs on those."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"]] + [
        r for name, extra in project["optional-dependencies"].items() if name not in ("all", "dev") for r in extra
    ]
    checked = 0
    for raw in requirements:
        requirement = Requirement(raw)
        try:
            installed = version(requirement.name)
        except PackageNotFoundError:
            raise AssertionError(f"{requirement.name} is not installed; run `make install`") from None
        assert requirement.specifier.contains(installed, prereleases=True), (raw, installed)
        checked += 1
    assert checked >= 20
    assert "openai<2.45" in project["dependencies"]  # the core install never gets an openai the extra would downgrade
