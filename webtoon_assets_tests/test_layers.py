"""The layering holds: `lint-imports` checks the contracts in pyproject.toml ([tool.importlinter]):
each module imports only the layers below it, and the libraries never import Dagster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from webtoon_assets.paths import REPO_ROOT


def test_import_contracts_are_kept():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(lint_imports), "--no-cache", "--no-logo"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    print(output)
    assert proc.returncode == 0, f"lint-imports found broken contracts (see pyproject.toml):\n{output}"
    assert "0 broken" in output, output
