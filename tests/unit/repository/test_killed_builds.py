"""A build killed outright (SIGKILL) leaves its staging folder behind; the next build removes it.

Each build here is a real ``build_repository`` in its own Python process, killed (or stopped)
while its staging folder next to the repository holds staged models. Triton is not involved
until the last test, which shows why the staging folder never sits inside the repository:
the server tries every folder at the top of a repository as a model, hidden ones included.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from toolkit.data import Splits
from toolkit.errors import RepositoryError
from toolkit.export import export_onnx
from toolkit.models import DLRM, dlrm_example_inputs
from toolkit.repository import build_repository, validate_repository
from toolkit.repository.versions import (
    folder_owner,
    make_owned_directory,
    model_versions,
    remove_abandoned_folders,
    staging_prefix,
)
from toolkit.train import TrainConfig, dlrm_config_for, save_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[3]
# pytorch first (its config is staged within a second), then INT8 quantization, the ensembles
# and the INT8-against-FP32 timing: seconds of staging left to be killed in.
VARIANTS = ["pytorch", "onnx_python", "onnx_int8_python"]
BUILD_SCRIPT = """
import sys
from pathlib import Path
from toolkit.repository import build_repository
build_repository(Path(sys.argv[1]), checkpoint=Path(sys.argv[2]), onnx_model=Path(sys.argv[3]),
                 variants=sys.argv[4].split(","), ensembles=True)
"""


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory, synthetic_splits: Splits) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("artifacts")
    torch.manual_seed(0)
    model = DLRM(dlrm_config_for(synthetic_splits.encoder, TrainConfig(embedding_dim=8, bottom_mlp=[16], top_mlp=[16])))
    checkpoint = save_checkpoint(root / "checkpoint", model, synthetic_splits.encoder, {"test_auc": 0.5})
    onnx = export_onnx(model, dlrm_example_inputs(model.config, 8), ["probability"], root / "onnx" / "model.onnx")
    return SimpleNamespace(checkpoint=checkpoint, onnx=onnx)


@pytest.fixture
def repository(tmp_path: Path, artifacts: SimpleNamespace) -> Path:
    """A repository holding one finished build (version 1 of every model)."""
    repo = tmp_path / "model_repository"
    build_repository(repo, checkpoint=artifacts.checkpoint, onnx_model=artifacts.onnx, variants=VARIANTS, ensembles=True)
    return repo


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def _staging_folders(repository: Path) -> list[Path]:
    return sorted(repository.parent.glob(staging_prefix(repository) + "*"))


@pytest.fixture
def start_build(artifacts: SimpleNamespace) -> Iterator:
    """Start a real build of ``repository`` in a child process and wait until its staging folder holds a
    staged model; returns (process, staging folder). Children still running at teardown are killed."""
    started: list[subprocess.Popen] = []

    def start(repository: Path) -> tuple[subprocess.Popen, Path]:
        before = set(_staging_folders(repository))
        proc = subprocess.Popen(
            [sys.executable, "-c", BUILD_SCRIPT, str(repository), str(artifacts.checkpoint), str(artifacts.onnx), ",".join(VARIANTS)],
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        started.append(proc)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            new = [p for p in _staging_folders(repository) if p not in before]
            if new and list(new[0].glob("*/config.pbtxt")):
                return proc, new[0]
            if proc.poll() is not None:
                pytest.fail(f"the build ended (exit {proc.returncode}) before it was seen staging: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.005)
        pytest.fail("the build did not stage a model within 120 s")

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stderr.close()


def test_a_staging_folder_names_the_process_that_builds(repository: Path, start_build) -> None:
    proc, staging = start_build(repository)
    owner = folder_owner(staging.name, staging_prefix(repository))
    proc.kill()
    proc.wait()
    assert owner is not None and owner.pid == proc.pid
    assert staging.name.startswith(f".{repository.name}.staging-{proc.pid}-")


def test_the_next_build_removes_the_staging_folder_of_a_killed_build_and_the_repository_stays_whole(
    repository: Path, artifacts: SimpleNamespace, start_build
) -> None:
    before = _snapshot(repository)
    proc, staging = start_build(repository)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert staging.is_dir() and list(staging.glob("*/config.pbtxt"))  # what SIGKILL leaves: nothing ran to clean up

    # the killed build changed nothing in the repository, and nothing there lists its folder
    assert _snapshot(repository) == before
    assert [f for f in validate_repository(repository) if f.severity == "error"] == []

    lines: list[str] = []
    built = build_repository(
        repository, checkpoint=artifacts.checkpoint, onnx_model=artifacts.onnx, variants=VARIANTS, ensembles=True, progress=lines.append
    )
    assert not staging.exists()
    assert _staging_folders(repository) == []  # the next build's own folder is gone too
    assert f"removed {staging}: left by a build whose process is gone" in lines
    assert sorted(m.version for m in built) == [2] * len(built)
    for model in built:
        assert model_versions(model.path) == [1, 2]
        for name, content in before.items():  # version 1 untouched
            if name.startswith(f"{model.name}/1/"):
                assert (repository / name).read_bytes() == content
    assert [f for f in validate_repository(repository) if f.severity == "error"] == []


def test_the_staging_folder_of_a_build_still_running_is_kept(repository: Path, artifacts: SimpleNamespace, start_build) -> None:
    proc, staging = start_build(repository)
    os.kill(proc.pid, signal.SIGSTOP)  # alive, but it stages nothing more while we look
    try:
        staged = _snapshot(staging)
        lines: list[str] = []
        build_repository(
            repository, checkpoint=artifacts.checkpoint, onnx_model=artifacts.onnx, variants=["pytorch"], progress=lines.append
        )
        assert _snapshot(staging) == staged
        assert f"left {staging} alone: process {proc.pid} still runs" in lines
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    # once it is gone, its folder is a leftover like any other
    assert remove_abandoned_folders(repository).removed == [staging]
    assert not staging.exists()


def test_a_reused_pid_does_not_keep_a_leftover_alive(tmp_path: Path) -> None:
    # A folder named for this process but an earlier start time: the pid now belongs to a newer process.
    mine = make_owned_directory(staging_prefix(tmp_path / "repo"), tmp_path)
    owner = folder_owner(mine.name, staging_prefix(tmp_path / "repo"))
    older = mine.with_name(mine.name.replace(f"-{owner.start_ticks}-", f"-{max(owner.start_ticks - 1, 1)}-", 1))
    os.rename(mine, older)
    assert remove_abandoned_folders(tmp_path / "repo").removed == [older]


def test_folders_of_other_hosts_and_of_older_tritonrec_are_kept_with_the_reason(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    prefix = staging_prefix(repo)
    other_host = tmp_path / f"{prefix}1-1-abcd1234@elsewhere+1"
    legacy = tmp_path / f"{prefix}k2j3h4g5"  # tempfile.mkdtemp's name, as older builds made it
    for folder in (other_host, legacy):
        folder.mkdir()
    found = remove_abandoned_folders(repo)
    assert found.removed == []
    reasons = dict(found.kept)
    assert "made on host elsewhere+1" in reasons[other_host]
    assert "older tritonrec" in reasons[legacy]


def test_a_killed_install_leaves_no_old_files_in_the_model_folder_for_good(tmp_path: Path) -> None:
    # install_model moves replaced model-level folders (warmup/) and pruned versions aside under
    # owned names: a process killed between the move and the delete leaves them, the next build deletes them.
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    dead_pid = int(child.stdout)
    model_dir = tmp_path / "repo" / "m"
    (model_dir / "1").mkdir(parents=True)
    left = [model_dir / f".old-warmup-{dead_pid}-5-abcd1234@x", model_dir / f".removed-1-{dead_pid}-5-efgh5678@x"]
    for folder in left:
        folder.mkdir()
    host = folder_owner(make_owned_directory(".probe-", tmp_path).name, ".probe-").host
    renamed = [f.rename(f.with_name(f.name.replace("@x", f"@{host}"))) for f in left]
    assert sorted(remove_abandoned_folders(tmp_path / "repo").removed) == sorted(renamed)
    assert [p.name for p in model_dir.iterdir()] == ["1"]


def test_a_repository_on_another_filesystem_than_its_parent_is_refused_before_any_work(artifacts: SimpleNamespace) -> None:
    mount = Path("/dev/shm")  # tmpfs, a mount point on Linux
    if not mount.is_dir() or os.stat(mount).st_dev == os.stat(mount.parent).st_dev:
        pytest.skip("no mount point (/dev/shm) to build into on this machine")
    with pytest.raises(RepositoryError, match="on another filesystem than its parent folder"):
        build_repository(mount, checkpoint=artifacts.checkpoint, variants=["pytorch"])


IDENTITY_MODEL = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy())]) for r in requests]
"""


@pytest.mark.integration
def test_triton_serves_only_the_built_models_after_a_killed_build_and_would_load_a_hidden_folder(repository: Path, start_build) -> None:
    from toolkit.serving import TritonServer, free_ports

    proc, staging = start_build(repository)
    proc.kill()
    proc.wait()
    built = sorted(p.name for p in repository.iterdir())
    # Why staging never happens inside the repository: Triton 2.51 tries hidden folders as models.
    hidden = repository / ".hidden_model"
    (hidden / "1").mkdir(parents=True)
    (hidden / "1" / "model.py").write_text(IDENTITY_MODEL)
    (hidden / "config.pbtxt").write_text(
        'name: ".hidden_model"\nbackend: "python"\nmax_batch_size: 4\n'
        'input [{name: "x" data_type: TYPE_FP32 dims: [1]}]\noutput [{name: "y" data_type: TYPE_FP32 dims: [1]}]\n'
    )
    http_port, grpc_port, metrics_port = free_ports(3)
    with TritonServer(repository, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port) as server:
        states = {s.name: s.state for s in server.model_states()}
        log = server.log_tail(10_000)
    assert states == {**{name: "READY" for name in built}, ".hidden_model": "READY"}
    assert staging.is_dir() and staging.name not in log  # the leftover sits next to the repository: the server never saw it
