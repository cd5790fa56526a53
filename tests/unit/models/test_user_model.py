"""A user's own model file (``--model-file PATH.py:FACTORY``) through the model protocol: loading,
its config rebuilding the same module, and each bad input refused with a message that names it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from toolkit.errors import ModelFileError
from toolkit.models import architecture_of, config_from_dict
from toolkit.models.protocol import call_by_name
from toolkit.models.user import load_model_file, parse_model_file_spec

FIXTURE = Path(__file__).parents[2] / "fixtures" / "models" / "user_bag_model.py"


def _line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), start=1) if text in line)


def test_a_model_file_loads_as_the_user_architecture_with_its_signature_order():
    model = load_model_file(f"{FIXTURE}:build")
    arch = architecture_of(model)
    assert arch.name == "user"
    assert type(model).__name__ == "UserBagModel"  # the user's own class, not a wrapper
    inputs, outputs = arch.signature(model.config)
    assert [(s.name, s.dtype, s.shape) for s in inputs] == [
        ("dense", "float32", (None, 3)),
        ("user_item", "int64", (None, 2)),
        ("genre_ids", "int64", (None, 4)),
    ]
    assert [(s.name, s.shape) for s in outputs] == [("probability", (None, 1))]
    rows = arch.example_inputs(model.config, 16, seed=3)
    assert int(rows["user_item"].max()) < 40 and int(rows["genre_ids"].max()) < 19
    with torch.no_grad():
        by_name = call_by_name(model, rows)
        by_position = model(rows["genre_ids"], rows["dense"], rows["user_item"])
    torch.testing.assert_close(by_name, by_position, rtol=0, atol=0)
    assert by_name.std() > 0  # the rows get different answers, so a swapped input would show


def test_the_config_alone_rebuilds_the_module_from_the_file_text(tmp_path):
    copy = tmp_path / "my_model.py"
    copy.write_text(FIXTURE.read_text())
    model = load_model_file(copy, "build")
    saved = json.loads(json.dumps(model.config.to_dict()))
    copy.unlink()  # the source travels in the config: the file is not read again
    config = config_from_dict(saved)
    rebuilt = architecture_of(config).build(config)
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    rows = architecture_of(model).example_inputs(model.config, 8)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(**rows), model(**rows), rtol=0, atol=0)
    with pytest.raises(ValueError, match="'source', 'source_file'"):
        type(config).from_dict({k: v for k, v in saved.items() if k != "factory"})


def test_a_model_file_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(ModelFileError, match=r"missing\.py does not exist"):
        load_model_file(f"{tmp_path / 'missing.py'}:build")
    with pytest.raises(ModelFileError, match="is a folder"):
        load_model_file(f"{tmp_path}:build")
    with pytest.raises(ModelFileError, match="expected PATH.py:FACTORY"):
        parse_model_file_spec(str(FIXTURE))


def test_a_factory_that_raises_shows_the_users_traceback_line():
    with pytest.raises(ModelFileError) as info:
        load_model_file(f"{FIXTURE}:broken")
    line = _line_of(FIXTURE, 'sizes["items"]')
    message = str(info.value)
    assert f"user_bag_model.py:{line} in broken" in message
    assert 'return UserBagModel(num_users=sizes["items"]), {}' in message
    assert "KeyError" in message
    assert isinstance(info.value.__cause__, KeyError)


def test_a_file_that_fails_to_run_shows_its_line(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\n\nWIDTH = 1 / 0\n\ndef build():\n    pass\n")
    with pytest.raises(ModelFileError, match=r"bad\.py:3 in <module>: WIDTH = 1 / 0: ZeroDivisionError"):
        load_model_file(f"{bad}:build")


def test_a_missing_factory_lists_what_the_file_defines():
    with pytest.raises(ModelFileError, match=r"defines no function 'make' \(its functions: \['broken', 'build', 'not_a_model'\]\)"):
        load_model_file(f"{FIXTURE}:make")


def test_a_factory_that_returns_no_module_is_refused():
    with pytest.raises(ModelFileError, match=r"not_a_model\(\) returned dict, expected \(nn.Module, signature\)"):
        load_model_file(f"{FIXTURE}:not_a_model")


_TINY = """
import torch
from torch import nn

class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(10, 4)
        self.out = nn.Linear(4, 1)

    def forward(self, ids):
        return torch.sigmoid(self.out(self.table(ids).sum(dim=1))){reshape}

def build():
    return Tiny(), {signature}
"""


@pytest.mark.parametrize(
    ("signature", "reshape", "expected"),
    [
        ('{"item": ("int64", (None, 3))}', "", r"Tiny.forward takes parameters \['ids'\].*no parameter for \['item'\]"),
        ('{"ids": ("string", (None, 3))}', "", r"input 'ids' has dtype 'string', expected a float or integer"),
        ('{"ids": ("int64", (3,))}', "", r"input 'ids' has shape \[3\], expected None \(the batch dimension\)"),
        ('{"ids": ("int64", (None, 3))}', ".reshape(-1)", r"forward must return one float tensor \(B, 1\), got torch.float32 \(4,\)"),
        ('[("ids", "int64")]', "", "returned a signature of type list"),
        ("{}", "", "empty signature"),
    ],
)
def test_a_signature_that_does_not_fit_the_module_is_refused_naming_it(tmp_path, signature, reshape, expected):
    path = tmp_path / "tiny.py"
    path.write_text(_TINY.format(signature=signature, reshape=reshape))
    with pytest.raises(ModelFileError, match=expected):
        load_model_file(f"{path}:build")


def test_integer_inputs_default_to_the_smallest_table(tmp_path):
    path = tmp_path / "tiny.py"
    path.write_text(_TINY.format(signature='{"ids": ("int64", (None, 3))}', reshape=""))
    model = load_model_file(f"{path}:build")
    assert model.config.inputs == [{"name": "ids", "dtype": "int64", "shape": [None, 3], "high": 10}]
