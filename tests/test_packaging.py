"""pyproject.toml: its console scripts point at real entry points and it ships every subpackage."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_console_scripts_resolve_to_the_command_line_mains() -> None:
    scripts = PYPROJECT["project"]["scripts"]
    assert set(scripts) == {"recommender", "recommender-train", "recommender-benchmarks"}
    for target in scripts.values():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), target


def test_every_package_of_the_library_and_the_pipeline_is_shipped() -> None:
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    shipped = set(find_packages(ROOT, include=include))
    on_disk = {str(path.parent.relative_to(ROOT)).replace("/", ".")
               for top in ("recommender", "train", "benchmarks") for path in (ROOT / top).glob("**/__init__.py")}
    assert on_disk == shipped
    assert {"recommender.search", "recommender.serving", "train.evaluation", "benchmarks"} <= shipped


def test_requirements_files_are_the_declared_dependencies() -> None:
    dynamic = PYPROJECT["tool"]["setuptools"]["dynamic"]
    files = [dynamic["dependencies"]["file"], *(extra["file"] for extra in dynamic["optional-dependencies"].values())]
    for names in files:
        for name in names:
            lines = [line for line in (ROOT / name).read_text().splitlines() if line and not line.startswith("#")]
            assert lines and all("==" in line and not line.startswith("-") for line in lines), name
