"""toolkit.deploy.helm's Helm process: started once, reused, stopped by its PID; and what a user
without helm-sdkpy is told."""

from __future__ import annotations

import importlib.util
import os

import pytest

from toolkit.deploy import helm
from toolkit.errors import DeployError, MissingDependencyError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_helm_process_serves_several_batches_and_stops_by_its_pid():
    process = helm._HelmProcess()
    try:
        (first,) = process.run([{"action": "lint", "chart": str(helm.CHART_DIR)}])
        pid = process._process.pid
        (second,) = process.run([{"action": "lint", "chart": str(helm.CHART_DIR)}])
        assert first["ok"] and second["ok"] and process._process.pid == pid
    finally:
        process.stop()
    assert process._process is None
    assert not _alive(pid)


def test_a_helm_process_gone_between_batches_is_replaced():
    process = helm._HelmProcess()
    try:
        process.run([{"action": "lint", "chart": str(helm.CHART_DIR)}])
        old = process._process
        old.kill()
        old.wait(timeout=10)
        (again,) = process.run([{"action": "lint", "chart": str(helm.CHART_DIR)}])
        assert again["ok"] and process._process.pid != old.pid
    finally:
        process.stop()


def test_a_helm_process_dying_during_a_batch_is_an_error_with_its_stderr():
    process = helm._HelmProcess()
    try:
        with pytest.raises(DeployError, match=r"(?s)Helm's process exited with status 1: .*KeyError: 'namespace'"):
            process.run([{"action": "install"}])  # no namespace: the child fails outside Helm
        assert process._process is None
    finally:
        process.stop()


def test_without_helm_sdkpy_the_error_says_how_to_install_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "helm_sdkpy" else real(name, *a))
    with pytest.raises(MissingDependencyError, match="needs helm-sdkpy") as info:
        helm._HelmProcess().run([])
    assert info.value.hint.startswith("pip install --ignore-requires-python helm-sdkpy==0.1.32")


def test_a_folder_without_chart_yaml_is_refused(tmp_path):
    with pytest.raises(DeployError, match="is not a Helm chart"):
        helm.render({}, chart=tmp_path)


def test_a_kubernetes_older_than_the_charts_kube_version_is_refused():
    with pytest.raises(DeployError, match=r"chart requires kubeVersion: >=1.27.0-0 which is incompatible with Kubernetes v1.26.3"):
        helm.render({}, kube_version="v1.26.3")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kube_version": "latest"}, "kube version 'latest' is not a Kubernetes version"),
        ({"api_versions": ["monitoring.coreos.com/v2"]}, "API version 'monitoring.coreos.com/v2' is not one a render can assume"),
    ],
)
def test_render_options_are_checked_before_helm_runs(kwargs, message):
    with pytest.raises(DeployError, match=message):
        helm.render({}, **kwargs)
