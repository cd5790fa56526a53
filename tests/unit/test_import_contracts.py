"""The layering that `.importlinter` writes down holds: CI runs the tests, not `make lint`, so the
contracts are checked here too (import-linter's own CLI on the installed package)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_every_import_linter_contract_is_kept() -> None:
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint_imports is None:
        pytest.skip("import-linter is not installed in this environment (make test-deps installs it)")
    done = subprocess.run([lint_imports, "--no-cache"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    summary = re.search(r"Contracts: (\d+) kept, (\d+) broken", done.stdout)
    assert done.returncode == 0 and summary is not None, done.stdout + done.stderr
    contracts = (REPO_ROOT / ".importlinter").read_text().count("[importlinter:contract:")
    assert int(summary[1]) == contracts and summary[2] == "0", done.stdout
