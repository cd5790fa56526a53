"""Find, start and stop a real Triton Inference Server.

Two installations are supported (DESIGN.md, "Facts about the real components"):

* ``tritonserver`` on ``PATH`` -- the stock container ``nvcr.io/nvidia/tritonserver:<yy.mm>-py3``,
  whose backends live in ``/opt/tritonserver/backends``;
* the server bundled in the ``nvidia-pytriton`` wheel (Triton 2.51, CPU, Python backend only).
  Its files are copied once into a cache folder, the Python-backend stub for the running
  interpreter is put into ``backends/python/``, and the server runs with the wheel's
  libraries on ``LD_LIBRARY_PATH`` and this virtualenv's ``bin`` first on ``PATH`` (so that
  Python-backend models import this environment's numpy, onnxruntime and torch).

Only the server binary of the wheel is used; pytriton's Python API is never imported.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import http.client
import importlib.metadata
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from toolkit.errors import PortInUseError, RepositoryError, ServingError
from toolkit.repository.config import read_config
from toolkit.repository.server_backends import INSTALL_HINT as _INSTALL_HINT
from toolkit.repository.server_backends import STOCK_BACKENDS as _STOCK_BACKENDS
from toolkit.repository.server_backends import default_server_backends

__all__ = [
    "DEFAULT_RESPONSE_CACHE_BYTES",
    "TritonInstallation",
    "TritonServer",
    "ModelState",
    "default_server_backends",
    "explain_load_failure",
    "find_tritonserver",
    "load_errors_in_log",
    "free_port",
    "free_ports",
]

_STOCK_CACHES = Path("/opt/tritonserver/caches")
# What a client raises while the server is not (yet) reachable.
_UNREACHABLE = (InferenceServerException, OSError, http.client.HTTPException)
_PENDING_STATES = {"LOADING", "UNLOADING"}


@dataclass(frozen=True)
class TritonInstallation:
    """A runnable ``tritonserver`` and the environment it needs.

    Attributes:
        executable: path of the ``tritonserver`` binary.
        backend_directory: folder passed as ``--backend-directory`` (``None``: the binary's default).
        cache_directory: folder passed as ``--cache-directory`` (``None``: the binary's default).
        env: variables to set on top of ``os.environ`` when starting it (``LD_LIBRARY_PATH``, ``PATH``).
        source: ``"path"`` (found on ``PATH``) or ``"nvidia-pytriton <version>"`` (the wheel's server).
    """

    executable: Path
    backend_directory: Path | None
    cache_directory: Path | None
    env: dict[str, str] = field(default_factory=dict)
    source: str = "path"

    def environment(self) -> dict[str, str]:
        """``os.environ`` with :attr:`env` applied: what the server process is started with."""
        return {**os.environ, **self.env}


def find_tritonserver() -> TritonInstallation:
    """Locate a Triton server: ``tritonserver`` on ``PATH``, else the one in the nvidia-pytriton wheel.

    For the wheel's server this prepares (once, atomically) a working copy under
    ``$TRITONREC_CACHE_DIR`` or ``${XDG_CACHE_HOME:-~/.cache}/tritonrec`` with the Python-backend
    stub for the running interpreter's ``major.minor``.

    Raises:
        ServingError: neither is installed, the wheel has no stub for this Python, or a shared
            library the server or the stub needs is missing (e.g. Debian's ``libpython3.11``).
    """
    on_path = shutil.which("tritonserver")
    if on_path:
        return TritonInstallation(
            executable=Path(on_path),
            backend_directory=_STOCK_BACKENDS if _STOCK_BACKENDS.is_dir() else None,
            cache_directory=_STOCK_CACHES if _STOCK_CACHES.is_dir() else None,
        )
    spec = importlib.util.find_spec("pytriton")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ServingError("no Triton server found: `tritonserver` is not on PATH and nvidia-pytriton is not installed", hint=_INSTALL_HINT)
    package = Path(next(iter(spec.submodule_search_locations)))
    dist = package / "tritonserver"
    if not (dist / "bin" / "tritonserver").is_file():
        raise ServingError(
            f"the nvidia-pytriton package at {package} has no server binary {dist / 'bin' / 'tritonserver'}", hint=_INSTALL_HINT
        )
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = dist / "python_backend_stubs" / python / "triton_python_backend_stub"
    if not stub.is_file():
        available = sorted(p.name for p in (dist / "python_backend_stubs").iterdir())
        raise ServingError(
            f"nvidia-pytriton has no Python-backend stub for Python {python} (it has {', '.join(available)})",
            hint="use one of those Python versions",
        )

    version = importlib.metadata.version("nvidia-pytriton")
    workdir = _prepare_workdir(dist, stub, _cache_root() / f"tritonserver-{version}-py{python}")
    libs = [package.parent / "nvidia_pytriton.libs", workdir / "lib"]
    ld_path = [str(p) for p in libs if p.is_dir()] + [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    venv_bin = os.path.dirname(sys.executable)
    installation = TritonInstallation(
        executable=workdir / "bin" / "tritonserver",
        backend_directory=workdir / "backends",
        cache_directory=workdir / "caches",
        env={"LD_LIBRARY_PATH": os.pathsep.join(ld_path), "PATH": os.pathsep.join([venv_bin, os.environ.get("PATH", "")])},
        source=f"nvidia-pytriton {version}",
    )
    _check_libraries(installation, [installation.executable, workdir / "backends" / "python" / "triton_python_backend_stub"])
    return installation


def _cache_root() -> Path:
    if os.environ.get("TRITONREC_CACHE_DIR"):
        return Path(os.environ["TRITONREC_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tritonrec"


def _prepare_workdir(dist: Path, stub: Path, target: Path) -> Path:
    """Copy the wheel's server to ``target`` with ``stub`` in ``backends/python/``; reuse it if present."""
    if (target / "backends" / "python" / "triton_python_backend_stub").is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    except OSError:  # read-only home: a private copy for this process
        tmp = Path(tempfile.mkdtemp(prefix="tritonrec-tritonserver-"))
        target = tmp
    try:
        shutil.copytree(dist, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("python_backend_stubs", "__pycache__"))
        shutil.copy2(stub, tmp / "backends" / "python" / "triton_python_backend_stub")
        if tmp != target:
            os.rename(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "backends" / "python" / "triton_python_backend_stub").is_file():
            raise
        # another process finished the same copy first: use theirs
    return target


def _check_libraries(installation: TritonInstallation, binaries: Sequence[Path]) -> None:
    ldd = shutil.which("ldd")
    if ldd is None:
        return
    env = installation.environment()
    missing: list[str] = []
    for binary in binaries:
        out = subprocess.run([ldd, str(binary)], env=env, capture_output=True, text=True, check=False).stdout
        missing += [f"{line.split()[0]} (needed by {binary.name})" for line in out.splitlines() if "not found" in line]
    if missing:
        hint = (
            "on Debian/Ubuntu: `apt-get install libpython3.11` (or `make system-deps`)"
            if any("libpython" in m for m in missing)
            else _INSTALL_HINT
        )
        raise ServingError(f"the Triton server cannot run, shared libraries are missing: {', '.join(missing)}", hint=hint)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it by binding port 0)."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports that are free on ``host`` right now (all bound at once, then released)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]


def _check_port_free(host: str, port: int, flag: str) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR as the server sets it: a port whose old connections linger in TIME_WAIT is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise PortInUseError(
                f"port {port} on {host} (Triton {flag}) is already in use: {e.strerror}",
                hint=f"stop whatever listens on {port} (`ss -ltnp 'sport = :{port}'`), or choose another port with {flag}",
            ) from e


@dataclass(frozen=True)
class ModelState:
    """One entry of the server's model repository index.

    Attributes:
        name: model name (its folder in the repository).
        version: version folder, e.g. ``"1"`` (``""`` when the server reports none).
        state: ``"READY"``, ``"UNAVAILABLE"``, ``"LOADING"``, ... as Triton reports it.
        reason: why the model is not ready (Triton's load error), ``""`` otherwise.
    """

    name: str
    version: str
    state: str
    reason: str


_LIVE_SERVERS: weakref.WeakSet[TritonServer] = weakref.WeakSet()


@atexit.register
def _stop_live_servers() -> None:
    for server in list(_LIVE_SERVERS):
        server.stop(timeout_s=10)


_libc: ctypes.CDLL | None = None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _libc is not None:
        _libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: SIGTERM when the parent dies, even by SIGKILL


_MISSING_BACKEND = {
    "onnxruntime": "needs Triton's onnxruntime backend, which this server lacks: it loads in the stock container "
    "(nvcr.io/nvidia/tritonserver:<yy.mm>-py3); the model's *_python twin serves the same ONNX file here",
    "tensorrt": "needs Triton's TensorRT backend and the GPU the plan was built for: it loads in the stock container on that GPU",
}


def explain_load_failure(reason: str) -> str:
    """Triton's load error of a model, with a plain explanation first when the cause is a known one.

    The bundled server has no onnxruntime or TensorRT backend, and Triton's own message for
    that ("unable to find backend library for backend 'onnxruntime', try specifying runtime on
    the model configuration") suggests the wrong fix. Python tracebacks ("At: ...") are dropped.
    """
    first = reason.strip().split("\n\n")[0]
    for backend, why in _MISSING_BACKEND.items():
        if f"backend library for backend '{backend}'" in reason:
            return f"{why} (Triton: {first})"
    return first


# Triton 2.51's log lines for a model that did not load (model_repository_manager.cc, model_lifecycle.cc):
#   E... model_repository_manager.cc:1460] "Poll failed for model directory 'm': <reason>"
#   E... model_repository_manager.cc:724] "failed to load model 'm': <reason>"
#   E... model_repository_manager.cc:703] "Invalid argument: ensemble m allows maximum batch size 512, but ..."
#   E... model_repository_manager.cc:703] "Invalid argument: in ensemble m, ensemble tensor x is mapping to ..."
#   E... model_repository_manager.cc:703] "Invalid argument: ensemble 'm' depends on 'p' whose required version 9 is not loaded."
#   E... model_lifecycle.cc:642] "failed to load 'm' version 1: <reason>"
# and protobuf's own line just before a config that does not parse:
#   [libprotobuf ERROR .../text_format.cc:337] Error parsing text-format inference.ModelConfig: 3:17: Expected integer, got: eight
_POLL_FAILED = re.compile(r"""Poll failed for model directory '(?P<name>[^']+)': (?P<reason>.*?)"?$""")
_LOAD_FAILED = re.compile(r"""failed to load (?:model )?'(?P<name>[^']+)'(?: version \d+)?: (?P<reason>.*?)"?$""")
_ENSEMBLE_FAILED = re.compile(
    r"""model_repository_manager\.cc:\d+\] "(?P<reason>(?:[A-Za-z ]+: )?(?:in )?ensemble '?(?P<name>[^',\s]+)'?[, ].*?)"?$"""
)
_PROTOBUF_ERROR = re.compile(r"Error parsing text-format inference\.ModelConfig: (?P<detail>.*)$")


def load_errors_in_log(log_text: str) -> dict[str, str]:
    """Why each model did not load, as Triton's log says it: model name -> reason (the last one logged).

    Models refused while their config is read ("Poll failed for model directory ...") appear
    in the repository index without a state or reason; this is where Triton says why. A config
    that does not parse is logged as "failed to read text proto from <file>", with protobuf's
    parse error (line:column and what it expected) on the line before; both are joined.
    Ensembles Triton refuses (a step's tensor or batch size that does not fit) are listed the
    same way, their reason only in the log. Load failures ("failed to load 'm' version N: ...")
    are included too.

    Args:
        log_text: the server's log (stdout and stderr), as :class:`TritonServer` writes it.
    """
    reasons: dict[str, str] = {}
    detail: str | None = None
    for line in log_text.splitlines():
        parse = _PROTOBUF_ERROR.search(line)
        if parse:
            detail = parse.group("detail").strip()
            continue
        match = _POLL_FAILED.search(line) or _LOAD_FAILED.search(line) or _ENSEMBLE_FAILED.search(line)
        if match:
            reason = match.group("reason").replace('\\"', '"').strip()
            if detail is not None and "failed to read text proto" in reason:
                reason = f"{reason}: {detail}"
            reasons[match.group("name")] = reason
        detail = None if match or not line.strip() else detail
    return reasons


DEFAULT_RESPONSE_CACHE_BYTES = 256 * 1024 * 1024
"""Local response cache a server gets when a model asks for one (Triton docs, "Triton Response Cache")."""


def _wants_response_cache(repository: Path) -> bool:
    """Whether any model config in ``repository`` enables ``response_cache`` (unparsable configs are skipped)."""
    for config_path in Path(repository).glob("*/config.pbtxt"):
        try:
            if read_config(config_path).response_cache.enable:
                return True
        except RepositoryError:
            continue
    return False


class TritonServer:
    """A ``tritonserver`` process serving one model repository; a context manager.

    ``with TritonServer(repo, http_port=free_port()) as server:`` starts the server and waits
    until it is live and every model has finished loading (READY or UNAVAILABLE; models that
    fail to load are reported by :meth:`model_states`, the others serve). Leaving the block
    stops it. The server is also stopped when the interpreter exits, and (on Linux) gets
    SIGTERM if the Python process dies without cleaning up, so no orphan server is left
    (the signal follows the *thread* that called :meth:`start`: start it from a thread that
    outlives the server, e.g. the main thread).

    Args:
        model_repository: the repository folder (``<model>/config.pbtxt``, ``<model>/<version>/...``).
        host: address the HTTP, gRPC and metrics endpoints bind to; ``"0.0.0.0"`` exposes them.
        http_port, grpc_port, metrics_port: TCP ports of the three endpoints.
        log_path: file for the server's stdout and stderr; default: a new temporary file.
        startup_timeout_s: seconds :meth:`start` waits for the server and its models.
        extra_args: further ``tritonserver`` flags, e.g. ``["--log-verbose=1"]``.
        installation: the server to run; default :func:`find_tritonserver`.
        response_cache_bytes: size of Triton's local response cache
            (``--cache-config=local,size=N``). ``None`` (default): :data:`DEFAULT_RESPONSE_CACHE_BYTES`
            when some model's config has ``response_cache { enable: true }`` (without a server
            cache that setting does nothing), else no cache; 0: never. A ``--cache-config`` in
            ``extra_args`` wins.
    """

    def __init__(
        self,
        model_repository: Path,
        *,
        host: str = "127.0.0.1",
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        log_path: Path | None = None,
        startup_timeout_s: float = 180.0,
        extra_args: Sequence[str] = (),
        installation: TritonInstallation | None = None,
        response_cache_bytes: int | None = None,
    ) -> None:
        self.model_repository = Path(model_repository)
        self.host = host
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.log_path = Path(log_path) if log_path is not None else None
        self.startup_timeout_s = startup_timeout_s
        self.extra_args = tuple(extra_args)
        self.installation = installation
        self.response_cache_bytes = response_cache_bytes
        self.process: subprocess.Popen[bytes] | None = None
        """The server process once started (``process.poll()`` is its exit code after :meth:`stop`)."""

    # -- addresses ---------------------------------------------------------------------------
    @property
    def _connect_host(self) -> str:
        return "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host

    @property
    def http_url(self) -> str:
        """``host:port`` of the HTTP endpoint, as ``tritonclient.http`` expects (no scheme)."""
        return f"{self._connect_host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint, as ``tritonclient.grpc`` expects."""
        return f"{self._connect_host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        """Full URL of the Prometheus metrics endpoint, e.g. ``http://127.0.0.1:8002/metrics``."""
        return f"http://{self._connect_host}:{self.metrics_port}/metrics"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> TritonServer:
        """Launch the server and wait until it is live and no model is still loading.

        Returns:
            ``self``.

        Raises:
            ServingError: already started; the repository folder does not exist; no server is
                installed; the process exits during start-up or is not ready within
                ``startup_timeout_s`` (the message ends with the last 30 lines of the log).
            PortInUseError: one of the three ports is taken on ``host`` (names the port and its flag).
        """
        global _libc
        if self.process is not None and self.process.poll() is None:
            raise ServingError(f"this Triton server is already running (pid {self.process.pid}, HTTP {self.http_url})")
        if not self.model_repository.is_dir():
            raise ServingError(
                f"model repository {self.model_repository} is not a folder",
                hint="build one first, or pass the path of an existing repository",
            )
        ports = {"--http-port": self.http_port, "--grpc-port": self.grpc_port, "--metrics-port": self.metrics_port}
        if len(set(ports.values())) < len(ports):
            raise ServingError(f"the HTTP, gRPC and metrics ports must differ, got {ports}", hint="pass three different ports")
        for flag, port in ports.items():
            _check_port_free(self.host, port, flag)
        installation = self.installation or find_tritonserver()
        self.installation = installation

        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(installation.executable),
            f"--model-repository={self.model_repository.resolve()}",
            f"--http-address={self.host}",
            f"--grpc-address={self.host}",
            f"--metrics-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--exit-on-error=false",
            "--strict-readiness=false",
            "--log-verbose=0",
        ]
        if installation.backend_directory is not None:
            cmd.append(f"--backend-directory={installation.backend_directory}")
        if installation.cache_directory is not None:
            cmd.append(f"--cache-directory={installation.cache_directory}")
        cache_bytes = self.response_cache_bytes
        if cache_bytes is None:
            cache_bytes = DEFAULT_RESPONSE_CACHE_BYTES if _wants_response_cache(self.model_repository) else 0
        if cache_bytes > 0 and not any(a.startswith("--cache-config") for a in self.extra_args):
            cmd.append(f"--cache-config=local,size={int(cache_bytes)}")
        cmd += self.extra_args
        if sys.platform.startswith("linux") and _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=installation.environment(),
                start_new_session=True,  # own process group: Ctrl-C reaches us, and stop() can kill the stubs too
                preexec_fn=_die_with_parent,
            )
        _LIVE_SERVERS.add(self)
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout_s
        pending: list[str] = []
        with contextlib.closing(httpclient.InferenceServerClient(self.http_url)) as client:
            while time.monotonic() < deadline:
                code = self.process.poll()
                if code is not None:
                    raise ServingError(
                        f"tritonserver exited with code {code} during start-up; {self._log_excerpt()}", hint=f"full log: {self.log_path}"
                    )
                try:
                    if client.is_server_live():
                        index = client.get_model_repository_index()
                        pending = [m["name"] for m in index if m.get("state", "") in _PENDING_STATES]
                        if not pending:
                            return
                except _UNREACHABLE:
                    pass
                time.sleep(0.2)
        still = f" (models still loading: {', '.join(pending)})" if pending else ""
        raise ServingError(
            f"tritonserver at {self.http_url} was not ready within {self.startup_timeout_s:g} s{still}; {self._log_excerpt()}",
            hint=f"raise the start-up timeout, or read the full log: {self.log_path}",
        )

    def stop(self, timeout_s: float = 30) -> None:
        """Stop the server: SIGINT, wait up to ``timeout_s`` seconds, then SIGKILL its process group.

        Idempotent; a no-op when the server was never started or has already exited.
        """
        _LIVE_SERVERS.discard(self)
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # -- inspection --------------------------------------------------------------------------
    def model_states(self) -> list[ModelState]:
        """The repository index: one :class:`ModelState` per model version the server knows.

        A model that is not READY and for which the index gives no reason gets Triton's own
        reason from the server log (:func:`load_errors_in_log`): models refused while their
        config is read are listed by Triton with no state, version or reason at all (their
        ``state`` stays ``""``).

        Raises:
            ServingError: the server cannot be reached over HTTP.
        """
        try:
            with contextlib.closing(httpclient.InferenceServerClient(self.http_url)) as client:
                index = client.get_model_repository_index()
        except _UNREACHABLE as e:
            raise ServingError(
                f"cannot read the model repository index from the Triton server at {self.http_url}: {e}", hint="is the server running?"
            ) from e
        states = [ModelState(m["name"], m.get("version", ""), m.get("state", ""), m.get("reason", "")) for m in index]
        if any(s.state != "READY" and not s.reason for s in states) and self.log_path is not None and self.log_path.is_file():
            logged = load_errors_in_log(self.log_path.read_text(encoding="utf-8", errors="replace"))
            states = [
                ModelState(s.name, s.version, s.state, logged.get(s.name, "")) if s.state != "READY" and not s.reason else s for s in states
            ]
        return states

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the server log (``""`` before the first start).

        The usage text that ``tritonserver`` prints after a bad flag is left out, so that the
        error line before it is what shows.
        """
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        usage = next((i for i, line in enumerate(text) if line.startswith("Usage: tritonserver")), len(text))
        return "\n".join(text[:usage][-lines:])

    def _log_excerpt(self) -> str:
        return f"last lines of {self.log_path}:\n{self.log_tail(30)}"
