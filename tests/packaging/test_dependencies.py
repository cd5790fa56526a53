"""Every third-party module toolkit/ imports is declared in pyproject.toml: as a dependency, or in
the extra that toolkit.errors.EXTRAS names for it (issue 9: `pip install .` gave a `tritonrec`
that died on `import matplotlib`)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

from toolkit.errors import EXTRAS

ROOT = Path(__file__).resolve().parents[2]
# Provided where the code runs, not by pip: Triton's Python backend gives the models in
# toolkit/repository/python_models/ its utilities, and the torch runner imports the copy of
# toolkit/models/dlrm.py written next to it; the model files there import the copy of
# toolkit/models/layers.py written beside them.
PROVIDED = {"triton_python_backend_utils", "dlrm", "layers"}


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", requirement).group()).lower()


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level module -> the files importing it (absolute imports, at any depth of the file)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "toolkit").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                if top not in sys.stdlib_module_names and top not in ("toolkit", "__future__"):
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_third_party_import_is_a_declared_dependency_or_in_an_extra():
    declared = {_name(r) for r in _project()["dependencies"]}
    in_extra = {module for modules in EXTRAS.values() for module in modules}
    distributions = importlib.metadata.packages_distributions()
    undeclared = {}
    for module, files in _third_party_imports().items():
        if module in PROVIDED or module in in_extra:
            continue
        providers = {_name(d) for d in distributions.get(module, [])}
        if not providers & declared:
            undeclared[module] = (sorted(providers) or "not installed here", sorted(files))
    assert not undeclared, f"add to [project] dependencies in pyproject.toml (or to an extra in toolkit.errors.EXTRAS): {undeclared}"


def test_the_extras_in_pyproject_are_the_ones_toolkit_errors_names():
    extras = _project()["optional-dependencies"]
    assert set(EXTRAS) <= set(extras), f"toolkit.errors.EXTRAS names extras pyproject.toml does not declare: {set(EXTRAS) - set(extras)}"
    distributions = importlib.metadata.packages_distributions()
    for module in EXTRAS["perf"]:  # installed in the development virtualenv (requirements.txt); the gpu ones are not
        providers = {_name(d) for d in distributions.get(module, [])}
        assert providers & {_name(r) for r in extras["perf"]}, f"{module} (in EXTRAS['perf']) is not installed by [perf]"
    gpu_pins = [line for line in (ROOT / "requirements-gpu.txt").read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert extras["gpu"] and {_name(r) for r in extras["gpu"]} == {_name(r) for r in gpu_pins}


def test_torch_is_pinned_to_one_minor_release_and_numpy_below_2():
    dependencies = {_name(r): r for r in _project()["dependencies"]}
    assert dependencies["torch"] == "torch>=2.13,<2.14"  # a wider range pulls a multi-GB CUDA build from PyPI
    assert "<2" in dependencies["numpy"]  # the bundled Triton's Python-backend stub is built against numpy 1.x
