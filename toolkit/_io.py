"""Atomic writes: every artifact is written to a temporary path and renamed into place.

A failed or interrupted write leaves the previous artifact intact (DESIGN.md, Conventions).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_directory", "atomic_write_text", "atomic_write_json", "make_temporary_directory", "readable_by_others"]


def _umask() -> int:
    """The process umask, read without changing it (``/proc/self/status``; else set and restored)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def readable_by_others(path: Path) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would have (0666/0777 minus the umask).

    ``tempfile.mkstemp``/``mkdtemp`` create owner-only files (0600/0700); an artifact renamed
    into place from one would stay unreadable to a server running as another user (a
    Triton container with ``--user``, a Kubernetes pod reading a shared volume).
    """
    path = Path(path)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~_umask())


def make_temporary_directory(prefix: str, dir: Path) -> Path:  # noqa: A002 (tempfile's own name)
    """``tempfile.mkdtemp`` in ``dir``, with the mode of a plain ``mkdir`` (see :func:`readable_by_others`)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=dir))
    readable_by_others(tmp)
    return tmp


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        readable_by_others(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (see :func:`atomic_write_text`)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces ``target`` when the block succeeds.

    The temporary directory is a sibling of ``target`` (same filesystem, so the final
    rename is atomic). If the block raises, the temporary directory is removed and
    ``target`` is left exactly as it was. If it succeeds, an existing ``target`` is
    moved aside, the new directory renamed into place, and the old one deleted.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temporary_directory(f".{target.name}.tmp-", target.parent)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.rmdir(old)
        os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
