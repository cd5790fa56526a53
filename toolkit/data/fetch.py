"""Obtain MovieLens-100K at set-up time, from the ``recbole==1.2.1`` wheel on PyPI.

MovieLens' licence forbids redistribution, so the files are never committed: this
module downloads the wheel that ships them (``recbole/dataset_example/ml-100k/``, RecBole's
atomic layout) with pip and extracts the three files into a git-ignored cache folder.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from toolkit._io import atomic_directory
from toolkit.data.movielens import ATOMIC_FILES, load_movielens
from toolkit.errors import DataError

__all__ = ["fetch_movielens", "RECBOLE_REQUIREMENT"]

RECBOLE_REQUIREMENT = "recbole==1.2.1"
_MEMBER_DIR = "recbole/dataset_example/ml-100k/"


def fetch_movielens(dest: Path, *, wheel: Path | None = None, force: bool = False) -> Path:
    """Make sure ``dest`` holds MovieLens-100K in RecBole's atomic layout; return ``dest``.

    Does nothing when ``dest`` already loads cleanly (unless ``force``). Otherwise
    extracts the files from ``wheel`` (a local ``recbole-1.2.1-*.whl``) or, without
    one, from the wheel downloaded with ``pip download --no-deps recbole==1.2.1``.
    The folder is written atomically: an interrupted fetch leaves the old one.

    Raises:
        DataError: pip cannot download the wheel, or the wheel lacks the files.
    """
    dest = Path(dest)
    if not force and dest.is_dir():
        try:
            load_movielens(dest)
            return dest
        except DataError:
            pass  # incomplete or corrupt: fetch again
    with tempfile.TemporaryDirectory(prefix="tritonrec-fetch-") as tmp:
        if wheel is None:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, RECBOLE_REQUIREMENT]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise DataError(
                    f"`pip download {RECBOLE_REQUIREMENT}` failed: {done.stderr.strip().splitlines()[-1:]}",
                    hint="check that PyPI is reachable, or pass a local wheel with --wheel",
                )
            wheels = sorted(Path(tmp).glob("recbole-*.whl"))
            if not wheels:
                raise DataError(f"pip download {RECBOLE_REQUIREMENT} produced no wheel in {tmp}")
            wheel = wheels[0]
        if not Path(wheel).is_file():
            raise DataError(
                f"recbole wheel {wheel} does not exist", hint="pass the path of a recbole-1.2.1 wheel, or omit --wheel to download it"
            )
        with atomic_directory(dest) as out:
            try:
                with zipfile.ZipFile(wheel) as zf:
                    for name in ATOMIC_FILES:
                        (out / name).write_bytes(zf.read(_MEMBER_DIR + name))
            except (KeyError, zipfile.BadZipFile) as exc:
                raise DataError(f"{wheel}: not a recbole wheel holding {_MEMBER_DIR} ({exc})") from exc
            load_movielens(out)  # refuse to install a copy that does not load
    return dest
