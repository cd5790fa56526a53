"""Install a set of staged files into a folder, all or nothing (private helper).

An ONNX model with external data is several files (``model.onnx`` plus ``model.onnx.data``)
that must change together: a new ``model.onnx`` next to an old ``model.onnx.data`` reads
the wrong weights. :func:`install_files` moves every staged file into place after moving
the previous versions aside; if any move fails, the files already moved are taken back and
the previous versions restored, so the destination is either all old or all new.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["staging_dir", "install_files"]


@contextlib.contextmanager
def staging_dir(dest_dir: Path, name: str) -> Iterator[Path]:
    """Yield a fresh temporary folder inside ``dest_dir`` (same filesystem), removed afterwards.

    Its name, ``.<name>.tmp-XXXX``, matches the repository's ``*.tmp-*`` ignore pattern.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=dest_dir))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def install_files(staging: Path, rel_paths: Sequence[str], dest_dir: Path) -> list[Path]:
    """Move ``staging/<rel>`` to ``dest_dir/<rel>`` for every ``rel``, replacing old files.

    Each existing destination file is first renamed aside (``.<name>.old-XXXX``); then the new
    files are renamed into place. If a rename fails, the new files already placed are removed
    and the old ones renamed back before the error propagates. On success the old files are
    deleted. ``staging`` and ``dest_dir`` must be on the same filesystem (renames are atomic).

    Returns:
        The installed paths, in the order of ``rel_paths``.

    Raises:
        OSError: a rename failed (the destination has been restored to its previous state).
    """
    staging, dest_dir = Path(staging), Path(dest_dir)
    moved_aside: list[tuple[Path, Path]] = []  # (original, backup)
    placed: list[Path] = []
    try:
        for rel in rel_paths:
            target = dest_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists() or target.is_symlink():
                fd, backup_name = tempfile.mkstemp(prefix=f".{target.name}.old-", dir=target.parent)
                os.close(fd)
                backup = Path(backup_name)
                try:
                    os.replace(target, backup)
                except BaseException:
                    os.unlink(backup)
                    raise
                moved_aside.append((target, backup))
        for rel in rel_paths:
            target = dest_dir / rel
            os.rename(staging / rel, target)
            placed.append(target)
    except BaseException:
        for path in placed:
            with contextlib.suppress(OSError):
                os.unlink(path)
        for original, backup in reversed(moved_aside):
            with contextlib.suppress(OSError):
                os.rename(backup, original)
        raise
    for _, backup in moved_aside:
        with contextlib.suppress(OSError):
            os.unlink(backup)
    return [dest_dir / rel for rel in rel_paths]
