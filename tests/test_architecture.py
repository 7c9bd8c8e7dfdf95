"""The architecture contracts in pyproject.toml ([tool.importlinter]) hold, and the checker
really fails when a contract is broken: an upward import in howold's own code, and an
import cycle in a package made here."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(*args: str, path: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(path)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def test_the_contracts_hold():
    result = _lint()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
    for contract in ("The inference path", "The training path", "Inference never imports training code", "A runtime never imports", "No import cycles"):
        assert contract in result.stdout


def test_an_upward_import_breaks_a_layers_contract(tmp_path):
    """The Analyzer reads model files: a layering that puts model files above it must fail,
    naming the import."""
    config = tmp_path / "upside-down.toml"
    config.write_text(
        '[tool.importlinter]\nroot_package = "face"\n\n'
        '[[tool.importlinter.contracts]]\nname = "model files above the analyzer"\ntype = "layers"\n'
        'containers = ["face"]\nlayers = ["model_files", "analyzer"]\n'
    )
    result = _lint(str(config))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "BROKEN" in result.stdout and "face.analyzer -> face.model_files" in result.stdout


def test_a_cycle_breaks_the_acyclic_contract(tmp_path):
    package = tmp_path / "circle"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "first.py").write_text("from . import second\n")
    (package / "second.py").write_text("def later():\n    from . import first\n")  # a lazy import is an import too
    config = tmp_path / "acyclic.toml"
    config.write_text(
        '[tool.importlinter]\nroot_package = "circle"\n\n'
        '[[tool.importlinter.contracts]]\nname = "no cycles"\ntype = "acyclic_siblings"\nancestors = ["circle"]\n'
    )
    result = _lint(str(config), path=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "BROKEN" in result.stdout and ".second -> .first" in result.stdout
