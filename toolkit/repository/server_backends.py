"""Which Triton server `tritonrec serve` would start here, and its backends folder.

Found without copying or starting anything, so that ``tritonrec validate`` (the repository
stage) can check a model's backend against the server that will serve it; the serving stage
(:mod:`toolkit.serving.server`) starts that server.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
from pathlib import Path

from toolkit.errors import ServingError

__all__ = ["STOCK_BACKENDS", "INSTALL_HINT", "default_server_backends"]

#: Where the stock container ``nvcr.io/nvidia/tritonserver`` keeps its backends.
STOCK_BACKENDS = Path("/opt/tritonserver/backends")
INSTALL_HINT = "run `make install`, or `pip install --no-deps nvidia-pytriton==0.7.0` into this virtualenv"


def default_server_backends() -> tuple[str, Path | None]:
    """The server :func:`toolkit.serving.server.find_tritonserver` would pick, in words, and its backends folder, found
    without copying or starting anything (``tritonrec validate`` checks backends against it).

    Returns:
        ``("tritonserver at /opt/tritonserver/bin/tritonserver", Path("/opt/tritonserver/backends"))``
        for a server on ``PATH`` (``None`` when ``/opt/tritonserver/backends`` does not exist:
        the binary's own default is unknown), or ``("the bundled Triton server (nvidia-pytriton
        0.7.0)", <wheel>/pytriton/tritonserver/backends)``.

    Raises:
        ServingError: no server is installed (neither on ``PATH`` nor the wheel).
    """
    on_path = shutil.which("tritonserver")
    if on_path:
        return f"tritonserver at {on_path}", (STOCK_BACKENDS if STOCK_BACKENDS.is_dir() else None)
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServingError("no Triton server found: `tritonserver` is not on PATH and nvidia-pytriton is not installed", hint=INSTALL_HINT)
    dist = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    try:
        version = importlib.metadata.version("nvidia-pytriton")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown version"
    return f"the bundled Triton server (nvidia-pytriton {version})", dist / "backends"
