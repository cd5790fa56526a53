"""`tritonrec --help` stays light: the command modules import torch, ONNX, tritonclient and
matplotlib only inside the commands that use them (issue 9: ~5 s of imports before any output)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from toolkit.errors import MissingDependencyError, ToolkitError, optional_dependencies

# What rendering help must not import (each costs from 0.2 s to several seconds at start-up).
HEAVY = ("torch", "onnx", "onnxruntime", "matplotlib", "tritonclient")

_RENDER_EVERY_HELP = """
import json, sys
import typer
from typer.testing import CliRunner
from toolkit.cli.app import app, main

sys.argv = ["tritonrec", "--help"]
try:
    main()
except SystemExit as exc:
    assert exc.code == 0, exc.code
group = typer.main.get_command(app)
commands = [[name] for name in group.commands]
commands += [[name, sub] for name, c in group.commands.items() for sub in getattr(c, "commands", {})]
failed = {}
for args in commands:
    done = CliRunner().invoke(app, [*args, "--help"])
    if done.exit_code != 0 or "Usage:" not in done.output:
        failed[" ".join(args)] = done.output
heavy = sorted({m.partition(".")[0] for m in sys.modules} & set(%r))
print(json.dumps({"commands": [" ".join(a) for a in commands], "failed": failed, "heavy": heavy}), file=sys.stderr)
"""


def test_help_of_every_command_renders_without_torch_onnx_tritonclient_or_matplotlib():
    done = subprocess.run([sys.executable, "-c", _RENDER_EVERY_HELP % (HEAVY,)], capture_output=True, text=True, timeout=120, cwd=None)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Usage:" in done.stdout and "validate" in done.stdout, done.stdout  # the top-level help was printed
    result = json.loads(done.stderr.strip().splitlines()[-1])
    assert {"build", "compress", "perf", "serve", "verify", "validate", "data fetch"} <= set(result["commands"]), result["commands"]
    assert result["failed"] == {}, result["failed"]
    assert result["heavy"] == [], f"rendering --help imported {result['heavy']}: import them inside the command function that needs them"


def test_the_help_only_copies_agree_with_the_originals():
    # build's --variant help and verify's defaults are copies, so that --help need not import the
    # builder (torch) or toolkit.serving.verify (tritonclient, scikit-learn)
    from toolkit.cli import build as build_cli
    from toolkit.cli import verify as verify_cli
    from toolkit.repository import builder
    from toolkit.serving import verify

    assert build_cli.VARIANTS == builder.VARIANTS
    assert verify_cli.DEFAULT_AUC_BUDGET == verify.DEFAULT_AUC_BUDGET
    assert verify_cli.DEFAULT_FP32_MAX_ABS_DIFF == verify.DEFAULT_FP32_MAX_ABS_DIFF


@pytest.mark.parametrize(("missing", "extra"), [("matplotlib.pyplot", "perf"), ("psutil", "perf"), ("tensorrt", "gpu")])
def test_a_missing_optional_module_names_its_extra(missing, extra):
    with pytest.raises(MissingDependencyError) as caught, optional_dependencies("tritonrec perf"):
        raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)
    assert isinstance(caught.value, ToolkitError)
    assert caught.value.hint == f"pip install 'tritonrec[{extra}]'"
    assert missing.partition(".")[0] in str(caught.value) and "tritonrec perf" in str(caught.value)


def test_other_import_errors_pass_through():
    with pytest.raises(ModuleNotFoundError), optional_dependencies("x"):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")  # a core dependency: not an extra's
    with pytest.raises(ImportError), optional_dependencies("x"):
        raise ImportError("cannot import name 'y' from 'matplotlib'", name="matplotlib")  # installed, but broken


@pytest.mark.parametrize("blocked", ["matplotlib", "psutil"])
def test_perf_without_the_perf_extra_says_how_to_install_it(blocked):
    code = f"import sys; sys.modules[{blocked!r}] = None; sys.argv = ['tritonrec', 'perf']; from toolkit.cli.app import main; main()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "Traceback" not in out, out
    assert f"error: tritonrec perf needs {blocked}" in out, out
    assert "hint: pip install 'tritonrec[perf]'" in out, out
