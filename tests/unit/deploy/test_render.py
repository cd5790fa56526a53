"""`tritonrec k8s render` and what it is made of: repository URLs, --set, values files, the output
folder written into place, and the command as a user runs it (a real subprocess)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from toolkit.deploy.render import load_values, merge_values, parse_set, render_to_dir, repository_values
from toolkit.errors import DeployError


def tritonrec(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toolkit", *map(str, args)], capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("url", ["s3://bucket/path", "gs://bucket/path", "as://account/container/path", "s3://https://minio:9000/bucket/p"])
def test_object_store_urls_are_read_by_triton_itself(url):
    assert repository_values(url) == {"repository": {"source": "objectStore", "objectStore": {"url": url}}}


def test_pvc_urls_name_the_claim_and_sub_path():
    assert repository_values("pvc://models/movielens/v3") == {
        "repository": {"source": "pvc", "pvc": {"claimName": "models", "subPath": "movielens/v3"}}
    }
    assert repository_values("pvc://models")["repository"]["pvc"] == {"claimName": "models", "subPath": ""}


@pytest.mark.parametrize("url", ["ftp://host/models", "/local/models", "s3://", "pvc://Not_A_Name"])
def test_other_repository_urls_are_refused_naming_them(url):
    with pytest.raises(DeployError, match="is not a model repository URL") as info:
        repository_values(url)
    assert repr(url) in str(info.value)


def test_set_builds_nested_values_read_as_yaml():
    assert parse_set(["triton.replicas=3", "gpu=true", "triton.loadModels=[a, b]", "repository.pvc.subPath=v3", "x="]) == {
        "triton": {"replicas": 3, "loadModels": ["a", "b"]},
        "gpu": True,
        "repository": {"pvc": {"subPath": "v3"}},
        "x": "",
    }


@pytest.mark.parametrize("item", ["triton.replicas", "=3", "triton..replicas=3"])
def test_set_refuses_what_is_not_key_equals_value(item):
    with pytest.raises(DeployError, match="is not KEY=VALUE"):
        parse_set([item])


def test_set_refuses_a_key_used_both_as_value_and_map():
    with pytest.raises(DeployError, match="gpu is set to a value and used as a map"):
        parse_set(["gpu=true", "gpu.count=2"])


def test_values_merge_maps_and_replace_lists_as_helm_does():
    chart = {"triton": {"replicas": 2, "loadModels": ["a"], "ports": {"http": 8000}}}
    merged = merge_values(chart, {"triton": {"loadModels": ["b"], "ports": {"grpc": 9001}}})
    assert merged == {"triton": {"replicas": 2, "loadModels": ["b"], "ports": {"http": 8000, "grpc": 9001}}}


def test_a_bad_values_file_is_named(tmp_path):
    with pytest.raises(DeployError, match="does not exist"):
        load_values(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(DeployError, match="list.yaml holds a list, expected a mapping"):
        load_values(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("triton: [unclosed\n")
    with pytest.raises(DeployError, match="broken.yaml is not valid YAML"):
        load_values(tmp_path / "broken.yaml")
    (tmp_path / "empty.yaml").write_text("")
    assert load_values(tmp_path / "empty.yaml") == {}


def test_render_to_dir_writes_one_file_per_object_and_a_kustomization(tmp_path):
    out = tmp_path / "out"
    rendering = render_to_dir(out, repository_values("gs://bucket/models"), namespace="serving")
    kustomization = yaml.safe_load((out / "kustomization.yaml").read_text())
    assert kustomization["resources"][0] == "customresourcedefinition-tritonautoscalers.tritonrec.io.yaml"
    assert sorted(kustomization["resources"]) == sorted(p.name for p in out.iterdir() if p.name != "kustomization.yaml")
    assert len(kustomization["resources"]) == len(rendering.all_objects())
    deployment = yaml.safe_load((out / "deployment-tritonrec-triton.yaml").read_text())
    assert "--model-repository=gs://bucket/models" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert deployment["metadata"]["namespace"] == "serving"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_render_to_dir_keeps_what_was_there_when_the_values_are_rejected(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.yaml").write_text("kept\n")
    with pytest.raises(DeployError, match="exists and is not empty"):
        render_to_dir(out, {})
    with pytest.raises(DeployError, match="/gpuCount"):
        render_to_dir(out, {"gpuCount": 3}, force=True)
    assert [p.name for p in out.iterdir()] == ["mine.yaml"]
    render_to_dir(out, {}, force=True)
    assert not (out / "mine.yaml").exists() and (out / "kustomization.yaml").is_file()


def test_the_command_renders_an_object_store_repository_with_a_values_file(tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text("triton:\n  replicas: 3\nautoscaler:\n  example:\n    maxReplicas: 12\n")
    done = tritonrec("k8s", "render", "--repository", "s3://bucket/path", "--values", values, "--out", tmp_path / "out", "--gpu")
    assert done.returncode == 0, done.stdout + done.stderr
    written = [p for p in (tmp_path / "out").iterdir() if p.name != "kustomization.yaml"]
    assert f"wrote {len(written)} objects" in done.stdout
    deployment = yaml.safe_load((tmp_path / "out" / "deployment-tritonrec-triton.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert deployment["spec"]["replicas"] == 3
    assert "--model-repository=s3://bucket/path" in container["args"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    example = yaml.safe_load((tmp_path / "out" / "tritonautoscaler-tritonrec-triton.yaml").read_text())
    assert example["spec"]["maxReplicas"] == 12


def test_the_command_names_a_rejected_value_in_one_line(tmp_path):
    done = tritonrec("k8s", "render", "--set", "triton.ports.http=eighty", "--out", tmp_path / "out")
    out = done.stdout + done.stderr
    assert done.returncode == 1 and "Traceback" not in out, out
    assert "at '/triton/ports/http': got string, want integer" in out
    assert not (tmp_path / "out").exists()
