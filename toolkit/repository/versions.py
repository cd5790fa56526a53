"""Versioned, atomic changes to a Triton model repository.

Triton serves numbered version folders (``<model>/1``, ``<model>/2``, ...) of one model
under one ``config.pbtxt``, choosing among them with the config's ``version_policy``
(Triton docs, "Model Repository" / "Model Configuration: Version Policy"). A server in
polling or explicit model-control mode may be serving any existing version at any time,
so every change here follows three rules:

* a new build becomes version **N+1 next to N**; an existing version folder is never
  rewritten (its files may be open in a running model instance);
* every new folder is written under a hidden name (``.<name>...``) and renamed into place,
  and the config is replaced with ``os.replace``, so a server never sees half a version or
  half a config; the previous config is kept as ``config.v<N>.pbtxt`` for rolling back.
  Inside a model folder Triton ignores a folder whose name is not a number (it logs
  "ignore version directory '.x' which fails to convert to integral number"); at the top
  of the repository it does **not** skip hidden folders: Triton 2.51 loads ``.name/`` with
  a config as a model called ``.name`` and reports any other hidden folder as a model that
  failed to load. So a build stages next to the repository, never in it;
* old versions are removed only when the version policy no longer serves them *and*
  they are not the previous version: under ``latest { num_versions: k }`` the newest
  k + 1 versions stay (the k served plus the one a server may still be serving until it
  reloads), under ``all`` every version stays, under ``specific`` the listed versions
  and the previous newest stay.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from toolkit._io import atomic_write_text, readable_by_others
from toolkit.errors import RepositoryError
from toolkit.repository.config import ModelConfig, config_to_text, parse_config, read_config

__all__ = [
    "model_folders",
    "model_versions",
    "next_version",
    "install_model",
    "prune_versions",
    "write_version",
    "staging_prefix",
    "make_owned_directory",
    "folder_owner",
    "FolderOwner",
    "Leftovers",
    "remove_abandoned_folders",
]

# Prefixes of the temporary folders made inside a model folder (install, prune, tune).
_MODEL_TEMP_PREFIXES = (".old-", ".removed-", ".tune-version-")
_HOST_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class FolderOwner:
    """The process that made a temporary folder, read back from the folder's name.

    Attributes:
        pid: its process id.
        start_ticks: its start time in clock ticks since boot (``/proc/<pid>/stat`` field
            22), so that a later process given the same pid is not mistaken for it; 0 where
            ``/proc`` is missing (then the pid alone is checked).
        host: the machine and PID namespace it ran in (``<hostname>+<pid namespace inode>``);
            only a folder of this host is ever judged abandoned.
    """

    pid: int
    start_ticks: int
    host: str


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of ``pid`` from ``/proc``; None if unreadable or gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def _this_host() -> str:
    try:
        namespace = os.readlink("/proc/self/ns/pid").removeprefix("pid:[").rstrip("]")
    except OSError:
        namespace = "0"
    return f"{_HOST_UNSAFE.sub('_', socket.gethostname()) or 'localhost'}+{namespace}"


def _this_owner() -> FolderOwner:
    stat = _proc_stat(os.getpid())
    return FolderOwner(os.getpid(), stat[1] if stat else 0, _this_host())


def _alive(owner: FolderOwner) -> bool:
    """Whether ``owner`` (a process of this host) is still running: not gone, not a zombie, not a reused pid."""
    stat = _proc_stat(owner.pid)
    if stat is None:
        try:
            os.kill(owner.pid, 0)  # no /proc entry to read (another OS, or hidepid): ask the kernel
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # a process of another user
        return not Path("/proc/self/stat").exists()  # /proc works here yet shows no such process
    state, start_ticks = stat
    if state in ("Z", "X"):  # killed, waiting to be reaped
        return False
    return owner.start_ticks == 0 or start_ticks == owner.start_ticks


def make_owned_directory(prefix: str, dir: Path) -> Path:  # noqa: A002 (tempfile's own name)
    """A new empty folder ``dir/<prefix><pid>-<start ticks>-<random>@<host>``, mode of a plain ``mkdir``.

    The name records the process that made it (:class:`FolderOwner`), written in the same
    system call that creates the folder, so however the process ends a later one can tell a
    leftover from a folder in use (:func:`remove_abandoned_folders`).

    Raises:
        OSError: the folder cannot be created (``dir`` missing or not writable).
    """
    owner = _this_owner()
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{owner.pid}-{owner.start_ticks}-", suffix=f"@{owner.host}", dir=dir))
    readable_by_others(path)
    return path


def folder_owner(name: str, prefix: str) -> FolderOwner | None:
    """The owner recorded in a folder name made by :func:`make_owned_directory` with ``prefix``; None if it has none."""
    if not name.startswith(prefix) or "@" not in name:
        return None
    stem, host = name[len(prefix) :].split("@", 1)
    parts = stem.rsplit("-", 3)  # [what, ]pid, start ticks, random part (tempfile's has no "-")
    if len(parts) < 3 or not parts[-3].isdigit() or not parts[-2].isdigit() or not host:
        return None
    return FolderOwner(int(parts[-3]), int(parts[-2]), host)


def staging_prefix(repository: Path) -> str:
    """Name prefix of the staging folders of builds into ``repository`` (they sit next to it, in its parent)."""
    return f".{Path(repository).name}.staging-"


@dataclass
class Leftovers:
    """What :func:`remove_abandoned_folders` found.

    Attributes:
        removed: folders whose process is gone, deleted.
        kept: folders left in place, with the reason (the process runs; another host made
            it; an older tritonrec made it without recording its process).
    """

    removed: list[Path]
    kept: list[tuple[Path, str]]


def _judge(path: Path, prefix: str, out: Leftovers, here: str) -> None:
    owner = folder_owner(path.name, prefix)
    if owner is None:
        out.kept.append((path, "made by an older tritonrec that did not record its process; remove it by hand if no build is running"))
    elif owner.host != here:
        out.kept.append((path, f"made on host {owner.host} (this is {here}): cannot tell whether its process runs"))
    elif _alive(owner):
        out.kept.append((path, f"process {owner.pid} still runs"))
    else:
        # rename first so that a half-deleted folder never carries a live-looking name
        doomed = path.with_name(f"{path.name}.abandoned")
        try:
            os.rename(path, doomed)
        except FileNotFoundError:
            return  # another build removed it first
        shutil.rmtree(doomed, ignore_errors=True)
        out.removed.append(path)


def remove_abandoned_folders(repository: Path) -> Leftovers:
    """Delete the temporary folders that builds of ``repository`` left behind when they were killed.

    Looks at the staging folders next to the repository (``<parent>/.<repository>.staging-*``)
    and at the temporary folders inside its model folders (``.old-*``, ``.removed-*``,
    ``.tune-version-*``). A folder is deleted only when the process its name records
    (:func:`make_owned_directory`) ran on this host and is gone (exited, killed, or its pid
    now belongs to a process started later); a folder of a running process, of another
    host, or without a recorded process is kept. ``*.abandoned`` folders (a removal that
    was itself interrupted) are deleted. Nothing here is read by Triton or by
    :func:`model_folders`; removing them only frees the disk.

    Returns:
        The folders removed and the folders kept with the reason.
    """
    repository = Path(repository)
    here = _this_host()
    out = Leftovers([], [])
    places = [(repository.parent, (staging_prefix(repository),))]
    if repository.is_dir():
        places += [(model_dir, _MODEL_TEMP_PREFIXES) for model_dir in model_folders(repository)]
    for folder, prefixes in places:
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            prefix = next((p for p in prefixes if path.name.startswith(p)), None)
            if prefix is None or not path.is_dir() or path.is_symlink():
                continue
            if path.name.endswith(".abandoned"):
                shutil.rmtree(path, ignore_errors=True)
                out.removed.append(path)
            else:
                _judge(path, prefix, out, here)
    return out


def model_folders(repository: Path) -> list[Path]:
    """The model folders of ``repository``, by name; hidden ones (names starting with ``.``) are skipped.

    tritonrec never writes a hidden folder at the top of a repository (builds stage next to
    it, :func:`staging_prefix`). Triton itself does not skip them: a hidden folder someone
    else put there is tried as a model by the server although it is not listed here.

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
        doomed = make_owned_directory(f".removed-{v}-", model_dir)
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
                old = make_owned_directory(f".old-{item.name}-", target)
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

    staging = make_owned_directory(".tune-version-", model_dir)
    try:
        # the model's files, not what a server wrote next to them (the Python backend's __pycache__)
        shutil.copytree(model_dir / str(source), staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        os.rename(staging, model_dir / str(new))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _write_config(model_dir, out, versions[-1])
    return model_dir / str(new)
