"""Versioned, atomic changes to a Triton model repository.

Triton serves numbered version folders (``<model>/1``, ``<model>/2``, ...) of one model
under one ``config.pbtxt``, choosing among them with the config's ``version_policy``
(Triton docs, "Model Repository" / "Model Configuration: Version Policy"). A server in
polling or explicit model-control mode may be serving any existing version at any time,
so every change here follows three rules:

* a new build becomes version **N+1 next to N**; an existing version folder is never
  rewritten (its files may be open in a running model instance);
* every new folder is written under a hidden name (``.<name>...``, which Triton skips)
  and renamed into place, and the config is replaced with ``os.replace``, so a server
  never sees half a version or half a config; the previous config is kept as
  ``config.v<N>.pbtxt`` for rolling back;
* old versions are removed only when the version policy no longer serves them *and*
  they are not the previous version: under ``latest { num_versions: k }`` the newest
  k + 1 versions stay (the k served plus the one a server may still be serving until it
  reloads), under ``all`` every version stays, under ``specific`` the listed versions
  and the previous newest stay.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from toolkit._io import atomic_write_text, make_temporary_directory
from toolkit.errors import RepositoryError
from toolkit.repository.config import ModelConfig, config_to_text, parse_config, read_config

__all__ = ["model_folders", "model_versions", "next_version", "install_model", "prune_versions", "write_version"]


def model_folders(repository: Path) -> list[Path]:
    """The model folders of ``repository``, by name; hidden ones (a build's ``.staging-*``) are skipped.

    Raises:
        RepositoryError: ``repository`` is not a folder.
    """
    repository = Path(repository)
    if not repository.is_dir():
        raise RepositoryError(f"model repository {repository} is not a folder", hint="build one with `tritonrec build`")
    return sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith("."))


def model_versions(model_dir: Path) -> list[int]:
    """The numeric version folders of ``model_dir``, ascending (``[]`` when it does not exist)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(d.name) for d in model_dir.iterdir() if d.is_dir() and d.name.isdigit())


def next_version(model_dir: Path) -> int:
    """The version a new build of ``model_dir`` gets: highest existing + 1, or 1."""
    versions = model_versions(model_dir)
    return versions[-1] + 1 if versions else 1


def _kept_versions(versions: list[int], config: ModelConfig) -> set[int]:
    policy = config.version_policy
    if policy.HasField("all"):
        return set(versions)
    newest_two = set(versions[-2:])
    if policy.HasField("specific"):
        return set(policy.specific.versions) | newest_two
    k = policy.latest.num_versions if policy.HasField("latest") and policy.latest.num_versions > 0 else 1
    return set(versions[-(k + 1) :])


def prune_versions(model_dir: Path, config: ModelConfig | None = None) -> list[int]:
    """Delete the version folders of ``model_dir`` that ``config``'s version policy keeps no longer.

    Args:
        config: the model's config (default: ``model_dir/config.pbtxt``).

    Returns:
        The versions removed.
    """
    model_dir = Path(model_dir)
    config = config if config is not None else read_config(model_dir / "config.pbtxt")
    versions = model_versions(model_dir)
    removed = [v for v in versions if v not in _kept_versions(versions, config)]
    for v in removed:
        # rename first: a folder that vanishes piecemeal could be half-read by a polling server
        doomed = Path(tempfile.mkdtemp(prefix=f".removed-{v}-", dir=model_dir))
        os.rename(model_dir / str(v), doomed / str(v))
        shutil.rmtree(doomed, ignore_errors=True)
    return removed


def _write_config(model_dir: Path, config: ModelConfig, replaced_version: int | None) -> None:
    text = config_to_text(config)
    if parse_config(text, source=f"{model_dir.name}/config.pbtxt") != config:
        raise RepositoryError(f"{model_dir.name}/config.pbtxt does not parse back to the config that was written")
    current = model_dir / "config.pbtxt"
    if replaced_version is not None and current.is_file():
        shutil.copy2(current, model_dir / f"config.v{replaced_version}.pbtxt")
    atomic_write_text(current, text)


def install_model(staged: Path, repository: Path) -> Path:
    """Move one staged model folder into ``repository`` as a new version.

    ``staged`` is a model folder (``config.pbtxt``, exactly one numeric version folder, any
    other model-level files such as ``warmup/``, ``vocabularies.json``, ``tritonrec.json``)
    on the same filesystem as ``repository``. When the model is new, the whole folder is
    renamed into place. Otherwise the staged version folder must be numbered above every
    existing one; it is renamed in, model-level files are replaced one by one (each
    atomically), the config is replaced last (the old one kept as ``config.v<N>.pbtxt``),
    and versions the policy no longer keeps are pruned (:func:`prune_versions`).

    Returns:
        The installed model folder.

    Raises:
        RepositoryError: no config or not exactly one version folder staged, or a staged
            version that is not newer than the installed ones.
    """
    staged, repository = Path(staged), Path(repository)
    config = read_config(staged / "config.pbtxt")
    staged_versions = model_versions(staged)
    if len(staged_versions) != 1:
        raise RepositoryError(f"{staged}: expected exactly one staged version folder, found {staged_versions}")
    version = staged_versions[0]
    target = repository / staged.name
    repository.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        os.rename(staged, target)
        return target
    existing = model_versions(target)
    if existing and version <= existing[-1]:
        raise RepositoryError(
            f"{target}: version {version} is not newer than the installed version {existing[-1]}",
            hint="a rebuild must add a new version; versions a server may be serving are never rewritten",
        )
    os.rename(staged / str(version), target / str(version))
    for item in sorted(staged.iterdir()):
        if item.name == "config.pbtxt":
            continue
        dest = target / item.name
        if item.is_dir():
            old = None
            if dest.exists():
                old = Path(tempfile.mkdtemp(prefix=f".old-{item.name}-", dir=target))
                os.rename(dest, old / item.name)
            os.rename(item, dest)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(item, dest)
    _write_config(target, config, existing[-1] if existing else None)
    prune_versions(target, config)
    return target


def write_version(repository: Path, model: str, config: ModelConfig, *, source_version: int | None = None) -> Path:
    """Write ``config`` as version N+1 of ``repository/model``: a copy of version N's files plus the new config.

    Triton keeps one ``config.pbtxt`` per model, so the new config replaces it; the previous one
    is kept as ``config.v<N>.pbtxt`` (for rolling back) and version N's folder is left as it was.
    The new version folder is copied under a hidden name and renamed into place, and the config
    is parsed back before it atomically replaces the old one, so a server polling the repository
    never sees half a version. Under a ``specific`` version policy the new version replaces the
    listed ones (``latest`` and ``all`` serve it as they are). Used by ``tritonrec tune``.

    Args:
        source_version: the version whose files are copied (default: the highest).

    Returns:
        The new version folder.

    Raises:
        RepositoryError: the model has no ``config.pbtxt`` or no numeric version folder, the
            config names another model, or it does not parse back to itself.
    """
    model_dir = Path(repository) / model
    if not (model_dir / "config.pbtxt").is_file():
        raise RepositoryError(f"{model_dir} has no config.pbtxt", hint="pass the repository folder and a model in it")
    if config.name and config.name != model:
        raise RepositoryError(f"the config is for model {config.name!r}, not {model!r}")
    versions = model_versions(model_dir)
    if not versions:
        raise RepositoryError(f"{model_dir} has no version folder (1/, 2/, ...) to copy")
    source = versions[-1] if source_version is None else source_version
    if source not in versions:
        raise RepositoryError(f"{model_dir} has no version {source} (it has {', '.join(map(str, versions))})")
    new = versions[-1] + 1
    out = ModelConfig()
    out.CopyFrom(config)
    out.name = model
    if out.version_policy.HasField("specific"):
        del out.version_policy.specific.versions[:]
        out.version_policy.specific.versions.append(new)
    text = config_to_text(out)
    if parse_config(text, source=f"{model}/config.pbtxt (version {new})") != out:
        raise RepositoryError(f"{model}/config.pbtxt does not parse back to the config that was written")

    staging = make_temporary_directory(".tune-version-", model_dir)
    try:
        # the model's files, not what a server wrote next to them (the Python backend's __pycache__)
        shutil.copytree(model_dir / str(source), staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        os.rename(staging, model_dir / str(new))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _write_config(model_dir, out, versions[-1])
    return model_dir / str(new)
