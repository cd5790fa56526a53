"""The controller's reconcile step against kmock's Kubernetes API emulator over HTTP (no Triton here:
the pods' metrics endpoints do not answer, and the policy is a scripted one, so that what is under
test is what the controller does with a decision: scale, refuse, pause, retry, record)."""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from toolkit.autoscale.controller import Controller, ControllerConfig
from toolkit.autoscale.kube import PAUSE_ANNOTATION, ApiCallError, KubeClient, RetryPolicy
from toolkit.autoscale.signals import Condition, DeploymentSignals, ScaleDecision

NS = "recs"
SCALE_PATH = f"/apis/apps/v1/namespaces/{NS}/deployments/ranker/scale"
FAST_RETRY = RetryPolicy(attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05, request_timeout_s=1.0)


class Scripted:
    """A policy that asks for whatever the test sets (the real ones are tested in test_policy/test_hpa)."""

    name = "scripted"

    def __init__(self, desired: int) -> None:
        self.desired = desired
        self.seen: list[DeploymentSignals] = []

    def step(self, signals: DeploymentSignals) -> ScaleDecision:
        self.seen.append(signals)
        return ScaleDecision(
            desired_replicas=self.desired,
            reason=f"scripted: {self.desired} replicas",
            conditions=(Condition("ScalingActive", "True", "ValidMetricFound", "scripted"),),
            signals={"arrival_rate_rps": 12.5, "not_a_number": float("nan")},
        )


def _deployment(replicas: int = 1) -> dict:
    labels = {"app": "ranker"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "ranker", "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "triton", "image": "tritonserver"}]}},
        },
        "status": {"replicas": replicas},
    }


def _autoscaler(spec_overrides: dict | None = None, annotations: dict | None = None, name: str = "ranker") -> dict:
    spec = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ranker"}, "minReplicas": 1, "maxReplicas": 5}
    spec["slo"] = {"p99LatencyMs": 50}
    spec.update(spec_overrides or {})
    meta = {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "tritonrec.io/v1alpha1", "kind": "TritonAutoscaler", "metadata": meta, "spec": spec}


@pytest.fixture
def kube(kube_api) -> KubeClient:
    kube = KubeClient.for_url(kube_api.url, FAST_RETRY)
    kube.apps.create_namespaced_deployment(NS, _deployment())
    return kube


def _create(kube: KubeClient, obj: dict) -> None:
    kube.custom.create_namespaced_custom_object("tritonrec.io", "v1alpha1", NS, "tritonautoscalers", obj)


def _status(kube: KubeClient, name: str = "ranker") -> dict:
    return kube.custom.get_namespaced_custom_object("tritonrec.io", "v1alpha1", NS, "tritonautoscalers", name).get("status", {})


def _replicas(kube: KubeClient) -> int:
    return kube.apps.read_namespaced_deployment_scale("ranker", NS).spec.replicas


def _events(kube: KubeClient, name: str = "ranker") -> list[client.CoreV1Event]:
    return [e for e in kube.core.list_namespaced_event(NS).items if e.involved_object.name == name]


def _controller(kube: KubeClient, policy: Scripted, **kw) -> Controller:
    return Controller(kube, ControllerConfig(namespaces=(NS,), scrape_timeout_s=0.3, **kw), policy=lambda spec: policy)


def test_scales_up_patches_the_scale_and_records_status_and_an_event(kube: KubeClient) -> None:
    _create(kube, _autoscaler())
    policy = Scripted(3)
    synced = _controller(kube, policy).sync_due()
    assert synced == [f"{NS}/ranker"]
    assert _replicas(kube) == 3
    status = _status(kube)
    assert status["currentReplicas"] == 1 and status["desiredReplicas"] == 3
    assert status["lastScaleTime"]
    assert status["signals"] == {"arrival_rate_rps": 12.5}  # NaN is not written
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["AbleToScale"]["status"] == "True" and conditions["AbleToScale"]["reason"] == "SucceededRescale"
    assert conditions["ScalingActive"]["reason"] == "ValidMetricFound"
    (event,) = [e for e in _events(kube) if e.reason == "SuccessfulRescale"]
    assert event.message == "New size: 3; reason: scripted: 3 replicas"
    assert event.involved_object.kind == "TritonAutoscaler"
    assert policy.seen[0].current_replicas == 1


def test_no_change_means_no_patch_and_no_event(kube: KubeClient, kube_api) -> None:
    _create(kube, _autoscaler())
    _controller(kube, Scripted(1)).sync_due()
    assert kube_api.requests("patch", SCALE_PATH) == 0
    assert not [e for e in _events(kube) if e.reason == "SuccessfulRescale"]
    assert _status(kube)["desiredReplicas"] == 1


def test_a_409_on_the_scale_patch_is_retried_and_the_scale_happens(kube: KubeClient, kube_api) -> None:
    _create(kube, _autoscaler())
    conflict = kube_api.fail("patch", SCALE_PATH, 409, times=2)
    _controller(kube, Scripted(4)).sync_due()
    assert kube_api.count(conflict) == 2
    assert kube_api.requests("patch", SCALE_PATH) == 3  # two conflicts, then the one that went through
    assert _replicas(kube) == 4
    assert _status(kube)["desiredReplicas"] == 4


def test_500s_are_retried_a_bounded_number_of_times_then_reported_not_raised(kube: KubeClient, kube_api) -> None:
    _create(kube, _autoscaler())
    kube_api.fail("patch", SCALE_PATH, 500, times=100)
    started = time.monotonic()
    _controller(kube, Scripted(4)).sync_due()
    assert kube_api.requests("patch", SCALE_PATH) == FAST_RETRY.attempts  # bounded: no more than the policy's attempts
    assert time.monotonic() - started < 5.0
    conditions = {c["type"]: c for c in _status(kube)["conditions"]}
    assert conditions["AbleToScale"]["status"] == "False"
    assert conditions["AbleToScale"]["reason"] == "FailedUpdateScale"
    assert "HTTP 500" in conditions["AbleToScale"]["message"]
    (event,) = [e for e in _events(kube) if e.reason == "FailedRescale"]
    assert event.type == "Warning" and "New size: 4" in event.message


def test_a_timeout_is_retried(kube_api) -> None:
    kube = KubeClient.for_url(kube_api.url, RetryPolicy(attempts=3, initial_backoff_s=0.01, max_backoff_s=0.02, request_timeout_s=0.3))
    kube.apps.create_namespaced_deployment(NS, _deployment())
    kube_api.delay("get", SCALE_PATH, seconds=1.0, times=1)
    assert kube.read_target(NS, "ranker").replicas == 1
    assert kube_api.requests("get", SCALE_PATH) == 2


def test_a_404_is_not_retried(kube: KubeClient, kube_api) -> None:
    with pytest.raises(ApiCallError, match="404") as info:
        kube.read_target(NS, "missing")
    assert info.value.status == 404
    assert kube_api.requests("get", f"/apis/apps/v1/namespaces/{NS}/deployments/missing/scale") == 1


def test_the_pod_selector_comes_from_the_scale_subresource(kube: KubeClient, kube_api) -> None:
    # kmock serves the whole Deployment at /scale: a status.selector there is what an API server's
    # scale subresource reports, and then the Deployment itself is never read (RBAC: scale only)
    kube.apps.patch_namespaced_deployment_status("ranker", NS, {"status": {"selector": "app=ranker,tier=gpu"}})
    target = kube.read_target(NS, "ranker")
    assert target.selector == "app=ranker,tier=gpu"
    assert target.match_labels == {"app": "ranker", "tier": "gpu"}
    assert kube_api.requests("get", f"/apis/apps/v1/namespaces/{NS}/deployments/ranker") == 0


@pytest.mark.parametrize(
    ("selector", "labels"),
    [("app=a", {"app": "a"}), ("app==a, tier=b", {"app": "a", "tier": "b"}), ("app!=a", None), ("tier in (a,b)", None), ("gpu", None)],
)
def test_only_equality_selectors_are_applied_client_side(selector: str, labels: dict | None) -> None:
    from toolkit.autoscale.kube import TargetInfo

    assert TargetInfo("t", 1, selector).match_labels == labels


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"minReplicas": 6, "maxReplicas": 3}, "spec.minReplicas"),
        ({"slo": {"p99LatencyMs": -5}}, "spec.slo.p99LatencyMs"),
        ({"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "CronJob", "name": "ranker"}}, "spec.scaleTargetRef.kind"),
        ({"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "no-such-deployment"}}, "spec.scaleTargetRef.name"),
    ],
)
def test_bad_resource_is_refused_naming_the_field_in_status_and_event_and_nothing_is_scaled(
    kube: KubeClient, kube_api, overrides: dict, field: str
) -> None:
    _create(kube, _autoscaler(overrides))
    policy = Scripted(4)
    controller = _controller(kube, policy)
    controller.sync_due()
    assert kube_api.requests("patch", SCALE_PATH) == 0
    assert _replicas(kube) == 1
    assert not policy.seen
    (condition,) = _status(kube)["conditions"]
    assert condition["type"] == "ScalingActive" and condition["status"] == "False"
    assert field in condition["message"]
    (event,) = [e for e in _events(kube) if e.type == "Warning"]
    assert field in event.message
    # refused again at the next sync, without a second Event for the same message
    controller._states.clear()
    controller._next_sync.clear()
    controller.sync_due()
    assert len([e for e in _events(kube) if e.type == "Warning"]) == 1


def test_pause_annotation_records_the_decision_and_changes_nothing(kube: KubeClient, kube_api) -> None:
    _create(kube, _autoscaler(annotations={PAUSE_ANNOTATION: "true"}))
    _controller(kube, Scripted(4)).sync_due()
    assert kube_api.requests("patch", SCALE_PATH) == 0
    assert _replicas(kube) == 1
    status = _status(kube)
    assert status["desiredReplicas"] == 4
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["AbleToScale"]["reason"] == "ScalingPaused"
    assert PAUSE_ANNOTATION in conditions["AbleToScale"]["message"]


def test_shadow_mode_records_ours_next_to_the_hpa_queue_time_rule_and_changes_nothing(kube: KubeClient, kube_api) -> None:
    _create(kube, _autoscaler({"shadow": True}))
    _controller(kube, Scripted(4)).sync_due()  # the shadow comparison is the real HpaQueueTime
    assert kube_api.requests("patch", SCALE_PATH) == 0
    status = _status(kube)
    assert status["shadowRecommendations"]["scripted"] == 4
    # no pod answers: the HPA has no metrics and keeps the current count
    assert status["shadowRecommendations"]["hpa_queue_time"] == 1
    assert {c["type"]: c for c in status["conditions"]}["AbleToScale"]["reason"] == "ShadowMode"


def test_sync_period_of_the_resource_is_honoured(kube: KubeClient) -> None:
    _create(kube, _autoscaler({"syncPeriodSeconds": 30}))
    controller = _controller(kube, Scripted(1))
    assert controller.sync_due() == [f"{NS}/ranker"]
    assert controller.sync_due() == []  # not due for 30 s


def test_lost_leadership_stops_writes(kube: KubeClient, kube_api) -> None:
    import threading

    _create(kube, _autoscaler())
    lost = threading.Event()
    lost.set()
    _controller(kube, Scripted(4)).sync_due(lost)
    assert kube_api.requests("patch", SCALE_PATH) == 0
    assert _status(kube) == {}


def test_missing_kubeconfig_is_named(tmp_path) -> None:
    from toolkit.errors import AutoscaleError

    missing = tmp_path / "no-such-kubeconfig"
    with pytest.raises(AutoscaleError, match="no-such-kubeconfig"):
        KubeClient.from_config(kubeconfig=missing)


def test_run_command_refuses_kubeconfig_with_in_cluster(tmp_path) -> None:
    from typer.testing import CliRunner

    from toolkit.cli.app import app

    result = CliRunner().invoke(app, ["autoscale", "run", "-n", NS, "--kubeconfig", str(tmp_path / "k"), "--in-cluster"])
    assert result.exit_code == 2
    assert "not both" in result.output


def test_written_status_is_what_the_crd_schema_describes_and_keeps_transition_times(kube: KubeClient) -> None:
    from toolkit.autoscale.spec import AutoscalerStatus

    _create(kube, _autoscaler({"shadow": True}))
    controller = _controller(kube, Scripted(1))
    controller.sync_due()
    first = _status(kube)
    AutoscalerStatus.model_validate(first)  # camelCase fields of the CRD's status schema, nothing else
    controller._next_sync[f"{NS}/ranker"] = 0.0
    time.sleep(0.01)
    controller.sync_due()
    second = _status(kube)
    times = {c["type"]: c["lastTransitionTime"] for c in first["conditions"]}
    assert {c["type"]: c["lastTransitionTime"] for c in second["conditions"]} == times  # no status changed


def _pod(kube: KubeClient, name: str, ip: str, *, ready: bool = True, annotations: dict | None = None) -> None:
    meta = {"name": name, "namespace": NS, "labels": {"app": "ranker"}, "uid": f"uid-{name}", "annotations": annotations or {}}
    status = {"podIP": ip, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    kube.core.create_namespaced_pod(NS, {"metadata": meta, "spec": {"containers": [{"name": "c", "image": "x"}]}, "status": status})


def _annotations(kube: KubeClient, name: str) -> dict:
    return kube.core.read_namespaced_pod(name, NS).metadata.annotations or {}


DRAINING = {"tritonrec.io/draining": "true", "controller.kubernetes.io/pod-deletion-cost": "-2147483648"}


def test_scale_down_drains_the_pod_first_and_shrinks_after_the_bounded_wait(kube: KubeClient, kube_api) -> None:
    # no Triton here: the pods' pending counts are unknown, so the drain ends at its timeout
    kube.apps.patch_namespaced_deployment_scale("ranker", NS, {"spec": {"replicas": 2}})
    _pod(kube, "ranker-a", "127.0.0.9")
    _pod(kube, "ranker-b", "127.0.0.10")
    _create(kube, _autoscaler({"syncPeriodSeconds": 0.05}))
    controller = _controller(kube, Scripted(1), drain_grace_s=0.0, drain_timeout_s=0.6)
    controller.sync_due()
    assert _replicas(kube) == 2  # not yet: draining first
    drained = [n for n in ("ranker-a", "ranker-b") if _annotations(kube, n).get("tritonrec.io/draining") == "true"]
    assert len(drained) == 1
    assert _annotations(kube, drained[0])["controller.kubernetes.io/pod-deletion-cost"] == "-2147483648"
    assert {c["type"]: c for c in _status(kube)["conditions"]}["AbleToScale"]["reason"] == "Draining"
    deadline = time.monotonic() + 5
    while _replicas(kube) != 1 and time.monotonic() < deadline:
        time.sleep(0.1)
        controller.sync_due()
    assert _replicas(kube) == 1
    events = {e.reason: e.message for e in _events(kube)}
    assert drained[0] in events["Draining"]
    assert "timed out" in events["SuccessfulRescale"] and drained[0] in events["SuccessfulRescale"]


def test_a_drain_left_by_another_leader_is_put_back_when_no_scale_down_is_wanted(kube: KubeClient) -> None:
    kube.apps.patch_namespaced_deployment_scale("ranker", NS, {"spec": {"replicas": 2}})
    _pod(kube, "ranker-a", "127.0.0.9", annotations=DRAINING)
    _pod(kube, "ranker-b", "127.0.0.10")
    _create(kube, _autoscaler())
    _controller(kube, Scripted(2)).sync_due()
    assert "tritonrec.io/draining" not in _annotations(kube, "ranker-a")
    assert "controller.kubernetes.io/pod-deletion-cost" not in _annotations(kube, "ranker-a")
    assert _replicas(kube) == 2


def test_a_drain_left_by_another_leader_is_adopted_when_a_scale_down_is_still_wanted(kube: KubeClient) -> None:
    kube.apps.patch_namespaced_deployment_scale("ranker", NS, {"spec": {"replicas": 2}})
    _pod(kube, "ranker-a", "127.0.0.9", annotations=DRAINING)
    _pod(kube, "ranker-b", "127.0.0.10")
    _create(kube, _autoscaler())
    controller = _controller(kube, Scripted(1), drain_grace_s=0.0, drain_timeout_s=0.3)
    controller.sync_due()
    assert controller._states[f"{NS}/ranker"].drain.pods == ("ranker-a",)  # the same pod, not a second one
    assert "tritonrec.io/draining" not in _annotations(kube, "ranker-b")
    time.sleep(0.35)
    controller._next_sync[f"{NS}/ranker"] = 0.0
    controller.sync_due()
    assert _replicas(kube) == 1


def test_a_drain_pauses_while_the_policy_keeps_the_count_and_is_cancelled_when_it_wants_more(kube: KubeClient) -> None:
    kube.apps.patch_namespaced_deployment_scale("ranker", NS, {"spec": {"replicas": 2}})
    _pod(kube, "ranker-a", "127.0.0.9")
    _pod(kube, "ranker-b", "127.0.0.10")
    _create(kube, _autoscaler())
    policy = Scripted(1)
    controller = _controller(kube, policy, drain_grace_s=0.0, drain_timeout_s=30.0)
    state_key = f"{NS}/ranker"

    def sync() -> None:
        controller._next_sync[state_key] = 0.0
        controller.sync_due()

    controller.sync_due()
    (drained,) = controller._states[state_key].drain.pods
    policy.desired = 2  # keep the count (e.g. arrivals that seem to rise): paused, not undone
    sync()
    assert controller._states[state_key].drain is not None
    assert _annotations(kube, drained).get("tritonrec.io/draining") == "true"
    assert "paused" in {c["type"]: c for c in _status(kube)["conditions"]}["AbleToScale"]["message"]
    assert _replicas(kube) == 2
    policy.desired = 3  # wants more: cancelled, the pod back in the routers, then scaled up
    sync()
    assert controller._states[state_key].drain is None
    assert "tritonrec.io/draining" not in _annotations(kube, drained)
    assert _replicas(kube) == 3
    assert "DrainCancelled" in {e.reason for e in _events(kube)}


def test_resources_are_listed_once_per_sync_period_and_read_afresh_between_lists(kube: KubeClient, kube_api) -> None:
    list_path = f"/apis/tritonrec.io/v1alpha1/namespaces/{NS}/tritonautoscalers"
    _create(kube, _autoscaler({"syncPeriodSeconds": 0.05}))
    controller = _controller(kube, Scripted(1), sync_period_s=0.6)
    assert controller.sync_due() == [f"{NS}/ranker"]
    _create(kube, _autoscaler(name="second"))
    time.sleep(0.1)
    assert controller.sync_due() == [f"{NS}/ranker"]  # read with a GET; "second" is not known before the next list
    assert kube_api.requests("get", list_path) == 1
    assert kube_api.requests("get", f"{list_path}/ranker") == 1
    time.sleep(0.6)
    assert sorted(controller.sync_due()) == [f"{NS}/ranker", f"{NS}/second"]
    assert kube_api.requests("get", list_path) == 2
    kube.custom.delete_namespaced_custom_object("tritonrec.io", "v1alpha1", NS, "tritonautoscalers", "ranker")
    time.sleep(0.1)
    controller.sync_due()  # the GET finds it gone
    assert f"{NS}/ranker" not in controller._states


def test_a_refused_resource_is_retried_at_its_sync_period_not_every_tick(kube: KubeClient, kube_api) -> None:
    _create(kube, _autoscaler({"minReplicas": 6, "maxReplicas": 3, "syncPeriodSeconds": 30}))
    controller = _controller(kube, Scripted(1))
    status_path = f"/apis/tritonrec.io/v1alpha1/namespaces/{NS}/tritonautoscalers/ranker/status"
    controller.sync_due()
    controller.sync_due()
    assert kube_api.requests("patch", status_path) == 1


def test_a_target_scaled_to_zero_by_hand_is_left_alone_as_the_hpa_does(kube: KubeClient, kube_api) -> None:
    kube.apps.patch_namespaced_deployment_scale("ranker", NS, {"spec": {"replicas": 0}})
    _create(kube, _autoscaler())
    policy = Scripted(3)
    _controller(kube, policy).sync_due()
    assert _replicas(kube) == 0
    assert not policy.seen
    (condition,) = _status(kube)["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == ("ScalingActive", "False", "ScalingDisabled")


def test_a_statefulset_target_is_scaled_through_its_scale_subresource(kube: KubeClient) -> None:
    sts = _deployment(replicas=1)
    sts["kind"] = "StatefulSet"
    sts["metadata"]["name"] = "ranker-sts"
    sts["spec"]["serviceName"] = "ranker"
    kube.apps.create_namespaced_stateful_set(NS, sts)
    _create(kube, _autoscaler({"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "ranker-sts"}}))
    _controller(kube, Scripted(2)).sync_due()
    assert kube.apps.read_namespaced_stateful_set_scale("ranker-sts", NS).spec.replicas == 2
    assert _replicas(kube) == 1  # the Deployment of the same pods' labels is untouched


def test_a_spec_the_policy_cannot_start_from_is_refused_naming_the_field(kube: KubeClient, tmp_path) -> None:
    missing = tmp_path / "no-such-report.json"
    _create(kube, _autoscaler({"capacity": {"fromPerfReport": str(missing)}}))
    controller = Controller(kube, ControllerConfig(namespaces=(NS,)))  # the real policy: it reads the report
    controller.sync_due()
    (condition,) = _status(kube)["conditions"]
    assert condition["reason"] == "InvalidSpec" and "no-such-report.json" in condition["message"]
    assert _replicas(kube) == 1


def test_an_unknown_target_is_retried_at_the_sync_period(kube: KubeClient, kube_api) -> None:
    _create(
        kube, _autoscaler({"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "later"}, "syncPeriodSeconds": 30})
    )
    controller = _controller(kube, Scripted(1))
    controller.sync_due()
    controller.sync_due()
    assert kube_api.requests("get", f"/apis/apps/v1/namespaces/{NS}/deployments/later/scale") == 1


def test_a_statefulset_scale_down_drains_its_highest_ordinal(kube: KubeClient) -> None:
    sts = _deployment(replicas=2)
    sts["kind"] = "StatefulSet"
    sts["metadata"]["name"] = "ranker-sts"
    sts["spec"]["serviceName"] = "ranker"
    kube.apps.create_namespaced_stateful_set(NS, sts)
    _pod(kube, "ranker-sts-1", "127.0.0.9")
    _pod(kube, "ranker-sts-0", "127.0.0.10")  # a StatefulSet always removes its highest ordinal, not the least busy pod
    _create(kube, _autoscaler({"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "ranker-sts"}}))
    controller = _controller(kube, Scripted(1), drain_grace_s=0.0, drain_timeout_s=30.0)
    controller.sync_due()
    assert controller._states[f"{NS}/ranker"].drain.pods == ("ranker-sts-1",)
    assert _annotations(kube, "ranker-sts-1").get("tritonrec.io/draining") == "true"


def test_all_namespaces_lists_the_cluster_once_and_syncs_each_resource_in_its_own_namespace(kube: KubeClient, kube_api) -> None:
    other = "recs-b"
    deployment = _deployment()
    deployment["metadata"]["namespace"] = other
    kube.apps.create_namespaced_deployment(other, deployment)
    _create(kube, _autoscaler({"syncPeriodSeconds": 0.05}))
    elsewhere = _autoscaler({"syncPeriodSeconds": 0.05})
    elsewhere["metadata"]["namespace"] = other
    kube.custom.create_namespaced_custom_object("tritonrec.io", "v1alpha1", other, "tritonautoscalers", elsewhere)
    controller = Controller(
        kube, ControllerConfig(all_namespaces=True, sync_period_s=30.0, scrape_timeout_s=0.3), policy=lambda spec: Scripted(2)
    )
    assert sorted(controller.sync_due()) == sorted([f"{NS}/ranker", f"{other}/ranker"])
    assert kube_api.requests("get", "/apis/tritonrec.io/v1alpha1/tritonautoscalers") == 1  # one cluster-wide LIST
    assert kube_api.requests("get", f"/apis/tritonrec.io/v1alpha1/namespaces/{NS}/tritonautoscalers") == 0
    assert _replicas(kube) == 2
    assert kube.apps.read_namespaced_deployment_scale("ranker", other).spec.replicas == 2
    time.sleep(0.1)
    assert sorted(controller.sync_due()) == sorted([f"{NS}/ranker", f"{other}/ranker"])  # between lists: a GET in each one's namespace
    assert kube_api.requests("get", f"/apis/tritonrec.io/v1alpha1/namespaces/{other}/tritonautoscalers/ranker") == 1
    assert kube_api.requests("get", "/apis/tritonrec.io/v1alpha1/tritonautoscalers") == 1


def test_all_namespaces_with_named_namespaces_is_refused_naming_both_options() -> None:
    from typer.testing import CliRunner

    from toolkit.cli.app import app
    from toolkit.errors import AutoscaleError

    with pytest.raises(AutoscaleError, match="not both") as refused:
        ControllerConfig(namespaces=(NS,), all_namespaces=True)
    assert "--all-namespaces" in refused.value.hint and "--namespace" in refused.value.hint
    with pytest.raises(AutoscaleError, match="at least one namespace"):
        ControllerConfig()
    result = CliRunner().invoke(app, ["autoscale", "run", "-n", NS, "--all-namespaces"])
    assert result.exit_code == 2
    assert "--namespace" in result.output and "--all-namespaces" in result.output and "not both" in result.output
    result = CliRunner().invoke(app, ["autoscale", "run"])
    assert result.exit_code == 2 and "--all-namespaces" in result.output


def test_all_namespaces_outside_a_pod_needs_a_lease_namespace(monkeypatch, tmp_path) -> None:
    from typer.testing import CliRunner

    from toolkit.autoscale import kube as kube_module
    from toolkit.cli.app import app

    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    monkeypatch.setattr(kube_module, "SERVICE_ACCOUNT_NAMESPACE_FILE", tmp_path / "no-namespace-file")
    result = CliRunner().invoke(app, ["autoscale", "run", "--all-namespaces", "--kubeconfig", str(tmp_path / "k")])
    assert result.exit_code == 2 and "--lease-namespace" in result.output
    monkeypatch.setenv("POD_NAMESPACE", "tritonrec")
    assert kube_module.pod_namespace() == "tritonrec"
    monkeypatch.delenv("POD_NAMESPACE")
    (tmp_path / "namespace").write_text("serving\n")
    assert kube_module.pod_namespace(tmp_path / "namespace") == "serving"
