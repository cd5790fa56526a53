"""`tritonrec validate` and the real Triton server judge the same repositories the same way.

One small real repository is built (a random DLRM from the synthetic data set, exported to
ONNX: ``dlrm_onnx``, ``dlrm_onnx_python`` with a warmup row, ``dlrm_preprocess`` and
``dlrm_ensemble``). Each mutant is a copy of one of its models with one thing changed, under
a name of its own, in one repository with the unchanged models. The repository is validated
for the bundled server, strictly (a backend it lacks is an error), and served by it in explicit
model-control mode; every model is loaded and, if it loads, sent one proper request (the
unchanged model's tensors: what a client of the model sends). The server *refuses* a model
when the load fails or that request does. Validate must have an error for a model exactly when
the server refuses it; the expected verdict of each mutant is written down too, so that a
mutation that changes nothing is noticed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from toolkit.repository import BatchingOptions, build_repository, config_to_text, read_config
from toolkit.repository.config import ModelConfig
from toolkit.repository.validate import Finding, ServingTarget, validate_repository
from toolkit.serving import TritonServer, free_ports

pytestmark = pytest.mark.integration

RANKER, ENSEMBLE, PREPROCESS, ONNX_PLATFORM = "dlrm_onnx_python", "dlrm_ensemble", "dlrm_preprocess", "dlrm_onnx"
WARM = "warm_onnx_python"  # the same ranker with a model_warmup row


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, synthetic_splits) -> Path:
    """A real built repository (see the module docstring)."""
    import torch

    from toolkit.export import export_onnx
    from toolkit.models import DLRM, dlrm_example_inputs
    from toolkit.train import TrainConfig, dlrm_config_for, load_checkpoint, save_checkpoint

    root = tmp_path_factory.mktemp("validate_vs_triton")
    torch.manual_seed(0)
    model = DLRM(dlrm_config_for(synthetic_splits.encoder, TrainConfig(embedding_dim=8, bottom_mlp=[16], top_mlp=[16])))
    checkpoint = save_checkpoint(root / "checkpoint", model, synthetic_splits.encoder, {"test_auc": 0.5})
    ckpt = load_checkpoint(checkpoint)
    onnx = export_onnx(ckpt.model, dlrm_example_inputs(ckpt.config, 8), ["probability"], root / "onnx" / "model.onnx")
    repo = root / "base"
    build = dict(checkpoint=checkpoint, onnx_model=onnx)
    build_repository(repo, **build, variants=["onnx", "onnx_python"], ensembles=True, ensemble_ranker="onnx_python", top_k=None)
    build_repository(repo, **build, model_name="warm", variants=["onnx_python"], options=BatchingOptions(warmup_batch_sizes=[1]))
    assert (repo / RANKER / "1" / "model.onnx.data").is_file() and list((repo / WARM / "warmup").iterdir())
    return repo


# -- mutations -------------------------------------------------------------------------------------

Mutation = Callable[[Path], None]


def config(change: Callable[[ModelConfig], None]) -> Mutation:
    def mutate(folder: Path) -> None:
        c = read_config(folder / "config.pbtxt")
        change(c)
        (folder / "config.pbtxt").write_text(config_to_text(c))

    return mutate


def tensor(config_: ModelConfig, name: str):
    return next(t for t in (*config_.input, *config_.output) if t.name == name)


def set_dims(name: str, dims: list[int]) -> Mutation:
    return config(lambda c: (tensor(c, name).ClearField("dims"), tensor(c, name).dims.extend(dims)))


def set_dtype(name: str, data_type: int) -> Mutation:
    return config(lambda c: setattr(tensor(c, name), "data_type", data_type))


def delete(pattern: str) -> Mutation:
    def mutate(folder: Path) -> None:
        matches = list(folder.glob(pattern))
        assert matches, pattern
        for path in matches:
            path.unlink()

    return mutate


def write_config(text: str) -> Mutation:
    return lambda folder: (folder / "config.pbtxt").write_text(text)


def duplicate_input(c: ModelConfig) -> None:
    c.input.add().CopyFrom(c.input[0])


def tensorrt_plan(folder: Path) -> None:
    config(lambda c: setattr(c, "platform", "tensorrt_plan"))(folder)
    for f in (folder / "1").iterdir():
        f.unlink()
    (folder / "1" / "model.plan").write_bytes(b"not an engine")


def version_policy(*versions: int) -> Mutation:
    return config(lambda c: (c.version_policy.ClearField("latest"), c.version_policy.specific.versions.extend(versions)))


def add_instance_group(c: ModelConfig) -> None:
    c.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)


def add_unused_input(c: ModelConfig) -> None:
    c.input.add(name="unused", data_type=mc.TYPE_STRING, dims=[1])


def rename_step_input(c: ModelConfig) -> None:
    step = c.ensemble_scheduling.step[0]
    key = sorted(step.input_map)[0]
    step.input_map["not_an_input"] = step.input_map.pop(key)


# mutant -> (the model it copies, the change, what validate and the server must both say)
# "error": Triton refuses it (to load, or every proper request); "warning": a rule of ours stricter than
# Triton (it loads and answers); "clean": nothing to say.
MUTANTS: dict[str, tuple[str, Mutation | None, str]] = {
    "r_copy": (RANKER, None, "clean"),
    "r_input_dims_wrong": (RANKER, set_dims("sparse_ids", [8]), "error"),
    "r_input_dtype_wrong": (RANKER, set_dtype("dense_features", mc.TYPE_FP64), "error"),
    "r_input_dims_variable": (RANKER, set_dims("sparse_ids", [-1]), "warning"),
    "r_dims_repeat_the_batch": (RANKER, set_dims("sparse_ids", [-1, 7]), "error"),
    "r_output_without_dims": (RANKER, set_dims("probability", []), "error"),
    "r_output_dims_wrong": (RANKER, set_dims("probability", [2]), "warning"),
    "r_output_dtype_wrong": (RANKER, set_dtype("probability", mc.TYPE_FP64), "warning"),
    "r_output_unknown": (RANKER, config(lambda c: setattr(tensor(c, "probability"), "name", "score")), "error"),
    "r_input_declared_twice": (RANKER, config(duplicate_input), "error"),  # Triton then wants 4 inputs of a 3-input request
    "r_missing_onnx_file": (RANKER, delete("1/model.onnx"), "error"),
    "r_missing_external_data": (RANKER, delete("1/model.onnx.data"), "error"),
    "w_missing_warmup_file": (WARM, delete("warmup/*"), "error"),
    "w_warmup_batch_too_big": (WARM, config(lambda c: setattr(c.model_warmup[0], "batch_size", 512)), "error"),
    "w_warmup_dims_wrong": (WARM, config(lambda c: c.model_warmup[0].inputs["sparse_ids"].dims.__setitem__(0, 6)), "error"),
    "r_backend_typo": (RANKER, config(lambda c: setattr(c, "backend", "pytroch")), "error"),
    "r_platform_typo": (RANKER, config(lambda c: (c.ClearField("backend"), setattr(c, "platform", "onnxruntime_onx"))), "error"),
    "r_no_backend": (RANKER, config(lambda c: c.ClearField("backend")), "error"),  # model.onnx wins over model.py: onnxruntime
    "r_no_config": (RANKER, delete("config.pbtxt"), "error"),  # completed from model.onnx: onnxruntime again
    "p_no_backend": (PREPROCESS, config(lambda c: c.ClearField("backend")), "warning"),  # model.py only: Triton picks python
    "r_config_does_not_parse": (RANKER, write_config('name: "r_config_does_not_parse"\nmax_batch_size: lots\n'), "error"),
    "r_named_otherwise": (RANKER, config(lambda c: setattr(c, "name", "another_name")), "error"),
    "r_preferred_batch_too_big": (RANKER, config(lambda c: c.dynamic_batching.preferred_batch_size.append(512)), "error"),
    "r_cpu_group_with_gpus": (RANKER, config(lambda c: c.instance_group[0].gpus.append(0)), "error"),
    "r_version_policy_partly_missing": (RANKER, version_policy(1, 2), "warning"),
    "r_version_policy_all_missing": (RANKER, version_policy(2), "error"),
    "e_copy": (ENSEMBLE, None, "clean"),
    "e_unknown_model": (ENSEMBLE, config(lambda c: setattr(c.ensemble_scheduling.step[1], "model_name", "dlrm_nothing")), "error"),
    "e_map_to_a_missing_input": (ENSEMBLE, config(rename_step_input), "error"),
    "e_unused_input": (ENSEMBLE, config(add_unused_input), "error"),
    "e_output_dtype_wrong": (ENSEMBLE, set_dtype("probability", mc.TYPE_FP64), "error"),
    "e_with_instance_group": (ENSEMBLE, config(add_instance_group), "error"),
    "e_batch_bigger_than_its_steps": (ENSEMBLE, config(lambda c: setattr(c, "max_batch_size", 512)), "error"),
    "e_missing_step_version": (ENSEMBLE, config(lambda c: setattr(c.ensemble_scheduling.step[0], "model_version", 9)), "error"),
    "t_fake_tensorrt_plan": (ONNX_PLATFORM, tensorrt_plan, "error"),  # the bundled server has no tensorrt backend
}
BASE_VERDICTS = {RANKER: "clean", WARM: "clean", ENSEMBLE: "clean", PREPROCESS: "clean", ONNX_PLATFORM: "error"}  # no onnxruntime here
# Models with a model_warmup are loaded last, one at a time: a failing warmup sometimes crashes Triton 2.51 (SIGSEGV),
# more often while other models load; after a crash the server is started again for the next one.
WARMED = tuple(n for n, (source, _, _) in MUTANTS.items() if source == WARM)


def _make_mutants(base: Path, root: Path) -> Path:
    repo = root / "mutants"
    shutil.copytree(base, repo)
    for name, (source, mutate, _) in MUTANTS.items():
        folder = repo / name
        shutil.copytree(base / source, folder)
        config(lambda c, name=name: setattr(c, "name", name))(folder)
        if mutate is not None:
            mutate(folder)
    return repo


def _proper_request(base: Path, source: str) -> list[grpcclient.InferInput]:
    """One row for the unchanged model ``source``: zeros (in range for every id input) or ``b"1"``."""
    inputs = []
    for t in read_config(base / source / "config.pbtxt").input:
        dtype = mc.DataType.Name(t.data_type).removeprefix("TYPE_")
        shape = [1, *(1 if d == -1 else d for d in t.dims)]
        if dtype == "STRING":
            data = np.full(shape, b"1", dtype=object)
            dtype = "BYTES"
        else:
            data = np.zeros(shape, dtype={"FP32": np.float32, "INT64": np.int64}[dtype])
        inputs.append(grpcclient.InferInput(t.name, shape, dtype).set_data_from_numpy(data))
    return inputs


def _serve(client: grpcclient.InferenceServerClient, name: str, request: list | None) -> tuple[str, str]:
    """``("served" | "refused", why)`` for one model: loaded, and answering ``request`` if there is one."""
    try:
        client.load_model(name)
    except InferenceServerException as exc:
        return "refused", f"load: {exc.message()}"
    if request is None:
        return "served", ""
    try:
        client.infer(name, request, client_timeout=60)
    except InferenceServerException as exc:
        return "refused", f"request: {exc.message()}"
    return "served", ""


@pytest.fixture(scope="module")
def judged(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    root = tmp_path_factory.mktemp("judged")
    repo = _make_mutants(base, root)
    findings = validate_repository(repo, target=ServingTarget.default(strict=True))
    sources = {**{n: n for n in BASE_VERDICTS}, **{n: s for n, (s, _, _) in MUTANTS.items()}}
    http_port, grpc_port, metrics_port = free_ports(3)
    server = TritonServer(
        repo,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        log_path=root / "tritonserver.log",
        extra_args=["--model-control-mode=explicit"],
    )
    with server:
        requests = {n: _proper_request(base, s) for n, s in sources.items()}
        with grpcclient.InferenceServerClient(server.grpc_url) as client:  # gRPC: one client for the threads
            first, rest = [PREPROCESS, RANKER], [n for n in sources if n not in (PREPROCESS, RANKER, WARM, *WARMED)]
            served = {n: _serve(client, n, requests[n]) for n in first}
            with ThreadPoolExecutor(4) as pool:  # Triton loads up to 4 models at once (--model-load-thread-count)
                served.update(zip(rest, pool.map(lambda n: _serve(client, n, requests[n]), rest), strict=True))
            states = server.model_states()
        for name in (WARM, *WARMED):
            with grpcclient.InferenceServerClient(server.grpc_url) as client:
                served[name] = _serve(client, name, requests[name])
            if server.process.poll() is not None:
                served[name] = ("refused", f"the server crashed (exit code {server.process.poll()}): {served[name][1]}")
                server.start()
        yield SimpleNamespace(repo=repo, findings=findings, served=served, states=states)


def _verdict(findings: list[Finding], model: str) -> str:
    mine = [f for f in findings if f.model == model]
    return "error" if any(f.severity == "error" for f in mine) else ("warning" if mine else "clean")


def test_validate_has_an_error_exactly_for_the_models_the_bundled_server_refuses(judged) -> None:
    disagree = []
    for name, (verdict, why) in sorted(judged.served.items()):
        ours = _verdict(judged.findings, name)
        if (ours == "error") != (verdict == "refused"):
            notes = "; ".join(f"[{f.severity}] {f.field}: {f.message}" for f in judged.findings if f.model == name)
            disagree.append(f"{name}: validate {ours} ({notes or 'no findings'}), server {verdict} ({why or 'loaded and answered'})")
    assert not disagree, "\n".join(disagree)


@pytest.mark.parametrize("name", sorted({**BASE_VERDICTS, **{n: e for n, (_, _, e) in MUTANTS.items()}}))
def test_each_mutant_gets_its_expected_verdict(judged, name: str) -> None:
    expected = BASE_VERDICTS.get(name) or MUTANTS[name][2]
    notes = [str(f) for f in judged.findings if f.model == name]
    assert _verdict(judged.findings, name) == expected, notes
    assert (judged.served[name][0] == "refused") == (expected == "error"), judged.served[name]


def test_backends_only_the_stock_container_has_are_warnings_for_the_default_build(base: Path) -> None:
    findings = validate_repository(base)  # the default target: the server `tritonrec serve` starts here, not strictly
    (finding,) = findings
    assert (finding.model, finding.field, finding.severity) == (ONNX_PLATFORM, "platform", "warning")
    assert "the bundled Triton server (nvidia-pytriton 0.7.0) has no onnxruntime backend" in finding.message
    assert "it loads in nvcr.io/nvidia/tritonserver:<yy.mm>-py3" in finding.message
    assert validate_repository(base, target=ServingTarget.stock_container()) == []


def test_a_backend_typo_gets_the_closest_backend_name(judged) -> None:
    (finding,) = [f for f in judged.findings if f.model == "r_backend_typo"]
    assert "no Triton backend is named 'pytroch'" in finding.message and "did you mean 'pytorch'?" in finding.message
    (finding,) = [f for f in judged.findings if f.model == "r_platform_typo"]
    assert "did you mean 'onnxruntime_onnx'?" in finding.message


def test_every_model_the_server_did_not_load_has_triton_s_reason(judged) -> None:
    for state in judged.states:
        if state.state != "READY" and state.name not in (WARM, *WARMED):  # those were not loaded yet
            assert state.reason, state
    reasons = {s.name: s.reason for s in judged.states}
    assert "failed to read text proto" in reasons["r_config_does_not_parse"]
    assert "Expected integer, got: lots" in reasons["r_config_does_not_parse"]
    assert "directory name must equal model name" in reasons["r_named_otherwise"]
