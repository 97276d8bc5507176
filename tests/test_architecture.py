"""The package's layers hold: the import-linter contracts pass, and break when the core imports a reader."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

grimp = pytest.importorskip("grimp")
pytest.importorskip("importlinter")

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(src: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` with the project's contracts, on the package found in ``src``."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(tmp_path / "pyproject.toml"), "--no-cache"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )


def test_the_contracts_hold(tmp_path):
    result = lint_imports(ROOT / "src", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    "module, line, contract",
    [
        ("model.py", "from .checkpoint import load", "Layers: each part imports only the parts below it"),
        ("model.py", "from .checkpoint.hf_format import from_hf", "Layers: each part imports only the parts below it"),
        ("layers/attention.py", "import numpy", "The core model (config, layers, model, seed) needs only torch"),
        ("explain/maps.py", "import argparse", "Only the command line parses arguments"),
        ("checkpoint/files.py", "from . import loading", "No import cycles, at any depth of the package"),
    ],
)
def test_a_forbidden_import_breaks_a_contract(tmp_path, module, line, contract):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "vitlens", src / "vitlens", ignore=shutil.ignore_patterns("__pycache__"))
    path = src / "vitlens" / module
    # inside a function, as the cycles this layout removed were: still an import, still caught
    path.write_text(path.read_text() + f"\n\ndef _sneaky():\n    {line}\n")
    result = lint_imports(src, tmp_path)
    assert result.returncode != 0
    assert f"{contract} BROKEN" in result.stdout, result.stdout


def test_no_module_reaches_back_to_itself():
    graph = grimp.build_graph("vitlens")
    modules = sorted(graph.modules)
    cycles = [
        (a, b)
        for i, a in enumerate(modules)
        for b in modules[i + 1 :]
        if graph.chain_exists(importer=a, imported=b) and graph.chain_exists(importer=b, imported=a)
    ]
    assert cycles == []
