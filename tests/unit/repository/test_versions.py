"""Versioned installs: a rebuild adds version N+1 next to N, never rewrites N, prunes per version_policy."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import json_format

from toolkit.errors import RepositoryError
from toolkit.repository.config import ModelConfig, config_to_text, read_config
from toolkit.repository.versions import install_model, model_versions, next_version, prune_versions


def _config(name: str = "m", **policy) -> ModelConfig:
    d = {"name": name, "backend": "python", "max_batch_size": 8}
    if policy:
        d["version_policy"] = policy
    return json_format.ParseDict(d, ModelConfig())


def _stage(root: Path, version: int, payload: str, config: ModelConfig | None = None, name: str = "m") -> Path:
    staged = root / f"stage-{version}-{payload}" / name
    (staged / str(version)).mkdir(parents=True)
    (staged / str(version) / "model.py").write_text(payload)
    (staged / "config.pbtxt").write_text(config_to_text(config or _config(name)))
    (staged / "tritonrec.json").write_text(payload)
    return staged


def test_a_new_model_is_moved_into_place_whole(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    target = install_model(_stage(tmp_path, 1, "a"), repo)
    assert target == repo / "m"
    assert model_versions(target) == [1]
    assert (target / "1" / "model.py").read_text() == "a"
    assert next_version(target) == 2
    assert next_version(repo / "missing") == 1


def test_a_rebuild_adds_version_n_plus_1_and_leaves_n_untouched(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    install_model(_stage(tmp_path, 1, "a"), repo)
    old_file = repo / "m" / "1" / "model.py"
    old_inode = old_file.stat().st_ino
    install_model(_stage(tmp_path, 2, "b", _config(latest={"num_versions": 1})), repo)

    assert model_versions(repo / "m") == [1, 2]  # latest 1 keeps the served one and the previous one
    assert old_file.read_text() == "a" and old_file.stat().st_ino == old_inode
    assert (repo / "m" / "2" / "model.py").read_text() == "b"
    assert (repo / "m" / "tritonrec.json").read_text() == "b"
    assert read_config(repo / "m" / "config.pbtxt").version_policy.latest.num_versions == 1
    assert (repo / "m" / "config.v1.pbtxt").is_file()  # the previous config, for rolling back
    assert not [p for p in (repo / "m").iterdir() if p.name.startswith(".")]


def test_latest_k_keeps_the_newest_k_plus_one_versions(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for v in range(1, 5):
        install_model(_stage(tmp_path, v, f"v{v}", _config(latest={"num_versions": 2})), repo)
    assert model_versions(repo / "m") == [2, 3, 4]


def test_policy_all_keeps_every_version(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for v in range(1, 4):
        install_model(_stage(tmp_path, v, f"v{v}", _config(all={})), repo)
    assert model_versions(repo / "m") == [1, 2, 3]


def test_policy_specific_keeps_the_listed_and_the_newest_two(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for v in range(1, 5):
        install_model(_stage(tmp_path, v, f"v{v}", _config(specific={"versions": [1]})), repo)
    assert model_versions(repo / "m") == [1, 3, 4]
    assert prune_versions(repo / "m", _config(specific={"versions": [4]})) == [1]


def test_a_staged_version_not_newer_than_the_installed_one_is_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    install_model(_stage(tmp_path, 1, "a"), repo)
    install_model(_stage(tmp_path, 2, "b"), repo)
    with pytest.raises(RepositoryError, match="version 2 is not newer than the installed version 2"):
        install_model(_stage(tmp_path, 2, "c"), repo)
    assert (repo / "m" / "2" / "model.py").read_text() == "b"


def test_a_staged_folder_needs_exactly_one_version(tmp_path: Path) -> None:
    staged = _stage(tmp_path, 1, "a")
    (staged / "2").mkdir()
    with pytest.raises(RepositoryError, match="exactly one staged version folder, found \\[1, 2\\]"):
        install_model(staged, tmp_path / "repo")
    assert not (tmp_path / "repo" / "m").exists()
