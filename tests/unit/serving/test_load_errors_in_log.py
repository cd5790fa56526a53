# ruff: noqa: E501  (Triton's log lines, verbatim)
"""Reading Triton's reason for a model that did not load from its log (lines as Triton 2.51 writes them)."""

from __future__ import annotations

from toolkit.serving.server import load_errors_in_log

LOG = r"""I1202 12:57:13.239705 17678 cuda_memory_manager.cc:117] "CUDA memory pool disabled"
[libprotobuf ERROR /tmp/tritonbuild/tritonserver/build/_deps/repo-third-party-build/grpc-repo/src/grpc/third_party/protobuf/src/google/protobuf/text_format.cc:337] Error parsing text-format inference.ModelConfig: 3:17: Expected integer, got: eight
E1202 12:57:13.241790 17678 model_repository_manager.cc:1460] "Poll failed for model directory 'badparse': failed to read text proto from /repo/badparse/config.pbtxt"
E1202 12:57:13.242868 17678 model_repository_manager.cc:1460] "Poll failed for model directory 'namemis': unexpected directory name 'namemis' for model 'other', directory name must equal model name"
E1202 13:20:22.026089 31007 model_repository_manager.cc:703] "Invalid argument: ensemble e_big allows maximum batch size 512, but it contains model pre which only allows maximum batch size to be 256"
E1202 13:20:22.009541 31007 model_repository_manager.cc:703] "Invalid argument: in ensemble e_map, ensemble tensor age is mapping to non-existing input not_an_input in model pre"
E1202 13:20:22.033207 31007 model_repository_manager.cc:703] "Invalid argument: ensemble 'e_version' depends on 'pre' whose required version 9 is not loaded."
E1202 13:20:21.986295 31007 model_lifecycle.cc:123] "version 2 is specified for model 'nov', but the version directory is not present"
E1202 13:20:21.986336 31007 model_repository_manager.cc:724] "failed to load model 'nov': at least one version must be available under the version policy of model 'nov'"
E1202 12:51:25.184366 11021 model_lifecycle.cc:642] "failed to load 'nodtype' version 1: Invalid argument: model input 'x' must specify 'data_type' for nodtype"
I1202 12:51:25.184434 11021 model_lifecycle.cc:777] "failed to load 'nodtype'"
I1202 12:51:25.184434 11021 model_lifecycle.cc:839] "successfully loaded 'good'"
"""


def test_each_refused_model_gets_the_reason_triton_logged_for_it() -> None:
    reasons = load_errors_in_log(LOG)

    assert reasons == {
        "badparse": "failed to read text proto from /repo/badparse/config.pbtxt: 3:17: Expected integer, got: eight",
        "namemis": "unexpected directory name 'namemis' for model 'other', directory name must equal model name",
        "e_big": "Invalid argument: ensemble e_big allows maximum batch size 512, but it contains model pre which only allows "
        "maximum batch size to be 256",
        "e_map": "Invalid argument: in ensemble e_map, ensemble tensor age is mapping to non-existing input not_an_input in model pre",
        "e_version": "Invalid argument: ensemble 'e_version' depends on 'pre' whose required version 9 is not loaded.",
        "nov": "at least one version must be available under the version policy of model 'nov'",
        "nodtype": "Invalid argument: model input 'x' must specify 'data_type' for nodtype",
    }


def test_a_parse_error_is_joined_only_to_the_config_read_failure_that_follows_it() -> None:
    log = '[libprotobuf ERROR x.cc:337] Error parsing text-format inference.ModelConfig: 1:1: bad\nI... "loading: a:1"\n'
    log += "E... model_repository_manager.cc:1460] \"Poll failed for model directory 'b': unexpected platform type 'x' for b\"\n"
    assert load_errors_in_log(log) == {"b": "unexpected platform type 'x' for b"}
