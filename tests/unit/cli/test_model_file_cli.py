"""``--model-file`` on ``tritonrec export``, ``build`` and ``compress``: the bad inputs the commands refuse
before any export or build starts (the served path is tests/integration/test_user_model_serving.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from toolkit.cli.app import app
from toolkit.errors import ModelFileError

FIXTURE = Path(__file__).parents[2] / "fixtures" / "models" / "user_bag_model.py"


@pytest.mark.parametrize("command", [["export"], ["build", "--variant", "pytorch"], ["compress"]])
def test_a_model_file_that_does_not_exist_is_named_by_the_command(tmp_path, command):
    missing = tmp_path / "my_model.py"
    done = CliRunner().invoke(app, [*command, "--model-file", f"{missing}:build", *_out(command, tmp_path)])
    assert isinstance(done.exception, ModelFileError), done.output
    assert f"{missing} does not exist" in str(done.exception)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [["export", "some/checkpoint"], ["build", "--checkpoint", "some/checkpoint"]])
def test_a_checkpoint_and_a_model_file_together_are_refused(tmp_path, command):
    done = CliRunner().invoke(app, [*command, "--model-file", f"{FIXTURE}:build", *_out(command, tmp_path)])
    assert isinstance(done.exception, ModelFileError), done.output
    assert "not both" in str(done.exception)


def test_a_factory_that_raises_shows_its_line_through_the_command(tmp_path):
    done = CliRunner().invoke(app, ["export", "--model-file", f"{FIXTURE}:broken", "--out", str(tmp_path / "out" / "m.onnx")])
    assert isinstance(done.exception, ModelFileError), done.output
    assert 'in broken: return UserBagModel(num_users=sizes["items"]), {}' in str(done.exception)


def _out(command: list[str], tmp_path: Path) -> list[str]:
    if command[0] == "export":
        return ["--out", str(tmp_path / "out" / "m.onnx")]
    return ["--out", str(tmp_path / "out")] if command[0] == "compress" else ["--repository", str(tmp_path / "out")]


def test_ensembles_for_a_model_file_are_refused_for_want_of_vocabularies(tmp_path):
    from toolkit.errors import RepositoryError

    repository = tmp_path / "out"
    args = ["build", "--model-file", f"{FIXTURE}:build", "--variant", "pytorch", "--ensembles", "--repository", str(repository)]
    done = CliRunner().invoke(app, args)
    assert isinstance(done.exception, RepositoryError), done.output
    assert f"{FIXTURE.resolve()}: the checkpoint has no vocabularies" in str(done.exception)
    assert not any(repository.glob("*/config.pbtxt"))  # nothing installed
